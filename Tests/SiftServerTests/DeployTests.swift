import Foundation
import SiftProtocol
import SiftServer
import SiftTestSupport
import XCTest

/// The dashboard and alert rules in deploy/ query only metrics a live server exposes, and every
/// metric family carries HELP and TYPE lines.
final class DeployTests: XCTestCase {
    /// `sift_…` names in a file.
    static func queriedMetrics(_ path: String) throws -> Set<String> {
        let text = try String(contentsOf: Fixtures.packageRoot.appendingPathComponent(path), encoding: .utf8)
        let names = try NSRegularExpression(pattern: "\\bsift_[a-z_]+")
            .matches(in: text, range: NSRange(text.startIndex..., in: text))
            .compactMap { Range($0.range, in: text).map { String(text[$0]) } }
        return Set(names)
    }

    /// The family a series name belongs to: itself, or a histogram's without `_bucket`/`_sum`/`_count`.
    static func family(_ name: String, in families: Set<String>) -> String? {
        if families.contains(name) { return name }
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if families.contains(base) { return base }
        }
        return nil
    }

    func testEveryMetricTheDashboardAndAlertsQueryIsExposed() async throws {
        let server = try await TestServer.start { $0.httpPort = 0 }
        // Calls through both doors and a failed one, so labelled families exist.
        let c = try await TestServer.connect(server)
        _ = try await ServerTests.rerank(c, Wire.RerankRequest(query: "q", documents: ["a document"]))
        _ = try? await ServerTests.rerank(c, Wire.RerankRequest(query: "", documents: ["a document"]))
        let http = try await HTTPAPITests.post(server.httpPort!, "/v2/rerank", #"{"query":"q","documents":["d"]}"#)
        XCTAssertNotEqual(http.status, 0)
        let text = try await offPool { try TestServer.httpGet(port: server.metricsPort!, path: "/metrics") }
        await server.shutdown()

        var typed = Set<String>(), helped = Set<String>()
        // The body only ("\r\n" is one Character to Swift: splitting at "\n" would glue the last
        // header to the first line).
        let body = text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        for line in body.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count > 3, parts[0] == "#", parts[1] == "TYPE" { typed.insert(String(parts[2])) }
            if parts.count > 3, parts[0] == "#", parts[1] == "HELP" { helped.insert(String(parts[2])) }
        }
        XCTAssertFalse(typed.isEmpty, text)
        XCTAssertEqual(typed, helped, "every family has HELP and TYPE lines:\n\(body)")
        for file in ["deploy/grafana/sift-dashboard.json", "deploy/prometheus/sift-alerts.yml"] {
            let queried = try Self.queriedMetrics(file)
            XCTAssertFalse(queried.isEmpty, file)
            XCTAssertEqual(queried.filter { Self.family($0, in: typed) == nil }, [], "\(file) queries metrics /metrics does not have")
        }
    }
}
