// score-locally MODEL QUERY DOCUMENT... — scores in this process (no server, an engine of its
// own), as `sift score` does; prints "index<TAB>logit<TAB>probability" in input order. MODEL: a Hugging Face
// Qwen3-Reranker folder or a .sift file.
import Foundation
import Qwen3
import SiftEngine

let arguments = Array(CommandLine.arguments.dropFirst())
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: score-locally MODEL QUERY DOCUMENT...\n".utf8))
    exit(2)
}
do {
    let engine = SiftEngine(reranker: try RerankerModel.load(path: arguments[0], precision: .int8), options: .inProcess())
    let scores = try await engine.score(query: arguments[1], documents: Array(arguments[2...]))
    for s in scores {
        print("\(s.index)\t\(s.logit)\t\(s.probability)")
    }
} catch {
    FileHandle.standardError.write(Data("score-locally: \(error)\n".utf8))
    exit(1)
}
