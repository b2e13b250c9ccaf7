import Foundation
import NIOSSL
import SiftClient
import SiftProtocol
import SiftServer
import SiftTestSupport
import XCTest

/// TLS and mutual TLS with certificates made here by Debian's openssl.
final class TLSTests: XCTestCase {
    struct Certificates {
        let dir: URL
        var ca: String { dir.appendingPathComponent("ca.pem").path }
        var serverCert: String { dir.appendingPathComponent("server.pem").path }
        var serverKey: String { dir.appendingPathComponent("server.key").path }
        var clientCert: String { dir.appendingPathComponent("client.pem").path }
        var clientKey: String { dir.appendingPathComponent("client.key").path }
        var otherCA: String { dir.appendingPathComponent("other-ca.pem").path }
    }

    static func openssl(_ args: [String], in dir: URL) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = args
        p.currentDirectoryURL = dir
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw Wire.Status(.internal, "openssl \(args.joined(separator: " ")) failed") }
    }

    static let certificates: Certificates = {
        let dir = try! Fixtures.temporaryDirectory()
        func run(_ a: String) { try! openssl(a.split(separator: " ").map(String.init), in: dir) }
        run("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=sift-test-ca")
        run("req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=other-ca")
        try! "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(to: dir.appendingPathComponent("san.ext"), atomically: true, encoding: .utf8)
        run("req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost")
        run("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext")
        run("req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=sift-client")
        run("x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2")
        return Certificates(dir: dir)
    }()

    func client(_ server: SiftServer, ca: String?, cert: String? = nil, key: String? = nil) throws -> SiftClient {
        var options = SiftClient.Options()
        options.maxAttempts = 1
        if let ca {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(ca)
            if let cert, let key {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            options.tls = tls
        }
        return try SiftClient(endpoints: [Endpoint(host: "127.0.0.1", port: server.port!)], options: options)
    }

    func expectFailure(_ c: SiftClient, file: StaticString = #filePath, line: UInt = #line) async {
        do {
            _ = try await c.rerank(query: "q", documents: ["d"], timeout: .seconds(5))
            XCTFail("expected the call to fail", file: file, line: line)
        } catch {}
        await c.close()
    }

    func testTLS() async throws {
        let certs = Self.certificates
        let server = try await TestServer.start {
            $0.tls = TLSFiles(certificatePath: certs.serverCert, keyPath: certs.serverKey)
            $0.httpPort = 0
        }
        let good = try client(server, ca: certs.ca)
        let r = try await good.rerank(query: "q", documents: ["d"])
        XCTAssertEqual(r.results.count, 1)
        await good.close()
        await expectFailure(try client(server, ca: certs.otherCA))  // untrusted server certificate
        await expectFailure(try client(server, ca: nil))            // plain TCP to a TLS port
        // HTTPS on the HTTP port, checked by curl against the CA.
        let curl = Process()
        curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        curl.arguments = ["-sS", "--cacert", certs.ca, "-H", "Content-Type: application/json",
                          "-d", #"{"query": "q", "documents": ["d"]}"#, "https://127.0.0.1:\(server.httpPort!)/v2/rerank"]
        let out = Pipe()
        curl.standardOutput = out
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/curl") {
            try curl.run()
            let body = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            curl.waitUntilExit()
            XCTAssertTrue(body.contains("relevance_score"), body)
        }
        await server.shutdown()
    }

    func testMutualTLS() async throws {
        let certs = Self.certificates
        let server = try await TestServer.start {
            $0.tls = TLSFiles(certificatePath: certs.serverCert, keyPath: certs.serverKey, clientCAPath: certs.ca)
        }
        let withCertificate = try client(server, ca: certs.ca, cert: certs.clientCert, key: certs.clientKey)
        let r = try await withCertificate.rerank(query: "q", documents: ["d"])
        XCTAssertEqual(r.results.count, 1)
        await withCertificate.close()
        await expectFailure(try client(server, ca: certs.ca))  // no client certificate
    }

    func testBadTLSFilesAreClearErrors() async throws {
        let certs = Self.certificates
        do {
            _ = try await TestServer.start { $0.tls = TLSFiles(certificatePath: "/nonexistent.pem", keyPath: certs.serverKey) }
            XCTFail("started with a missing certificate")
        } catch {
            XCTAssertTrue("\(error)".contains("cannot read the TLS certificate /nonexistent.pem"), "\(error)")
        }
        do {
            _ = try await TestServer.start { $0.tls = TLSFiles(certificatePath: certs.serverCert, keyPath: certs.clientKey) }
            XCTFail("started with a key that does not match")
        } catch {
            XCTAssertTrue("\(error)".contains("TLS"), "\(error)")
        }
    }
}
