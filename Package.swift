// swift-tools-version:6.0
import PackageDescription

import Foundation

/// x86-64 builds target the AVX2 + FMA generation (Intel Haswell / AMD Zen and later): the SIMD
/// kernels (GEMM micro-kernel, depthwise convolution) compile to 256-bit fused multiply-adds, about
/// twice the speed of the SSE2 default. `BOTTLENECK_PORTABLE=1 swift build` drops the flag for older
/// CPUs; a binary built with it refuses to start (with that advice) on a CPU without AVX2/FMA.
let portable = ProcessInfo.processInfo.environment["BOTTLENECK_PORTABLE"] == "1"
#if arch(x86_64)
let cpuFlags: [String] = portable ? [] : ["-target-cpu", "haswell", "-DBOTTLENECK_AVX2"]
#else
let cpuFlags: [String] = []
#endif

/// Release builds of the numeric kernel modules (tensor kernels, heads' solvers, training kernels) drop
/// bounds and exclusivity checks in hot loops. None of them parses bytes from files.
let fastMath: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked", "-enforce-exclusivity=unchecked"] + cpuFlags, .when(configuration: .release)),
]

/// Modules that parse untrusted input (checkpoints, archives, images, `.npy`, CSV stores) or do I/O
/// keep Swift's bounds and overflow checks in release builds: a parser's safety never depends on
/// `-Ounchecked` being off, and a missed check traps instead of reading out of bounds.
let checked: [SwiftSetting] = [
    .unsafeFlags(cpuFlags, .when(configuration: .release)),
]

let package = Package(
    name: "Bottleneck",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "bottleneck", targets: ["bottleneck"]),
        .library(name: "Bottleneck", targets: [
            "BottleneckCore", "BottleneckImage", "BottleneckTensor", "BottleneckModels",
            "BottleneckHeads", "BottleneckTraining", "BottleneckPipeline",
        ]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C system libraries (Debian: libturbojpeg0-dev, libpng-dev, libopenblas-dev).
        .systemLibrary(name: "CJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng16", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // C shim: libpng's full read API behind setjmp (its longjmp errors must not cross Swift frames).
        .target(name: "CPNGRead", dependencies: ["CPNG"]),
        // C shim: cache prefetch hints for the GEMM kernel (Swift has no prefetch instruction).
        .target(name: "CCacheHints"),
        // C shim: unaligned 8- and 16-float loads and stores that always inline into the kernels.
        .target(name: "CVectorAccess"),

        // Shared plumbing: .npy I/O, atomic writes, SHA-256, JSON helpers.
        .target(name: "BottleneckCore", swiftSettings: checked),
        // Image decoding (JPEG, PNG, PPM), EXIF orientation, Pillow-exact resampling, presets.
        .target(name: "BottleneckImage", dependencies: ["CJPEG", "CPNG", "CPNGRead", "BottleneckCore"], swiftSettings: checked),
        // Tensor kernels on OpenBLAS: convolution, pooling, activations, linear.
        .target(name: "BottleneckTensor", dependencies: ["CBLAS", "CCacheHints", "CVectorAccess", "BottleneckCore"], swiftSettings: fastMath),
        // Architectures (ResNet, VGG, EfficientNet-Lite), weight formats, manifest, labels.
        .target(name: "BottleneckModels", dependencies: ["BottleneckTensor", "BottleneckImage", "BottleneckCore", "CZlib"],
                resources: [.copy("Resources")], swiftSettings: checked),
        // Classifier heads and metrics: scaler, logistic regression, linear/RBF SVM, CV.
        .target(name: "BottleneckHeads", dependencies: ["BottleneckCore", "BottleneckImage", "CBLAS"], swiftSettings: fastMath),
        // Fine-tuning: backward passes and SGD.
        .target(name: "BottleneckTraining", dependencies: ["BottleneckModels", "BottleneckTensor", "BottleneckHeads"], swiftSettings: fastMath),
        // Dataset scanning, batched extraction pipeline, feature store, shards, and the transfer benchmark
        // (whose fine-tuning half uses BottleneckTraining; Training never imports Pipeline, so no cycle).
        .target(name: "BottleneckPipeline", dependencies: ["BottleneckImage", "BottleneckTensor", "BottleneckModels", "BottleneckCore", "BottleneckHeads", "BottleneckTraining"], swiftSettings: checked),
        // The command-line tool.
        .executableTarget(name: "bottleneck", dependencies: [
            "BottleneckCore", "BottleneckImage", "BottleneckTensor", "BottleneckModels",
            "BottleneckHeads", "BottleneckTraining", "BottleneckPipeline",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: [.unsafeFlags(cpuFlags.filter { $0.hasPrefix("-D") }, .when(configuration: .release))]),

        // Seeded truncation/flip cases and hostile-file generators shared by the robustness tests.
        .target(name: "BottleneckTestSupport", dependencies: ["BottleneckCore"], path: "Tests/BottleneckTestSupport"),

        // Kernel and network timings for tuning (Benchmarks/README.md); prints numbers, asserts nothing.
        .executableTarget(name: "bottleneck-microbench", dependencies: ["BottleneckTensor", "BottleneckModels"],
                          swiftSettings: [.unsafeFlags(cpuFlags.filter { $0.hasPrefix("-D") }, .when(configuration: .release))]),

        .testTarget(name: "BottleneckCoreTests", dependencies: ["BottleneckCore", "BottleneckTestSupport"]),
        .testTarget(name: "BottleneckImageTests", dependencies: ["BottleneckImage", "BottleneckTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "BottleneckTensorTests", dependencies: ["BottleneckTensor", "BottleneckTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "BottleneckModelsTests", dependencies: ["BottleneckModels", "BottleneckTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "BottleneckHeadsTests", dependencies: ["BottleneckHeads", "BottleneckTestSupport"], resources: [.copy("Fixtures")]),
        .testTarget(name: "BottleneckPipelineTests", dependencies: ["BottleneckPipeline", "BottleneckTraining", "BottleneckTestSupport"]),
        .testTarget(name: "BottleneckTrainingTests", dependencies: ["BottleneckTraining", "BottleneckTestSupport"], resources: [.copy("Fixtures")]),
    ]
)
