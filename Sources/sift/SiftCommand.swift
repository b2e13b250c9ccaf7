import ArgumentParser
import Foundation
import SiftBase

struct SiftCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sift",
        abstract: "Sift: a Qwen3-Reranker inference service.",
        version: SiftVersion.current,
        subcommands: [ServeCommand.self, RerankCommand.self, LoadCommand.self, DownloadCommand.self, ScoreCommand.self, TokenizeCommand.self, ConvertCommand.self, InspectCommand.self, BenchCommand.self])
}

/// A failure the user can fix: printed as one line, exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

extension ParsableCommand {
    /// Runs `body`, turning any error into one line on stderr and exit status 1.
    func reportingErrors(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as ExitCode {
            throw error
        } catch {
            FileHandle.standardError.write(Data("sift: error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
