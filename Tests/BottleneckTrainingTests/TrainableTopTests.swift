import BottleneckCore
import BottleneckModels
import BottleneckTraining
import XCTest

/// The trainable top derived from the architecture's stages must compute what BottleneckModels' inference
/// `Network` computes for the same stages (synthetic weights, small inputs to stay fast), for every family.
/// Tolerance: max abs difference ≤ 1e-4 · max |reference| (the same kernels, but the training graph flattens
/// VGG's map in PyTorch's order instead of permuting the weights, and may choose other slices).
final class TrainableTopTests: XCTestCase {
    func check(model: String, unfreeze: Int, side: Int = 64) throws {
        let arch = try ModelZoo.architecture(model)
        let weights = SyntheticWeights(architecture: arch)
        let top = try TrainableTop(architecture: arch, weights: weights, unfreeze: unfreeze, classCount: 3)
        let prefix = try Network(architecture: arch, weights: weights, cut: .layer(top.prefixStage))
        let full = try Network(architecture: arch, weights: weights, cut: .layer(top.featureStage))
        var rng = SplitMix64(seed: 9)
        let n = 2
        let input = (0..<(n * 3 * side * side)).map { _ in rng.nextSymmetric(scale: 2) }
        let mid = prefix.forward(input, batch: n, height: side, width: side)
        // The graph was compiled for the native resolution; run it on this one.
        let graph = try TrainingGraph(architecture: arch, stages: top.split.trainableStages.lowerBound...(top.split.trainableStages.upperBound - 1),
                                      weights: weights, inputSize: side)
        graph.training = false
        let ours = graph.forward(mid, batch: n)
        let ref = full.forward(input, batch: n, height: side, width: side)
        XCTAssertEqual(ours.count, ref.count)
        let scale = ref.map(abs).max()!, diff = zip(ours, ref).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(scale, 0)
        XCTAssertLessThanOrEqual(diff, 1e-4 * scale, "\(model) K=\(unfreeze): max abs diff \(diff), scale \(scale)")
    }

    func testEfficientNetLiteTopMatchesInference() throws {
        try check(model: "efficientnet-lite0", unfreeze: 2)   // blocks.14 (skip) + blocks.15 + head
        try check(model: "efficientnet-lite0", unfreeze: 5)   // reaches blocks.11, the stride-2 block
    }

    func testResNetTopMatchesInference() throws {
        try check(model: "resnet18", unfreeze: 1)             // layer4: basic blocks, stride 2, downsample
        try check(model: "resnet50", unfreeze: 1)             // bottleneck blocks
    }

    func testVGGTopMatchesInference() throws {
        try check(model: "vgg11", unfreeze: 3)                // conv5_2, pool5, fc6 (adaptive pool + flatten), fc7
    }

    func testConcatenatingTopsMatchInference() throws {
        try check(model: "mobilenet_v2", unfreeze: 2)          // inverted residuals + the 1x1 projection stage
        try check(model: "inception_v3", unfreeze: 1, side: 96)   // Mixed_7c: nested concatenations
    }

    /// The product's training mode (frozen BatchNorm while `training`) on a real checkpoint must compute
    /// what inference computes: MobileNetV2 (torchvision weights, BN eps 1e-5, ReLU6 stages) at K = 1 and 2.
    func testRealMobileNetV2TopInTrainingModeMatchesInference() throws {
        guard let entry = try? WeightManifest.bundled().entry(for: "mobilenet_v2"), let url = WeightCache.default.locate(entry) else {
            throw XCTSkip("mobilenet_v2 weights not in the cache (bottleneck weights fetch mobilenet_v2)")
        }
        let arch = try ModelZoo.architecture("mobilenet_v2")
        let weights = try Checkpoint(contentsOf: url)
        for unfreeze in [1, 2] {
            let top = try TrainableTop(architecture: arch, weights: weights, unfreeze: unfreeze, classCount: 2)
            let prefix = try Network(architecture: arch, weights: weights, cut: .layer(top.prefixStage))
            let full = try Network(architecture: arch, weights: weights, cut: .layer(top.featureStage))
            let side = 96
            let graph = try TrainingGraph(architecture: arch, stages: top.split.trainableStages.lowerBound...(top.split.trainableStages.upperBound - 1),
                                          weights: weights, inputSize: side)
            // Batch sizes change between calls as in FineTuner (training batches, then evaluation chunks).
            for (n, training) in [(16, true), (5, true), (32, false), (25, false), (16, true)] {
                var rng = SplitMix64(seed: UInt64(n))
                let input = (0..<(n * 3 * side * side)).map { _ in rng.nextSymmetric(scale: 2) }
                let mid = prefix.forward(input, batch: n, height: side, width: side)
                let ref = full.forward(input, batch: n, height: side, width: side)
                let scale = ref.map(abs).max()!
                graph.training = training
                let ours = graph.forward(mid, batch: n)
                let diff = zip(ours, ref).map { abs($0 - $1) }.max()!
                XCTAssertLessThanOrEqual(diff, 1e-4 * scale, "K=\(unfreeze) batch \(n) training=\(training): max abs diff \(diff), scale \(scale)")
            }
        }
    }

    func testStagesAndErrors() throws {
        let arch = try ModelZoo.architecture("efficientnet-lite0")
        let w = SyntheticWeights(architecture: arch)
        let top = try TrainableTop(architecture: arch, weights: w, unfreeze: 2, classCount: 2)
        XCTAssertEqual(top.prefixStage, "blocks.13")
        XCTAssertEqual(top.trainableStages, ["blocks.14", "blocks.15", "head", "avgpool"])
        XCTAssertEqual(top.featureStage, "avgpool")
        XCTAssertEqual(top.features, 1280)
        let zero = try TrainableTop(architecture: arch, weights: w, unfreeze: 0, classCount: 2)
        XCTAssertEqual(zero.prefixStage, "avgpool")
        XCTAssertEqual(zero.trainableStages, [])
        XCTAssertEqual(arch.maximumFineTuningDepth, 16)
        XCTAssertThrowsError(try TrainableTop(architecture: arch, weights: w, unfreeze: 17, classCount: 2))
        XCTAssertThrowsError(try TrainableTop(architecture: arch, weights: w, unfreeze: -1, classCount: 2))
        let vgg = try ModelZoo.architecture("vgg11")
        XCTAssertEqual(try vgg.fineTuningSplit(unfreeze: 1).trainableStages.map { vgg.stageNames[$0] }, ["fc7"])
        XCTAssertEqual(try vgg.fineTuningSplit(unfreeze: 2).trainableStages.map { vgg.stageNames[$0] }, ["fc6", "fc7"])
        XCTAssertEqual(try vgg.fineTuningSplit(unfreeze: 0).prefixStage, vgg.stageNames.firstIndex(of: "fc7"))
        let resnet = try ModelZoo.architecture("resnet18")
        XCTAssertEqual(try resnet.fineTuningSplit(unfreeze: 2).trainableStages.map { resnet.stageNames[$0] },
                       ["layer3", "layer4", "avgpool"])
        for name in ModelZoo.names {
            let a = try ModelZoo.architecture(name)
            XCTAssertGreaterThanOrEqual(a.maximumFineTuningDepth, 2, "\(name) cannot fine-tune \(a.family.automaticFineTuneDepths)")
        }
    }
}
