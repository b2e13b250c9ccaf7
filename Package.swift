// swift-tools-version:6.0
import PackageDescription

// Strict settings shared by every Swift target.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

// Hot C loops are compiled optimised even in debug builds, so `swift test` (debug) runs the
// model at a useful speed. -ffp-contract=off: no implicit FMA, so scalar and SIMD twins of a
// kernel perform the same IEEE operations and agree bit for bit. Root-package unsafe flags
// are allowed by SwiftPM.
let kernelCFlags: [CSetting] = [
    .unsafeFlags(["-O3", "-fno-math-errno", "-ffp-contract=off", "-Wall"]),
]

let package = Package(
    name: "Sift",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sift", targets: ["sift"]),
        .library(name: "Qwen3", targets: ["Qwen3"]),
        .library(name: "SiftEngine", targets: ["SiftEngine"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries (Debian: libopenblas-dev, libprotobuf-c-dev).
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c",
                       providers: [.apt(["libprotobuf-c-dev"])]),

        // Numeric kernels: no allocation, no threads.
        .target(name: "CSiftKernels", cSettings: kernelCFlags),

        // Qwen3: config, safetensors, tokenizer, weights, forward pass.
        .target(name: "Qwen3",
                dependencies: ["CSiftKernels", "COpenBLAS"],
                swiftSettings: swiftSettings),

        // SiftEngine: reranker prompt, scoring.
        .target(name: "SiftEngine",
                dependencies: ["Qwen3"],
                swiftSettings: swiftSettings),

        .executableTarget(name: "sift",
                          dependencies: [
                              "Qwen3", "SiftEngine",
                              .product(name: "ArgumentParser", package: "swift-argument-parser"),
                          ],
                          swiftSettings: swiftSettings),

        // Locations of the shared fixtures, for tests only.
        .target(name: "SiftTestSupport", swiftSettings: swiftSettings),

        .testTarget(name: "Qwen3Tests", dependencies: ["Qwen3", "SiftTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "SiftEngineTests", dependencies: ["SiftEngine", "Qwen3", "SiftTestSupport"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "SiftCLITests", dependencies: ["sift", "SiftTestSupport"], swiftSettings: swiftSettings),
    ]
)
