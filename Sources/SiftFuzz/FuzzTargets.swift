import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Qwen3
import SiftProtocol
@testable import SiftHub
@testable import SiftServer
import SiftTestSupport

/// Everything that parses bytes from outside, as fuzz targets. Each takes arbitrary bytes and
/// must never crash, trap or hang; where a round trip exists it must hold.
///
/// Built with libFuzzer (`scripts/fuzz.sh`), `LLVMFuzzerTestOneInput` runs the target named by
/// `SIFT_FUZZ_TARGET`. Built normally, `sift-fuzz TARGET FILE|DIR...` replays inputs (seed
/// corpora and the regression inputs of past crashes, in CI) and `sift-fuzz seeds DIR` writes
/// the seed corpora.
enum FuzzTarget: String, CaseIterable {
    case frames, http, safetensors, sift, hub, tokenizer
    /// A tokenizer.json's bytes (files arrive from the hub).
    case tokenizerFile = "tokenizer-file"

    func run(_ data: [UInt8]) {
        switch self {
        case .frames: Self.frames(data)
        case .http: Self.http(data)
        case .safetensors: Self.safetensors(data)
        case .sift: Self.sift(data)
        case .hub: Self.hub(data)
        case .tokenizer: Self.tokenizer(data)
        case .tokenizerFile: Self.tokenizerFile(data)
        }
    }

    /// The envelope reader on every prefix length that matters, the protobuf-c decoder, and
    /// encode(decode(x)) decoding to the same frame.
    static func frames(_ data: [UInt8]) {
        data.withUnsafeBytes { raw in
            for cut in Set([data.count / 3, data.count / 2, data.count]) {
                _ = try? Envelope.read(UnsafeRawBufferPointer(rebasing: raw[..<cut]), complete: cut == data.count)
            }
        }
        guard let frame = try? Wire.Frame.decode(data) else { return }
        // Compared as bytes: a frame may carry NaN scores, and NaN != NaN.
        let encoded = frame.encoded()
        let again = try? Wire.Frame.decode(encoded)
        precondition(again?.encoded() == encoded, "a decoded frame did not survive encoding")
        // The framing layer over the same bytes, split at an arbitrary point.
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(data.count))
        buffer.writeBytes(data)
        if case .frame(let body) = try? Framing.next(from: &buffer, maxFrameBytes: 1 << 20) {
            precondition(body.readableBytes == data.count)
        }
    }

    /// NIO's HTTP/1 parser and Sift's HTTP handler on raw bytes (no engine: calls that get past
    /// the checks are answered 503), then the JSON request mapping and the document counter.
    static func http(_ data: [UInt8]) {
        let channel = EmbeddedChannel()
        var options = ServerOptions()
        options.maxFrameBytes = 1 << 16
        let state = ServerState(options: options)
        try? SiftServer.addHTTPAPIHandlers(to: channel, state: state, metrics: metrics, options: options,
                                           logger: .init(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
        _ = try? channel.writeInbound(ByteBuffer(bytes: data))
        // The embedded loop runs what handlers scheduled (closes) only when asked to.
        channel.embeddedEventLoop.run()
        _ = try? channel.finish()
        channel.embeddedEventLoop.run()
        let body = Data(data)
        let count = JSONScan.arrayCount(in: body, key: "documents")
        if let request = try? HTTPRerankAPI.decode(body) {
            precondition(count == nil || count == request.documents.count || count! >= request.documents.count,
                         "the document counter disagrees with the decoder")
        }
    }

    static let metrics = ServerMetrics()

    /// A file for the parsers that read files.
    static let scratchFile: String = {
        let dir = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        return dir + "/sift-fuzz-\(getpid()).bin"
    }()

    static func withFile(_ data: [UInt8], _ body: (String) -> Void) {
        guard FileManager.default.createFile(atPath: scratchFile, contents: Data(data)) else { return }
        body(scratchFile)
    }

    static func safetensors(_ data: [UInt8]) {
        withFile(data) { path in
            guard let file = try? SafeTensorsFile(path: path) else { return }
            for t in file.tensors.values where t.count <= 1 << 16 { _ = t.floats() }
        }
    }

    static func sift(_ data: [UInt8]) {
        withFile(data) { path in
            _ = try? SiftFile.open(path, verifyChecksum: false)
            _ = try? SiftFile.open(path, verifyChecksum: true)
        }
    }

    /// The hub's model listing: decoded and validated; whatever passes names only plain files,
    /// hex blobs and a hex commit.
    static func hub(_ data: [UInt8]) {
        guard let info = try? JSONDecoder().decode(HubModelResolver.ModelInfo.self, from: Data(data)),
              let files = try? HubModelResolver.validatedFiles(info, repo: "fuzz/model") else { return }
        precondition(HubNames.isCommit(info.sha))
        for f in files {
            precondition(HubNames.isFileName(f.name) && !f.name.contains("/") && f.name != ".." && f.name != ".")
            precondition(HubNames.isObjectID(f.blob) && f.size >= 0)
        }
    }

    static let tokenizerInstance: Tokenizer? = {
        let dir = ProcessInfo.processInfo.environment["SIFT_FUZZ_TOKENIZER"].map { URL(fileURLWithPath: $0) } ?? Fixtures.tokenizerDir
        return try? Tokenizer.load(directory: dir)
    }()

    /// Byte-level BPE covers every string: decoding the ids gives the text back (Swift's ==
    /// compares canonical equivalence, so the NFC normalization does not count).
    static func tokenizer(_ data: [UInt8]) {
        guard let tokenizer = tokenizerInstance else { fatalError("no tokenizer: set SIFT_FUZZ_TOKENIZER to a folder with tokenizer.json") }
        guard let text = String(validating: data, as: UTF8.self) else { return }
        let ids = tokenizer.encode(text)
        precondition(ids.allSatisfy { $0 >= 0 && Int($0) < tokenizer.vocabularySize }, "an id outside the vocabulary")
        precondition(tokenizer.decode(ids) == text, "decode(encode(text)) != text")
    }

    /// A tokenizer file either fails to load with an error or loads a tokenizer that encodes
    /// text into ids inside its vocabulary, in bounded time and memory.
    static func tokenizerFile(_ data: [UInt8]) {
        guard let tokenizer = try? Tokenizer.load(tokenizerJSONData: Data(data), file: "fuzz") else { return }
        for text in ["", "<", "<|im_start|>x", "hello world", "a\u{0301} 你好 <<>>"] {
            let ids = tokenizer.encode(text)
            precondition(ids.count <= 4 * text.utf8.count + 4, "more ids than text")
            precondition(ids.allSatisfy { $0 >= 0 && Int($0) < tokenizer.vocabularySize }, "an id outside the vocabulary")
        }
    }
}
