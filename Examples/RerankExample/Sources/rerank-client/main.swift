// rerank-client HOST:PORT QUERY DOCUMENT... — prints "index<TAB>relevance<TAB>document", best first.
import Foundation
import SiftClient
import SiftProtocol

let arguments = CommandLine.arguments.dropFirst()
guard arguments.count >= 3 else {
    FileHandle.standardError.write(Data("usage: rerank-client HOST:PORT QUERY DOCUMENT...\n".utf8))
    exit(2)
}
let (endpoint, query, documents) = (arguments.first!, arguments.dropFirst().first!, Array(arguments.dropFirst(2)))

var options = SiftClient.Options()
options.apiKey = ProcessInfo.processInfo.environment["SIFT_API_KEY"]
let client = try SiftClient(endpoints: [endpoint], options: options)
do {
    let response = try await client.rerank(query: query, documents: documents, timeout: .seconds(30))
    for result in response.results {
        print("\(result.index)\t\(String(format: "%.4f", result.relevanceScore))\t\(documents[Int(result.index)])")
    }
    await client.close()
} catch let status as Wire.Status {
    // The status code says what happened; the message says what to do.
    FileHandle.standardError.write(Data("rerank-client: \(status)\n".utf8))
    await client.close()
    exit(1)
}
