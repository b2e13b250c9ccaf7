import ArgumentParser
import Foundation
import Qwen3

@main
enum Entry {
    static func main() async {
        // OpenBLAS picks its kernels when it loads; re-exec with a fast core type before anything runs.
        BLAS.ensureFastCore()
        if let unknown = UnknownOptions.first(in: Array(CommandLine.arguments.dropFirst())) {
            let hint = unknown.suggestion.map { " Did you mean '\($0)'?" } ?? ""
            FileHandle.standardError.write(Data("Error: Unknown option '\(unknown.option)'.\(hint) See '\(unknown.command) --help'.\n".utf8))
            exit(ExitCode.validationFailure.rawValue)
        }
        await SiftCommand.main()
    }
}
