import ArgumentParser
import Foundation
import NIOSSL
import SiftClient
import SiftProtocol
import SiftServer

/// Flags every command that talks to a server shares.
struct ServerConnectionOptions: ParsableArguments {
    @Option(help: "Server(s), host:port, comma-separated (several: routed by --routing).") var server: String = "127.0.0.1:7700"
    @Option(help: "File whose first key is sent as the API key (or set SIFT_API_KEY).") var apiKeyFile: String?
    @Option(help: "affinity (same query → same server, keeps its prefix cache warm) or round-robin.") var routing: String = Routing.affinity.rawValue
    @Flag(help: "Use TLS, trusting the system's CAs (or --tls-ca).") var tls = false
    @Option(help: "CA (PEM) the server certificate must chain to (implies --tls).") var tlsCa: String?
    @Option(help: "Client certificate (PEM) for mutual TLS.") var tlsCert: String?
    @Option(help: "Client private key (PEM).") var tlsKey: String?

    func makeClient() throws -> SiftClient {
        var options = SiftClient.Options()
        guard let routing = Routing(rawValue: routing) else {
            throw CLIError("--routing must be one of: \(Routing.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        options.routing = routing
        if let apiKeyFile {
            let text = try String(contentsOfFile: apiKeyFile, encoding: .utf8)
            options.apiKey = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .first { !$0.isEmpty && !$0.hasPrefix("#") }
            if options.apiKey == nil { throw CLIError("API key file \(apiKeyFile) holds no key") }
        } else if let key = ProcessInfo.processInfo.environment["SIFT_API_KEY"], !key.isEmpty {
            options.apiKey = key
        }
        if tls || tlsCa != nil || tlsCert != nil {
            var configuration = TLSConfiguration.makeClientConfiguration()
            if let tlsCa { configuration.trustRoots = .file(tlsCa) }
            if let tlsCert, let tlsKey {
                configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(tlsCert).map { .certificate($0) }
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: tlsKey, format: .pem))
            } else if tlsCert != nil || tlsKey != nil {
                throw CLIError("--tls-cert and --tls-key go together")
            }
            options.tls = configuration
        }
        let endpoints = try server.split(separator: ",").map { try Endpoint(String($0)) }
        return try SiftClient(endpoints: endpoints, options: options)
    }
}

extension AsyncParsableCommand {
    /// Runs `body`, turning any error into one line on stderr and exit status 1.
    func reportingErrors(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as ExitCode {
            throw error
        } catch {
            FileHandle.standardError.write(Data("sift: error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct RerankCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rerank",
        abstract: "Score documents (JSON lines {\"text\": ...}) against a query on a running server.",
        discussion: "Prints the same JSON as `sift score`: results in input order with logit, score, tokens, input_tokens, truncated.")

    @OptionGroup var connection: ServerConnectionOptions
    @Option(help: "The query.") var query: String
    @Option(help: "Model to ask for, by name or alias (default: the server's default model).") var model: String?
    @Option(help: "Task instruction (default: the model card's web-search instruction).") var instruction: String?
    @Option(help: "Maximum tokens per (query, document) pair (default: the server's).") var maxLength: Int?
    @Option(help: "Cut each document to this many tokens.") var maxTokensPerDocument: Int?
    @Option(help: "Seconds to wait for the answer.") var timeout: Double?
    @Flag(help: "Score a document longer than max-length by its best window instead of truncating it.") var chunkLongDocuments = false
    @Option(help: "Tokens consecutive windows share with --chunk-long-documents (default: the server's).") var chunkOverlapTokens: Int?
    @Argument(help: "JSON-lines file of documents, or - for standard input.") var input: String = "-"

    func run() async throws {
        try await reportingErrors {
            let texts = try JSONLinesInput.readTexts(input)
            let client = try connection.makeClient()
            defer { Task { await client.close() } }
            let response = try await client.rerank(query: query, documents: texts, model: model, instruction: instruction,
                                                   maxTokensPerDocument: maxTokensPerDocument, maxLength: maxLength,
                                                   inputOrder: true, timeout: timeout.map { .milliseconds(Int($0 * 1000)) },
                                                   chunkLongDocuments: chunkLongDocuments, chunkOverlapTokens: chunkOverlapTokens)
            // With chunking, which window gave the score (`sift score` has no chunking).
            print(JSONOut.results(response.results.map {
                (Int($0.index), $0.logit, $0.relevanceScore, Int($0.tokens), Int($0.inputTokens), $0.truncated,
                 chunkLongDocuments ? (Int($0.window), of: max(1, Int($0.windows))) : nil)
            }))
        }
    }
}
