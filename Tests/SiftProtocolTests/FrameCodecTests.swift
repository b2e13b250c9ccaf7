import NIOCore
import SiftBase
import SiftProtocol
import SiftTestSupport
import XCTest

final class FrameCodecTests: XCTestCase {
    func roundTrip(_ frame: Wire.Frame, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(try Wire.Frame.decode(frame.encoded()), frame, file: file, line: line)
    }

    func testEveryMessageRoundTrips() throws {
        let meta = [Wire.MetadataEntry("authorization", "Bearer k"), Wire.MetadataEntry("x-trace", "é✓")]
        var rerank = Wire.RerankRequest(
            query: "what is 日本?", instruction: "Find code", documents: ["a", "", "ünï", String(repeating: "x", count: 10_000)],
            topN: 3, returnDocuments: true, maxTokensPerDocument: 100, maxLength: 2048, inputOrder: true,
            timeoutMs: 1500, priority: -2, stream: true)
        rerank.model = "rerank-v3.5"
        try roundTrip(Wire.Frame(requestID: 7, metadata: meta, body: .rerankRequest(rerank)))
        // Fields not given stay not given; proto3's 0 is "not given", so an explicit 0 arrives as nil.
        try roundTrip(Wire.Frame(requestID: 8, body: .rerankRequest(Wire.RerankRequest(query: "q", documents: ["d"]))))
        var zeros = Wire.RerankRequest(query: "q", documents: ["d"], topN: 0, maxTokensPerDocument: 0, maxLength: 0, timeoutMs: 0)
        zeros.chunkOverlapTokens = 0
        let decoded = try Wire.Frame.decode(Wire.Frame(requestID: 9, body: .rerankRequest(zeros)).encoded())
        XCTAssertEqual(decoded.body, .rerankRequest(Wire.RerankRequest(query: "q", documents: ["d"])))
        let results = [Wire.RerankResult(index: 2, relevanceScore: 0.75, logit: 1.0986, tokens: 12, truncated: true, document: "doc"),
                       Wire.RerankResult(index: 0, relevanceScore: 0.1, logit: -2.19, tokens: 0, truncated: false)]
        try roundTrip(Wire.Frame(requestID: .max, body: .rerankResponse(Wire.RerankResponse(
            results: results, usage: { var u = Wire.Usage(prefixTokens: 60, prefixTokensCached: 48, documentTokens: 1 << 40,
                                                          truncatedDocuments: 1, documents: 2); u.cachedDocuments = 1; return u }(),
            timings: Wire.Timings(queuedMs: 1.5, computeMs: 250.25), modelID: "qwen3-reranker-0.6b"))))
        try roundTrip(Wire.Frame(requestID: 1, body: .rerankPartial(results.map { var r = $0; r.document = nil; return r })))
        try roundTrip(Wire.Frame(requestID: 2, body: .tokenizeRequest(Wire.TokenizeRequest(texts: ["a b", ""], returnIDs: true, model: "large"))))
        try roundTrip(Wire.Frame(requestID: 2, body: .tokenizeResponse([Wire.TokenizedText(count: 2, ids: [64, 293]),
                                                                         Wire.TokenizedText(count: 0)])))
        try roundTrip(Wire.Frame(requestID: 3, body: .modelInfoRequest()))
        try roundTrip(Wire.Frame(requestID: 3, body: .modelInfoRequest(model: "qwen3-4b")))
        var info = Wire.ModelInfo()
        info.modelID = "m"; info.quantization = "int8"; info.hiddenSize = 1024; info.layers = 28; info.maxLength = 40960
        info.protocolVersion = 1; info.defaultInstruction = "Given a web search query"
        var small = Wire.ServedModel(name: "m")
        small.aliases = ["rerank-v3.5", "*"]; small.quantization = "int8"; small.layers = 28; small.isDefault = true
        info.models = [small, Wire.ServedModel(name: "large")]
        try roundTrip(Wire.Frame(requestID: 3, body: .modelInfoResponse(info)))
        try roundTrip(Wire.Frame(requestID: 4, body: .healthRequest))
        try roundTrip(Wire.Frame(requestID: 4, body: .healthResponse(Wire.Health(status: .notServing, activeRequests: 3, queuedTokens: 99))))
        try roundTrip(Wire.Frame(requestID: 5, body: .cancelRequest(requestID: 4)))
        for code in Wire.Code.allCases {
            try roundTrip(Wire.Frame(requestID: 6, body: .status(Wire.Status(code, "what to fix"))))
        }
    }

    func testCodeNamesAreGRPCs() {
        XCTAssertEqual(Wire.Code.invalidArgument.name, "INVALID_ARGUMENT")
        XCTAssertEqual(Wire.Code.resourceExhausted.name, "RESOURCE_EXHAUSTED")
        XCTAssertEqual(Wire.Code.ok.name, "OK")
        XCTAssertEqual(Wire.Code.unauthenticated.rawValue, 16)
    }

    func testInvalidUTF8IsRejectedWithTheField() {
        let bytes = Proto.rerank(id: 9, query: Array("q".utf8), documents: [Array("fine".utf8), [0x66, 0xff, 0xfe]])
        XCTAssertThrowsError(try Wire.Frame.decode(bytes)) { error in
            let e = error as? ProtocolError
            XCTAssertEqual(e?.requestID, 9)
            XCTAssertTrue(e?.message.contains("documents[1] is not valid UTF-8") ?? false, "\(error)")
        }
    }

    func testNULInTextIsRejectedNotTruncated() {
        let bytes = Proto.rerank(id: 3, query: Array("q".utf8), documents: [Array("before\u{0}after".utf8)])
        XCTAssertThrowsError(try Wire.Frame.decode(bytes)) { error in
            XCTAssertTrue("\(error)".contains("documents[0] contains a NUL byte"), "\(error)")
        }
    }

    func testUnknownFieldsAreIgnoredAndUnknownBodiesRecognised() throws {
        // Field 77 inside the request (a newer client's option) is skipped.
        let withExtra = Proto.rerank(id: 1, query: Array("q".utf8), documents: [Array("d".utf8)],
                                     extra: Proto.field(77, varint: 5) + Proto.field(78, bytes: [1, 2, 3]))
        guard case .rerankRequest(let r) = try Wire.Frame.decode(withExtra).body else { return XCTFail("not a rerank") }
        XCTAssertEqual(r.documents, ["d"])
        // A body this version does not know.
        let unknown = Proto.field(1, varint: 4) + Proto.field(99, bytes: [])
        let frame = try Wire.Frame.decode(unknown)
        XCTAssertEqual(frame.requestID, 4)
        XCTAssertEqual(frame.body, .unknown)
        XCTAssertEqual(try Wire.Frame.decode([]).body, .unknown)
    }

    func testFramingWaitsForWholeFramesAndRefusesOversize() throws {
        let frame = Wire.Frame(requestID: 1, body: .healthRequest)
        var buffer = ByteBuffer()
        Framing.write(frame, to: &buffer)
        Framing.write(frame, to: &buffer)
        let all = Array(buffer.readableBytesView)
        // Byte by byte: nothing until a frame is complete, then exactly it.
        var partial = ByteBuffer()
        var frames: [Wire.Frame] = []
        for byte in all {
            partial.writeInteger(byte)
            if case .frame(let body) = try Framing.next(from: &partial, maxFrameBytes: 100) {
                frames.append(try Framing.decode(body))
            }
        }
        XCTAssertEqual(frames, [frame, frame])
        var big = ByteBuffer(bytes: [0x7f, 0xff, 0xff, 0xff])
        XCTAssertThrowsError(try Framing.next(from: &big, maxFrameBytes: 1 << 20)) { error in
            XCTAssertEqual(error as? FrameTooLarge, FrameTooLarge(length: 0x7fff_ffff, limit: 1 << 20))
        }
    }

    /// Deterministic fuzzing of the frame reader and the protobuf decoder (runs in CI with a
    /// fixed budget): random bytes, and valid frames with random bytes flipped, cut or spliced.
    /// Must never crash or hang; every input is either a frame, "need more", or an error.
    func testRandomInputNeverCrashesTheDecoder() throws {
        var rng = SplitMix64(seed: 0x5EED)
        let seeds: [[UInt8]] = [
            Wire.Frame(requestID: 7, metadata: [.init("authorization", "Bearer x")], body: .rerankRequest(Wire.RerankRequest(
                query: "q", documents: ["alpha", "βeta", ""], topN: 2, timeoutMs: 10, stream: true))).encoded(),
            Wire.Frame(requestID: 1, body: .tokenizeResponse([Wire.TokenizedText(count: 3, ids: [1, 2, 3])])).encoded(),
            Wire.Frame(requestID: 2, body: .rerankResponse(Wire.RerankResponse(results: [
                Wire.RerankResult(index: 0, relevanceScore: 0.5, logit: 0, tokens: 3, truncated: false, document: "d")]))).encoded(),
            Wire.Frame(requestID: 3, body: .status(Wire.Status(.internal, "x"))).encoded(),
        ]
        var outcomes = [0, 0, 0]  // decoded, rejected, incomplete
        for i in 0..<60_000 {
            var bytes: [UInt8]
            if i % 3 == 0 {
                bytes = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            } else {
                bytes = seeds[Int(rng.next() % UInt64(seeds.count))]
                for _ in 0..<(1 + rng.next() % 4) {
                    let pos = Int(rng.next() % UInt64(max(bytes.count, 1)))
                    switch rng.next() % 4 {
                    case 0: if !bytes.isEmpty { bytes[pos] = UInt8(truncatingIfNeeded: rng.next()) }
                    case 1: bytes = Array(bytes.prefix(pos))
                    case 2: bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: min(pos, bytes.count))
                    default: bytes += seeds[Int(rng.next() % UInt64(seeds.count))].prefix(pos)
                    }
                }
            }
            // As a frame body.
            do { _ = try Wire.Frame.decode(bytes); outcomes[0] += 1 } catch { outcomes[1] += 1 }
            // As a stream: whatever the length prefix says, at most the limit is ever buffered.
            var buffer = ByteBuffer(bytes: (i % 2 == 0 ? Proto.framed(bytes) : bytes))
            loop: while true {
                do {
                    switch try Framing.next(from: &buffer, maxFrameBytes: 4096) {
                    case .frame(let body): _ = try? Framing.decode(body)
                    case .needMoreData: outcomes[2] += 1; break loop
                    }
                } catch {
                    XCTAssertTrue(error is FrameTooLarge)
                    break loop
                }
            }
        }
        XCTAssertGreaterThan(outcomes[0], 1000)
        XCTAssertGreaterThan(outcomes[1], 1000)
    }
}

