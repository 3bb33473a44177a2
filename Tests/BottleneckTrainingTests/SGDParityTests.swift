import BottleneckCore
@testable import BottleneckModels
import BottleneckTraining
import XCTest

/// Three SGD steps on a small EfficientNet-Lite-style top (two MBConv blocks, conv_head, BN, ReLU6, pool, fc), as a
/// `TrainingGraph` compiled from the architecture's layer specifications,
/// with deterministic weights, against PyTorch's updated parameters (Tests/Reference/training/make_grads.py).
/// Tolerance: per tensor `max|Δ| ≤ 1e-4 · max|ref|` (the 1e-4 relative criterion).
final class SGDParityTests: XCTestCase {
    static let tinyLite: [LayerSpec] = GradientParityTests.mbconv("_blocks.0", 8, 8, expand: 6, kernel: 3, stride: 1)
        + GradientParityTests.mbconv("_blocks.1", 8, 16, expand: 6, kernel: 5, stride: 2)
        + [GradientParityTests.conv("_conv_head", 16, 32, 1, padding: .same, bn: "_bn1", eps: 1e-3, momentum: 0.01, activation: .relu6),
           .globalAvgPool, .linear(name: "_fc", inFeatures: 32, outFeatures: 3, activation: .none)]

    func run(_ name: String, seed: UInt64, train: Bool, lr: Float, wd: Float, nesterov: Bool, schedule: LRSchedule) throws {
        var rng = SplitMix64(seed: seed)
        let model = try TrainingFixtures.graph(Self.tinyLite, input: .map(channels: 8, height: 8, width: 8), &rng)
        model.computesInputGradient = false
        model.training = train
        model.updatesBatchStatistics = train
        let initial = model.trainableParameters.map(\.value)
        let opt = SGD(parameters: model.trainableParameters, learningRate: lr, momentum: 0.9, weightDecay: wd, nesterov: nesterov)
        var losses: [Float] = []
        for t in 0..<3 {
            let x = TrainingFixtures.symmetric(&rng, 4 * 8 * 8 * 8, 1)
            let labels = (0..<4).map { (t + $0) % 3 }
            opt.zeroGrad()
            let (loss, dlogits) = try SoftmaxCrossEntropy.lossAndGradient(logits: model.forward(x, batch: 4), classes: 3, labels: labels)
            _ = model.backward(dlogits)
            opt.learningRate = schedule.rate(base: lr, at: t)
            opt.step()
            model.parametersDidChange()
            losses.append(Float(loss))
        }
        TrainingFixtures.assertClose(losses, try TrainingFixtures.load(name + ".losses"), tol: 1e-5, "\(name) losses")
        let ref = try TrainingFixtures.load(name + ".final")
        var offset = 0
        for p in model.parameters.sorted(by: { $0.name < $1.name }) {
            let r = Array(ref[offset..<min(offset + p.value.count, ref.count)])
            TrainingFixtures.assertClose(p.value, r, tol: 1e-4, floor: 1e-6, "\(name) \(p.name)")
            offset += p.value.count
        }
        XCTAssertEqual(offset, ref.count, "\(name): parameter count")
        // The comparison is only meaningful if the steps moved the weights measurably.
        XCTAssertTrue(zip(initial, model.trainableParameters).contains { $0 != $1.value }, "\(name): SGD did not change any parameter")
    }

    func testEvalBatchNormCosine() throws {
        try run("sgd_eval_cosine", seed: 201, train: false, lr: 0.1, wd: 1e-3, nesterov: false,
                schedule: .cosine(total: 3, minimum: 0))
    }

    func testTrainBatchNormStepNesterov() throws {
        try run("sgd_train_step_nesterov", seed: 202, train: true, lr: 0.05, wd: 5e-4, nesterov: true,
                schedule: .step(every: 2, gamma: 0.1))
    }

    func testSchedulesMatchPyTorchClosedForm() {
        // CosineAnnealingLR(T_max=10, eta_min=0.001) from 0.1 and StepLR(3, 0.5): values printed by torch.
        let cos = (0...4).map { LRSchedule.cosine(total: 10, minimum: 0.001).rate(base: 0.1, at: $0) }
        let expected: [Float] = [0.1, 0.097577, 0.090546, 0.079595, 0.065796]
        for (a, b) in zip(cos, expected) { XCTAssertEqual(a, b, accuracy: 2e-6) }
        let step = (0...6).map { LRSchedule.step(every: 3, gamma: 0.5).rate(base: 0.1, at: $0) }
        XCTAssertEqual(step, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025])
    }
}
