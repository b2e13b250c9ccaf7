import ArgumentParser
import Foundation
import Qwen3
import SiftEngine

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Quantize a Hugging Face Qwen3-Reranker folder into one int8 .sift file that loads in seconds.")

    @Option(help: "Hugging Face Qwen3-Reranker folder (bf16, f16 or f32 safetensors).") var model: String
    @Option(help: "Output file (.sift).") var out: String
    @Option(help: "Worker threads.") var threads: Int = WorkerPool.defaultThreadCount

    func run() throws {
        try reportingErrors {
            try ModelArgument.check(model, is: .folder, for: "convert")
            try OutputFile.check(out, flag: "--out")
            let dir = URL(fileURLWithPath: model)
            let tokenizerURL = dir.appendingPathComponent("tokenizer.json")
            guard let tokenizerJSON = FileManager.default.contents(atPath: tokenizerURL.path) else {
                throw CLIError("\(tokenizerURL.path): missing; convert needs the folder's tokenizer.json")
            }
            let bar = ProgressReporter()
            let start = now()
            let reranker = try RerankerModel.load(directory: dir, precision: .int8, threads: threads) { done, total in
                bar.update("quantizing layers", done, total, unit: "layers")
            }
            bar.finish()
            let outURL = URL(fileURLWithPath: out)
            AtomicFile.removeOnSignals()
            // Written beside --out and renamed over it when whole (see `AtomicFile`).
            try SiftFile.write(model: reranker.model, tokenizerJSON: tokenizerJSON, yesID: reranker.yesID,
                               noID: reranker.noID, to: outURL) { done, total in
                bar.update("writing \(outURL.lastPathComponent)", done >> 20, total >> 20, unit: "MiB")
            }
            bar.finish()
            let size = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
            print(String(format: "wrote %@ (%.2f GB) in %.1f s", out, Double(size) / 1e9, now() - start))
        }
    }
}

/// A progress bar on a terminal; plain lines (every 10%) otherwise.
final class ProgressReporter {
    private let isTTY = isatty(STDERR_FILENO) != 0
    private var lastPercent = -1
    private var lastLabel = ""

    func update(_ label: String, _ done: Int, _ total: Int, unit: String) {
        let percent = total > 0 ? done * 100 / total : 100
        if label != lastLabel { lastPercent = -1; lastLabel = label }
        if isTTY {
            guard percent != lastPercent else { return }
            let width = 30, filled = width * percent / 100
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(percent)% (\(done)/\(total) \(unit))".utf8))
        } else if percent / 10 != lastPercent / 10 || lastPercent < 0 {
            FileHandle.standardError.write(Data("\(label): \(done)/\(total) \(unit) (\(percent)%)\n".utf8))
        }
        lastPercent = percent
    }

    func finish() {
        if isTTY && lastPercent >= 0 { FileHandle.standardError.write(Data("\n".utf8)) }
        lastPercent = -1
    }
}
