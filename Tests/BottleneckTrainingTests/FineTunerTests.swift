import BottleneckCore
import BottleneckHeads
import BottleneckImage
import BottleneckModels
import BottleneckTraining
import Foundation
import XCTest

/// End-to-end fine-tuning on a tiny synthetic dataset (EfficientNet-Lite0 with synthetic weights, K = 1):
/// cache paths, learning progress, skipped files, and a saved model that reproduces the tuner's predictions
/// through the inference engine.
final class FineTunerTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ft-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// Writes a 40×32 binary PPM: class 0 leans red, class 1 leans blue, with per-image noise.
    func writeImage(_ name: String, label: Int, seed: UInt64) throws -> LabeledImage {
        var rng = SplitMix64(seed: seed)
        var bytes = Array("P6\n40 32\n255\n".utf8)
        for _ in 0..<(40 * 32) {
            let noise = { UInt8(rng.next() >> 58) }   // 0...63
            let strong = UInt8(160) + noise(), weak = UInt8(40) + noise()
            bytes += label == 0 ? [strong, weak + noise(), weak] : [weak, weak + noise(), strong]
        }
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return LabeledImage(path: url.path, label: label)
    }

    func dataset() throws -> (train: [LabeledImage], val: [LabeledImage]) {
        var train: [LabeledImage] = []
        for i in 0..<8 { train.append(try writeImage("t\(i).ppm", label: i % 2, seed: UInt64(i))) }
        let junk = dir.appendingPathComponent("broken.ppm")
        try Data("not an image".utf8).write(to: junk)
        train.append(LabeledImage(path: junk.path, label: 0))
        let val = try (0..<4).map { try writeImage("v\($0).ppm", label: $0 % 2, seed: UInt64(100 + $0)) }
        return (train, val)
    }

    func tuner(augment: AugmentationSet, epochs: Int, headInit: HeadInitialization = .zero) throws -> (FineTuner, SyntheticWeights) {
        let arch = try ModelZoo.architecture("efficientnet-lite0")
        let weights = SyntheticWeights(architecture: arch)
        var config = FineTuneConfig()
        config.unfreeze = 1
        config.epochs = epochs
        // Synthetic weights give large activations; a small rate keeps SGD stable on them.
        config.learningRate = 0.001
        config.batchSize = 4
        config.augment = augment
        config.headInit = headInit
        return (try FineTuner(architecture: arch, weights: weights, classCount: 2, config: config), weights)
    }

    func testFlipPathCachesLearnsAndSavesAReproducibleModel() throws {
        let (train, val) = try dataset()
        let (ft, weights) = try tuner(augment: .flip, epochs: 4)
        let report = try ft.train(train: train, validation: val)
        XCTAssertEqual(report.path, .cachedWithMirror)
        XCTAssertEqual(report.skipped.count, 1)
        XCTAssertEqual(report.epochs.count, 4)
        XCTAssertTrue(report.epochs.allSatisfy { $0.prefixSeconds == 0 }, "cached path must not run the prefix per epoch")
        XCTAssertLessThan(report.epochs[0].trainLoss, log(2) + 1e-6, "a zero head starts at loss ln 2 and descends")
        XCTAssertLessThan(report.epochs.last!.trainLoss, report.epochs[0].trainLoss)
        XCTAssertEqual(report.epochs.last!.validationAccuracy ?? 0, 1.0, "red vs blue is separable")
        XCTAssertEqual(report.epochs.map(\.learningRate)[0], 0.001)

        let modelURL = dir.appendingPathComponent("model.json")
        let sidecar = try ft.save(to: modelURL, classNames: ["red", "blue"], baseWeightsSHA256: "synthetic", report: report)
        let saved = try ClassifierModel.load(from: modelURL)
        XCTAssertEqual(saved.backbone?.extra["finetuned_weights"], sidecar.lastPathComponent)
        let stages = try StateDictFile(contentsOf: sidecar)
        XCTAssertEqual(Set(stages.keys), Set(ft.top.stageParameters.map(\.name)))

        // The saved backbone (base + sidecar) through the inference engine, then the saved head, must give the
        // tuner's own probabilities. Tolerance 1e-3 absolute on probabilities (folded BN and float summation order).
        let arch = ft.architecture
        let net = try Network(architecture: arch, weights: OverlayWeights(base: weights, overrides: stages), cut: .layer("avgpool"))
        let images = try val.map { try ImageDecoder.decode(contentsOf: URL(fileURLWithPath: $0.path)) }
        let side = arch.inputSize
        var input = [Float](repeating: 0, count: images.count * 3 * side * side)
        input.withUnsafeMutableBufferPointer { p in
            for (k, img) in images.enumerated() { ft.preprocessor.write(img, into: p.baseAddress! + k * 3 * side * side) }
        }
        let pooled = net.forward(input, batch: images.count, height: side, width: side)
        let probs = try saved.classScores(Matrix(rows: images.count, cols: 1280, float32: pooled))
        let logits = try ft.logits(images: images)
        for (i, l) in logits.enumerated() {
            let m = max(l[0], l[1])
            let p1 = exp(Double(l[1] - m)) / (exp(Double(l[0] - m)) + exp(Double(l[1] - m)))
            XCTAssertEqual(probs[i, 1], p1, accuracy: 1e-3, "image \(i)")
        }
    }

    func testCropPathRecomputesPrefixAndLogregInitStartsBelowChance() throws {
        let (train, val) = try dataset()
        let (ft, _) = try tuner(augment: [.crop, .flip], epochs: 1, headInit: .logreg)
        let report = try ft.train(train: train, validation: val)
        XCTAssertEqual(report.path, .recomputed)
        XCTAssertGreaterThan(report.epochs[0].prefixSeconds, 0)
        XCTAssertEqual(report.initialValidationAccuracy ?? 0, 1.0, "logistic regression on frozen features separates red/blue")
        XCTAssertLessThan(report.epochs[0].trainLoss, log(2), "a fitted head starts better than the zero head")
    }
}
