import Foundation
import Qwen3
import SiftHub

/// What a command's `--model` names, checked before any work so that the error names the real
/// cause (a missing path, a hub name where a folder is needed, a `.sift` file where a folder is
/// needed) instead of whichever file the loader happened to look for first.
enum ModelArgument {
    enum Kind {
        case folder        // a Hugging Face folder
        case folderOrSift  // or a .sift file
    }

    static func check(_ path: String, is kind: Kind, for command: String) throws {
        let wanted = kind == .folder ? "a model folder" : "a model folder or a .sift file"
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            if HubModelResolver.isRepoName(path) {
                throw CLIError("\(path): no such folder; `sift \(command)` takes \(wanted), not a Hugging Face name. Run `sift download \(path)` and pass the folder it prints (`sift serve` also takes the name itself)")
            }
            throw CLIError("\(path): no such file or folder; `sift \(command) --model` takes \(wanted)")
        }
        if isDirectory.boolValue { return }
        if SiftFile.looksLikeSift(path) {
            guard kind == .folderOrSift else {
                throw CLIError("\(path) is a .sift file; `sift \(command)` needs the Hugging Face folder it was made from")
            }
            return
        }
        throw CLIError("\(path) is a file but not a .sift file; `sift \(command) --model` takes \(wanted)")
    }

    /// The tokenizer of a model folder or of a .sift file (checked with `check` first).
    static func tokenizer(_ path: String) throws -> Tokenizer {
        guard SiftFile.looksLikeSift(path) else { return try Tokenizer.load(directory: URL(fileURLWithPath: path)) }
        let contents = try SiftFile.open(path, verifyChecksum: false)
        return try Tokenizer.load(tokenizerJSONData: contents.tokenizerJSON, file: path + " (tokenizer.json)")
    }
}
