import ArgumentParser
import Foundation
import SiftHub

struct DownloadCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "download",
        abstract: "Fetch a model from the Hugging Face hub into the Hugging Face cache (resumable); prints its folder.",
        discussion: "Honours HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE, as huggingface_hub does.")

    @Argument(help: "Model name, e.g. Qwen/Qwen3-Reranker-0.6B.") var model: String
    @Option(help: "Branch, tag or commit.") var revision: String = "main"

    func run() async throws {
        try await reportingErrors {
            guard HubModelResolver.isRepoName(model) else { throw CLIError("\(model) is not a hub name (organisation/model)") }
            var resolver = HubModelResolver(progress: { FileHandle.standardError.write(Data(($0 + "\n").utf8)) })
            resolver.revision = revision
            print(try await resolver.resolve(model).path)
        }
    }
}
