import Qwen3
import SiftBase

/// The (query, document) pairs the fidelity benchmark scores, drawn deterministically from the
/// benchmark texts in three length buckets: short passages, long documents, and a few at the
/// model's long context, where attention's error grows.
public enum FidelityBucket: String, Sendable, CaseIterable, Comparable {
    case short = "64-512"
    case long = "2k-8k"
    case veryLong = "16k-32k"

    public static func < (a: Self, b: Self) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }
}

/// One query with the documents scored against it (their prefix is shared), all of one bucket.
public struct FidelityGroup: Sendable {
    public var query: String
    public var documents: [String]
    public var bucket: FidelityBucket
    /// Each document's tokens as scored (`" " + document`).
    public var documentTokens: [Int]
}

public struct FidelityPlan: Sendable {
    public struct Shape: Sendable {
        /// Short bucket: queries × documents per query, document lengths spread over 64–512 tokens.
        public var shortQueries = 16
        public var shortDocuments = 20
        /// Long bucket: queries × documents, lengths spread over 2k–8k tokens.
        public var longQueries = 3
        public var longDocuments = 6
        /// Very long bucket: one document per length (tokens), each with its own query.
        public var veryLong: [Int] = []

        public init() {}
    }

    public var groups: [FidelityGroup]

    public var pairs: Int { groups.reduce(0) { $0 + $1.documents.count } }

    /// Pairs for one model seed (`salt` moves the draw, so each seed gets other pairs).
    /// Documents are passages of `corpus` cut to a drawn number of tokens (short), or
    /// consecutive passages joined and cut (long, very long).
    public static func make(corpus: [String], queries: [String], tokenizer: Tokenizer, shape: Shape, salt: Int) -> FidelityPlan {
        precondition(!corpus.isEmpty && !queries.isEmpty)
        var rng = SplitMix64(seed: UInt64(truncatingIfNeeded: salt &* 7919 &+ 17))
        var groups: [FidelityGroup] = []
        // Text of about `tokens` tokens: passages from `start`, joined, cut at the token.
        func document(tokens: Int, start: Int) -> (String, Int) {
            var ids: [Int32] = []
            var i = start
            while ids.count < tokens {
                ids += tokenizer.encode((ids.isEmpty ? " " : "\n\n") + corpus[i % corpus.count])
                i += 1
            }
            let text = String(tokenizer.decode(Array(ids.prefix(tokens))).dropFirst())
            return (text, tokenizer.encode(" " + text).count)
        }
        func group(_ bucket: FidelityBucket, queries count: Int, documents: Int, lengths: ClosedRange<Int>) {
            for _ in 0..<count {
                let query = queries[Int(rng.next() % UInt64(queries.count))]
                var docs: [String] = [], tokens: [Int] = []
                for _ in 0..<documents {
                    let length = lengths.lowerBound + Int(rng.next() % UInt64(lengths.count))
                    let (text, n) = document(tokens: length, start: Int(rng.next() % UInt64(corpus.count)))
                    docs.append(text)
                    tokens.append(n)
                }
                groups.append(FidelityGroup(query: query, documents: docs, bucket: bucket, documentTokens: tokens))
            }
        }
        group(.short, queries: shape.shortQueries, documents: shape.shortDocuments, lengths: 64...512)
        group(.long, queries: shape.longQueries, documents: shape.longDocuments, lengths: 2048...8192)
        for length in shape.veryLong {
            let query = queries[Int(rng.next() % UInt64(queries.count))]
            let (text, n) = document(tokens: length, start: Int(rng.next() % UInt64(corpus.count)))
            groups.append(FidelityGroup(query: query, documents: [text], bucket: .veryLong, documentTokens: [n]))
        }
        return FidelityPlan(groups: groups)
    }
}

