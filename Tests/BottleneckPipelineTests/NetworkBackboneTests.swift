import Foundation
import XCTest
import BottleneckImage
import BottleneckModels
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
}
