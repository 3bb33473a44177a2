import Foundation
import XCTest
import BottleneckCore
import BottleneckHeads
import BottleneckModels
import BottleneckPipeline

// README.md ("Using the Swift library") quotes `trainAndValidate` and the `NetworkBackbone.load` line
// below verbatim. This file uses only the public API (no @testable import), so it is what a library
// user can write; keep the README in sync by hand when either changes.

/// Extracts `photos` (`train|val/<class>/*.jpg`) into the store `features`, fits a standardised
/// logistic regression on train and returns its accuracy on val.
func trainAndValidate(photos: URL, features: URL, backbone: FeatureBackbone) throws -> Double {
    try FeatureExtractor(backbone: backbone).extract(dataset: photos, to: features)
    let store = try FeatureStore.load(from: features)
    let train = store.split("train")!, val = store.split("val")!
    func matrix(_ s: FeatureSplit) -> Matrix { Matrix(rows: s.count, cols: s.dimension, float32: s.features) }

    let scaler = try StandardScaler.fit(matrix(train))
    let head = try HeadConfig(kind: .logreg, C: 1)
        .fit(try scaler.transform(matrix(train)), labels: train.labels, classCount: store.classes.count)
    let predicted = try head.predict(try scaler.transform(matrix(val)))
    return Double(zip(predicted, val.labels).filter { $0 == $1 }.count) / Double(val.count)
}

final class LibraryExampleTests: XCTestCase {
    /// Writes a binary PPM whose colour is mostly `base` (per-pixel seeded noise and a gradient on top),
    /// so images of one class share a dominant colour and every image still differs.
    static func writeTintedPPM(_ url: URL, base: (Int, Int, Int), seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let width = 40, height = 32
        var data = Data("P6\n\(width) \(height)\n255\n".utf8)
        for y in 0..<height {
            for x in 0..<width {
                for channel in [base.0, base.1, base.2] {
                    let value = channel + Int(rng.next() % 41) - 20 + (x + y) / 4
                    data.append(UInt8(clamping: value))
                }
            }
        }
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url)
    }

    /// The README's example end to end on a generated folder: reddish vs bluish images, 6 per class
    /// for training and 3 per class for validation, through EfficientNet-Lite0's stem (one 3x3
    /// convolution, so debug builds stay fast) with synthetic weights. The store holds 32-d rows for
    /// all 18 images, and the head separates the held-out images by colour.
    func testReadmeExampleTrainsAHeadThatClassifiesHeldOutImages() throws {
        let work = FileManager.default.temporaryDirectory
            .appendingPathComponent("bn-library-example-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: work) }
        let photos = work.appendingPathComponent("photos"), features = work.appendingPathComponent("features")
        let tints = ["blue": (40, 60, 200), "red": (210, 50, 40)]
        var seed: UInt64 = 1
        for (split, perClass) in [("train", 6), ("val", 3)] {
            for (name, tint) in tints {
                for i in 0..<perClass {
                    try Self.writeTintedPPM(photos.appendingPathComponent("\(split)/\(name)/\(i).ppm"), base: tint, seed: seed)
                    seed += 1
                }
            }
        }

        let network = try Network(syntheticModel: "efficientnet-lite0", cut: .layer("stem"), pool: .avg)
        let backbone = try NetworkBackbone(network: network, selection: .layer("stem"), weightsSHA256: "synthetic")
        let accuracy = try trainAndValidate(photos: photos, features: features, backbone: backbone)

        let store = try FeatureStore.load(from: features)
        XCTAssertEqual(store.dimension, 32)
        XCTAssertEqual(store.classes, ["blue", "red"])
        XCTAssertEqual(store.labels.count, 18)
        XCTAssertEqual(store.split("val")?.count, 6)
        XCTAssertEqual(accuracy, 1, "the head should tell reddish from bluish held-out images")
    }

    /// The README's backbone line (real EfficientNet-Lite0 weights from the cache, cut 1, average-pooled)
    /// builds a 1280-d backbone with the `lite` preset. Skips when the weights are not cached.
    func testReadmeBackboneLineLoadsCachedEfficientNetLite0() throws {
        guard let entry = try? WeightManifest.bundled().entry(for: "efficientnet-lite0"), WeightCache.default.locate(entry) != nil else {
            throw XCTSkip("EfficientNet-Lite0 weights not in the cache (bottleneck weights fetch efficientnet-lite0)")
        }
        let backbone = try NetworkBackbone.load(model: "efficientnet-lite0", weights: nil)
        XCTAssertEqual(backbone.featureDimension, 1280)
        XCTAssertEqual(backbone.preset.name, "lite")
    }
}
