// swift-tools-version:6.0
// Two small programs using Sift as a library, as another project would:
//   rerank-client  — SiftClient: rerank documents on a running `sift serve`.
//   score-locally  — SiftEngine: load a model folder (or .sift file) in-process and score.
// In your own package, depend on Sift by URL and version instead of by path:
//   .package(url: "https://<your-git-host>/sift.git", from: "0.8.0")
// (scripts/test-examples.sh builds this package exactly that way, against a tagged clone.)
import PackageDescription

let package = Package(
    name: "RerankExample",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "Sift", path: "../.."),
    ],
    targets: [
        .executableTarget(name: "rerank-client", dependencies: [
            .product(name: "SiftClient", package: "Sift"),
            .product(name: "SiftProtocol", package: "Sift"),
        ]),
        .executableTarget(name: "score-locally", dependencies: [
            .product(name: "SiftEngine", package: "Sift"),
            .product(name: "Qwen3", package: "Sift"),
        ]),
    ]
)
