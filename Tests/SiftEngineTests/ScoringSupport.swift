import SiftEngine

extension RerankerModel {
    /// Scores through an in-process engine of its own: the one scoring path.
    func scored(query: String, instruction: String? = nil, documents: [String], maxLength: Int? = nil) async throws -> [DocumentScore] {
        let engine = SiftEngine(reranker: self, options: .inProcess())
        defer { engine.shutdown() }
        return try await engine.score(query: query, instruction: instruction, documents: documents, maxLength: maxLength)
    }
}
