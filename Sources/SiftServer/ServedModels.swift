import SiftEngine
import SiftProtocol

/// The models a server serves and the names that reach them. Each model has its own engine
/// (scheduler, KV memory, prefix cache); the first is the default, used by calls that name none.
/// A server with one model answers every name with it: the rerank clients people already use
/// (Cohere's, Jina's, LangChain's, LlamaIndex's, Haystack's) each send their vendor's model name
/// and cannot leave it out, and with one model no name can reach the wrong one. With several,
/// names and aliases match without regard to case, an unknown name is NOT_FOUND, and the alias
/// `*` sends every name the server does not know to its model.
public struct ServedModels: Sendable {
    public struct Model: Sendable {
        public let name: String
        public let aliases: [String]
        public let service: any RerankService

        public init(name: String, aliases: [String] = [], service: any RerankService) {
            self.name = name
            self.aliases = aliases
            self.service = service
        }
    }

    public static let catchAll = "*"

    /// The default first.
    public let models: [Model]
    /// The score cache the models share (nil: off); for its gauges.
    public let scoreCache: ScoreCache?
    private let byName: [String: Int]

    /// Throws when two models share a name or alias, or there are none.
    public init(_ models: [Model], scoreCache: ScoreCache? = nil) throws(ServerError) {
        byName = try Self.index(models.map { ($0.name, $0.aliases) })
        self.models = models
        self.scoreCache = scoreCache
    }

    /// Each name and alias (lowercased) → its model's position; throws when there is no model,
    /// a name is empty, or two models share one. (`sift serve` checks its flags with it before
    /// loading anything.)
    public static func index(_ names: [(name: String, aliases: [String])]) throws(ServerError) -> [String: Int] {
        guard !names.isEmpty else { throw ServerError("no model to serve") }
        var byName: [String: Int] = [:]
        for (index, model) in names.enumerated() {
            for name in [model.name] + model.aliases {
                guard !name.isEmpty else { throw ServerError("a model name or alias is empty") }
                if let other = byName[name.lowercased()] {
                    throw ServerError("the name \"\(name)\" is given to both \(names[other].name) and \(model.name): name models with --model NAME=SOURCE, each name once")
                }
                byName[name.lowercased()] = index
            }
        }
        return byName
    }

    /// One model under `name`, without aliases (a server built around a single engine).
    public static func single(_ service: any RerankService, name: String) -> ServedModels {
        // A non-empty name can collide with nothing.
        try! ServedModels([Model(name: name.isEmpty ? "default" : name, service: service)])
    }

    public var defaultModel: Model { models[0] }

    /// The model a call names ("" = the default; any name when there is one model); NOT_FOUND
    /// naming the models served, and how to map a name of the client's own, otherwise.
    public func resolve(_ name: String) throws(Wire.Status) -> Model {
        if name.isEmpty || models.count == 1 { return models[0] }
        if let index = byName[name.lowercased()] ?? byName[Self.catchAll] { return models[index] }
        let shown = name.count > 100 ? name.prefix(100) + "…" : Substring(name)
        throw Wire.Status(.notFound, "no model \"\(shown)\" on this server; it serves \(listing). Omit the model for the default; for a client that must send a name of its own, start the server with --model-alias '\(shown)=\(models[0].name)', or --model-alias '*=\(models[0].name)' to send every unknown name to one model")
    }

    /// "a (default), b (also: x, y)".
    public var listing: String {
        models.enumerated().map { index, m in
            var entry = m.name
            var notes: [String] = index == 0 ? ["default"] : []
            if !m.aliases.isEmpty { notes.append("also: " + m.aliases.joined(separator: ", ")) }
            if !notes.isEmpty { entry += " (" + notes.joined(separator: "; ") + ")" }
            return entry
        }.joined(separator: ", ")
    }

    /// Documents per call accepted by every model (screened before a call is decoded).
    public var maxDocuments: Int { models.map(\.service.options.maxDocuments).max() ?? 0 }

    /// Calls inside all engines, and their queued tokens (Health, for load balancing).
    public var activeRequests: Int { models.reduce(0) { $0 + $1.service.stats.activeRequests } }
    public var queuedTokens: Int { models.reduce(0) { $0 + $1.service.stats.queuedTokens } }

    public func shutdown() { for m in models { m.service.shutdown() } }
}
