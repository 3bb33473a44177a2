import BottleneckCore
import BottleneckModels
import BottleneckTraining
import XCTest

/// The differentiable top rebuilt from a checkpoint must compute what BottleneckModels' inference `Network`
/// computes for the same stages (synthetic weights, 64×64 input to stay fast). Tolerance: max abs difference
/// ≤ 1e-4 · max |reference| (the inference path folds BN into the convolutions, so results differ by rounding).
final class TrainableTopTests: XCTestCase {
    func check(model: String, unfreeze: Int, side: Int = 64) throws {
        let arch = try ModelZoo.architecture(model)
        let weights = SyntheticWeights(architecture: arch)
        let top = try TrainableTop(architecture: arch, weights: weights, unfreeze: unfreeze)
        let prefix = try Network(architecture: arch, weights: weights, cut: .layer(top.prefixStage))
        let full = try Network(architecture: arch, weights: weights, cut: .layer("avgpool"))
        var rng = SplitMix64(seed: 9)
        let n = 2
        let input = (0..<(n * 3 * side * side)).map { _ in rng.nextSymmetric(scale: 2) }
        let mid = prefix.forward(input, batch: n, height: side, width: side)
        let shape = prefix.outputShape(height: side, width: side).dimensions
        let trunk = Sequential(top.body.layers + [GlobalAvgPool()])
        trunk.setTraining(false)
        let ours = try trunk.forward(TrainTensor(shape: [n] + shape, data: mid)).data
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

    func testStagesAndErrors() throws {
        let arch = try ModelZoo.architecture("efficientnet-lite0")
        let w = SyntheticWeights(architecture: arch)
        let top = try TrainableTop(architecture: arch, weights: w, unfreeze: 2)
        XCTAssertEqual(top.prefixStage, "blocks.13")
        XCTAssertEqual(top.trainableStages, ["blocks.14", "blocks.15", "head"])
        XCTAssertEqual(top.features, 1280)
        let zero = try TrainableTop(architecture: arch, weights: w, unfreeze: 0)
        XCTAssertEqual(zero.prefixStage, "avgpool")
        XCTAssertFalse(zero.pools)
        XCTAssertThrowsError(try TrainableTop(architecture: arch, weights: w, unfreeze: 17))
        let vgg = try ModelZoo.architecture("vgg11")
        XCTAssertThrowsError(try TrainableTop(architecture: vgg, weights: SyntheticWeights(architecture: vgg), unfreeze: 1))
    }
}
