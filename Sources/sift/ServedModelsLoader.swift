import ArgumentParser
import Foundation
import Logging
import Qwen3
import SiftBase
import SiftEngine
import SiftHub
import SiftServer

/// One `--model [NAME=]SOURCE` of `sift serve`.
struct ModelSpec: Equatable {
    var name: String
    /// A Hugging Face name, a model folder or a .sift file.
    var source: String

    /// `NAME=SOURCE`, or a bare `SOURCE` named after it (the hub name, or the file or folder
    /// name). A `=` after a `/` belongs to a path, so `/models/a=b` is a bare source.
    init(parsing text: String) throws {
        if let eq = text.firstIndex(of: "="), !text[..<eq].contains("/") {
            name = String(text[..<eq])
            source = String(text[text.index(after: eq)...])
            guard !name.isEmpty, !source.isEmpty else { throw ValidationError("--model \(text): expected NAME=SOURCE or SOURCE") }
        } else {
            source = text
            name = HubModelResolver.isRepoName(text) && !FileManager.default.fileExists(atPath: text)
                ? text : URL(fileURLWithPath: text).lastPathComponent
        }
    }

    /// The `--model` and `--model-alias` options, checked together: distinct names, every alias
    /// pointing at a model. Returns the specs and each model's aliases, in order.
    static func parse(models: [String], aliases: [String]) throws -> [(spec: ModelSpec, aliases: [String])] {
        guard !models.isEmpty else { throw ValidationError("Missing expected argument '--model <model>'") }
        let specs = try models.map(ModelSpec.init(parsing:))
        var result = specs.map { (spec: $0, aliases: [String]()) }
        for alias in aliases {
            let parts = alias.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw ValidationError("--model-alias \(alias): expected ALIAS=NAME (e.g. rerank-v3.5=\(specs[0].name))")
            }
            guard let index = specs.firstIndex(where: { $0.name.lowercased() == parts[1].lowercased() }) else {
                throw ValidationError("--model-alias \(alias): no model is named \(parts[1]); the models are \(specs.map(\.name).joined(separator: ", "))")
            }
            result[index].aliases.append(parts[0])
        }
        do {
            _ = try ServedModels.index(result.map { ($0.spec.name, $0.aliases) })
        } catch {
            throw ValidationError(error.description)
        }
        return result
    }
}

/// Loads every model `sift serve` was given, after checking that they fit in memory together;
/// each gets its own engine, all share the process's worker threads and one score cache.
struct ServedModelsLoader: Sendable {
    var specs: [(spec: ModelSpec, aliases: [String])]
    var precision: Precision
    var threads: Int
    /// Per-engine options; `kvBudgetBytes` is the total over all models (nil: the default).
    var engineOptions: EngineOptions
    var scoreCacheBytes: Int
    var logger: Logger

    func load() async throws -> ServedModels {
        let resolver = HubModelResolver(progress: { [logger] in logger.notice("\($0)") })
        var paths: [String] = []
        for (spec, _) in specs { paths.append(try await resolver.resolve(spec.source).path) }
        try checkMemory(paths)

        var rerankers: [RerankerModel] = []
        for ((spec, _), path) in zip(specs, paths) {
            let started = ContinuousClock.now
            logger.notice("loading model", metadata: ["model": "\(spec.name)", "path": "\(path)", "precision": "\(precision)", "threads": "\(threads)"])
            let reranker = try RerankerModel.load(path: path, precision: precision, threads: threads)
            logger.notice("model loaded", metadata: ["model": "\(spec.name)", "layers": "\(reranker.model.config.layerCount)",
                                                     "seconds": "\(String(format: "%.1f", (ContinuousClock.now - started).seconds))"])
            rerankers.append(reranker)
        }

        // The KV budget is the machine's, split evenly: each model gets its share.
        let mapped = rerankers.reduce(0) { $0 + $1.model.mappedWeightBytes }
        let total = engineOptions.kvBudgetBytes ?? SystemMemory.defaultKVBudget(mappedModelBytes: mapped)
        var options = engineOptions
        options.kvBudgetBytes = max(64 << 20, total / rerankers.count)
        let cache = scoreCacheBytes > 0 ? ScoreCache(budgetBytes: scoreCacheBytes) : nil
        var models: [ServedModels.Model] = []
        for ((spec, aliases), reranker) in zip(specs, rerankers) {
            let engine = SiftEngine(reranker: reranker, options: options, scoreCache: cache)
            logger.notice("KV budget", metadata: ["model": "\(spec.name)", "mib": "\(engine.kvBudgetBytes >> 20)",
                                                  "tokens": "\(engine.kvBudgetBytes / max(1, engine.kvBytesPerToken))",
                                                  "source": "\(engineOptions.kvBudgetBytes == nil ? "default (3/4 of the memory available after the models)" : "--kv-budget-mb")\(rerankers.count > 1 ? ", split among \(rerankers.count) models" : "")"])
            models.append(.init(name: spec.name, aliases: aliases, service: engine))
        }
        if let cache { logger.notice("score cache", metadata: ["mib": "\(cache.budgetBytes >> 20)"]) }
        return try ServedModels(models, scoreCache: cache)
    }

    /// Refuses, before loading any, models that cannot all fit in memory at once.
    func checkMemory(_ paths: [String]) throws {
        let needs = try zip(specs, paths).map { ($0.spec.name, try RerankerModel.residentBytesEstimate(path: $1, precision: precision)) }
        try RerankerModel.checkTheyFit(needs, available: SystemMemory.available(), precision: precision)
    }
}
