import ArgumentParser
import Foundation
import Logging
import Qwen3
import SiftClient
import SiftEngine
import SiftProtocol
import SiftServer
import SiftBase

/// What the RPC layer costs: the same rerank in-process and through a loopback server, and
/// how many tiny calls one connection carries.
struct RPCBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpc",
        abstract: "Protocol overhead: rerank of empty documents over loopback vs in-process (p50/p99), Health calls/s on one connection.")

    @Option(help: "Model (.sift file or folder; int8).") var model: String = "../shared/fixtures/tiny-qwen3"
    @Option(help: "Rerank calls per side.") var calls: Int = 2000
    @Option(help: "Documents per rerank call (all empty strings).") var documents: Int = 4
    @Option(help: "Seconds of Health calls.") var seconds: Double = 5
    @Option(help: "Health calls in flight at once on the one connection.") var concurrency: Int = 64
    @Option(help: "Model worker threads.") var threads: Int = WorkerPool.defaultThreadCount

    func run() async throws {
        let reranker = try RerankerModel.load(path: model, precision: .int8, threads: threads)
        let engine = SiftEngine(reranker: reranker)
        var options = ServerOptions()
        options.port = 0
        options.maxInFlightPerConnection = max(64, concurrency)
        var logger = Logger(label: "bench")
        logger.logLevel = .critical
        let server = SiftServer(engine: engine, options: options, logger: logger)
        try await server.start()
        let connection = try await SiftConnection.connect(host: "127.0.0.1", port: server.port!)

        // Overhead: identical calls, alternating between the two paths so drift hits both alike.
        let docs = Array(repeating: "", count: documents)
        let query = "What is the capital of China?"
        // Besides end-to-end times, each call's time outside the engine's own queue+compute span
        // (as the engine reports it): that difference is what each path adds, free of the
        // model's variance.
        var direct: [Double] = [], wire: [Double] = []
        var directOutside: [Double] = [], wireOutside: [Double] = []
        for i in 0..<(calls + 50) {
            let t0 = now()
            let d = try await engine.rerank(RerankRequest(query: query, documents: docs))
            let t1 = now()
            let answer = try await connection.call(.rerankRequest(Wire.RerankRequest(query: query, documents: docs)))
            let t2 = now()
            guard case .rerankResponse(let w) = answer else { throw CLIError("unexpected answer \(answer)") }
            if i >= 50 {  // warm-up excluded
                direct.append((t1 - t0) * 1e3)
                wire.append((t2 - t1) * 1e3)
                let engineSpan = (d.timings.queued + d.timings.computing).milliseconds
                directOutside.append((t1 - t0) * 1e3 - engineSpan)
                wireOutside.append((t2 - t1) * 1e3 - (w.timings.queuedMs + w.timings.computeMs))
            }
        }
        print(String(format: "rerank of %d empty documents, %d calls each (ms): in-process p50 %.3f p99 %.3f | loopback p50 %.3f p99 %.3f",
                     documents, calls, percentile(direct, 50), percentile(direct, 99), percentile(wire, 50), percentile(wire, 99)))
        print(String(format: "time outside the engine's queue+compute (ms): in-process p50 %.3f p99 %.3f | loopback p50 %.3f p99 %.3f | RPC layer adds p50 %.3f p99 %.3f",
                     percentile(directOutside, 50), percentile(directOutside, 99), percentile(wireOutside, 50), percentile(wireOutside, 99),
                     percentile(wireOutside, 50) - percentile(directOutside, 50), percentile(wireOutside, 99) - percentile(directOutside, 99)))

        // Health throughput on one connection, `concurrency` calls outstanding.
        let end = now() + seconds
        let start = now()
        let done = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var n = 0
                    while now() < end {
                        _ = try await connection.call(.healthRequest)
                        n += 1
                    }
                    return n
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = now() - start
        print(String(format: "Health on one connection, %d in flight: %.0f calls/s (%d in %.1f s)",
                     concurrency, Double(done) / elapsed, done, elapsed))
        await connection.close()
        await server.shutdown()
    }
}
