import BottleneckCore
import BottleneckTraining
import XCTest

/// Every op's forward output, input gradient and parameter gradients against PyTorch
/// (fixtures from Tests/Reference/training/make_grads.py), plus central finite differences.
///
/// Tolerances: PyTorch parity `max|Δ| ≤ 1e-4 · max|ref|` per array (float32 summation-order noise is ~1e-6);
/// finite differences `|fd − analytic| ≤ 3e-3 + 3e-2·|analytic|` with step 1e-3 on L = Σ y·dy accumulated in
/// double (float32 forward noise ≈ 1e-6 / 2e-3).
final class GradientParityTests: XCTestCase {
    struct Case {
        let name: String
        let seed: UInt64
        let make: () -> Layer
        let xShape: [Int]
        var xScale: Float = 1
        var train = false
    }

    static var cases: [Case] { [
        Case(name: "conv_grouped", seed: 101, make: {
            Conv2d(name: "op", inChannels: 4, outChannels: 6, kernelSize: 3, stride: 2, padding: .symmetric(1), groups: 2, bias: true)
        }, xShape: [2, 4, 7, 6]),
        Case(name: "conv_dense_same", seed: 102, make: {
            Conv2d(name: "op", inChannels: 3, outChannels: 5, kernelSize: 3, stride: 2, padding: .tfSame)
        }, xShape: [2, 3, 8, 7]),
        Case(name: "conv_dw_same", seed: 103, make: {
            Conv2d(name: "op", inChannels: 6, outChannels: 6, kernelSize: 5, stride: 2, padding: .tfSame, groups: 6)
        }, xShape: [2, 6, 8, 9]),
        Case(name: "conv_dw_s1", seed: 104, make: {
            Conv2d(name: "op", inChannels: 4, outChannels: 4, kernelSize: 3, padding: .symmetric(1), groups: 4, bias: true)
        }, xShape: [2, 4, 5, 5]),
        Case(name: "conv_1x1", seed: 105, make: { Conv2d(name: "op", inChannels: 8, outChannels: 5, kernelSize: 1) },
             xShape: [2, 8, 4, 3]),
        Case(name: "conv_1x1_s2", seed: 106, make: { Conv2d(name: "op", inChannels: 4, outChannels: 6, kernelSize: 1, stride: 2) },
             xShape: [2, 4, 5, 5]),
        Case(name: "bn_eval", seed: 107, make: { BatchNorm2d(name: "op", channels: 5) }, xShape: [3, 5, 4, 3], xScale: 2),
        Case(name: "bn_train", seed: 108, make: {
            let bn = BatchNorm2d(name: "op", channels: 5, eps: 1e-5, momentum: 0.1)
            bn.updatesStatistics = true
            return bn
        }, xShape: [3, 5, 4, 3], xScale: 2, train: true),
        Case(name: "relu", seed: 109, make: { ReLU() }, xShape: [2, 3, 4, 4], xScale: 3),
        Case(name: "relu6", seed: 110, make: { ReLU6() }, xShape: [2, 3, 4, 4], xScale: 8),
        Case(name: "maxpool", seed: 111, make: { MaxPool2d(kernel: 3, stride: 2, padding: 1) }, xShape: [2, 3, 7, 6]),
        Case(name: "gap", seed: 112, make: { GlobalAvgPool() }, xShape: [2, 4, 3, 5]),
        Case(name: "linear", seed: 113, make: { Linear(name: "op", inFeatures: 7, outFeatures: 4) }, xShape: [3, 7]),
        Case(name: "mbconv_skip", seed: 114, make: {
            Blocks.mbconv(prefix: "op", input: 4, output: 4, expandRatio: 6, kernel: 3, stride: 1)
        }, xShape: [2, 4, 6, 6]),
        Case(name: "mbconv_s2", seed: 115, make: {
            Blocks.mbconv(prefix: "op", input: 4, output: 8, expandRatio: 6, kernel: 5, stride: 2)
        }, xShape: [2, 4, 8, 8]),
        Case(name: "basic_ds", seed: 116, make: { Blocks.basicBlock(prefix: "op", input: 4, planes: 8, stride: 2) },
             xShape: [2, 4, 6, 6]),
        Case(name: "bottleneck_ds", seed: 117, make: { Blocks.bottleneckBlock(prefix: "op", input: 8, planes: 4, stride: 2) },
             xShape: [2, 8, 6, 6]),
    ] }

    /// Builds the case's layer, input and upstream gradient exactly as the script does.
    static func prepare(_ c: Case) throws -> (Layer, TrainTensor, TrainTensor, TrainTensor) {
        var rng = SplitMix64(seed: c.seed)
        let layer = c.make()
        TrainingFixtures.fill(layer, &rng)
        layer.setTraining(c.train)
        let x = TrainTensor(shape: c.xShape, data: TrainingFixtures.symmetric(&rng, c.xShape.reduce(1, *), c.xScale))
        let y = try layer.forward(x)
        let dy = TrainTensor(shape: y.shape, data: TrainingFixtures.symmetric(&rng, y.count, 1))
        return (layer, x, y, dy)
    }

    func testAgainstPyTorch() throws {
        for c in Self.cases {
            let (layer, _, y, dy) = try Self.prepare(c)
            let dx = layer.backward(dy)
            TrainingFixtures.assertClose(y.data, try TrainingFixtures.load(c.name + ".y"), tol: 1e-4, "\(c.name) forward")
            TrainingFixtures.assertClose(dx.data, try TrainingFixtures.load(c.name + ".dx"), tol: 1e-4, "\(c.name) dx")
            if !layer.trainableParameters.isEmpty {
                TrainingFixtures.assertClose(TrainingFixtures.flatGrads(layer), try TrainingFixtures.load(c.name + ".grads"),
                                             tol: 1e-4, "\(c.name) parameter gradients")
            }
            if c.train {
                let stats = layer.allParameters.filter { !$0.isTrainable }.sorted { $0.name < $1.name }.flatMap { $0.value }
                TrainingFixtures.assertClose(stats, try TrainingFixtures.load(c.name + ".stats"), tol: 1e-5, "\(c.name) running stats")
            }
        }
    }

    func testCrossEntropyAgainstPyTorch() throws {
        var rng = SplitMix64(seed: 118)
        let logits = TrainTensor(shape: [4, 5], data: TrainingFixtures.symmetric(&rng, 20, 3))
        let (loss, grad) = try SoftmaxCrossEntropy.lossAndGradient(logits: logits, labels: [0, 4, 2, 1])
        TrainingFixtures.assertClose([Float(loss)], try TrainingFixtures.load("xent.y"), tol: 1e-6, "cross-entropy loss")
        TrainingFixtures.assertClose(grad.data, try TrainingFixtures.load("xent.dx"), tol: 1e-5, "cross-entropy gradient")
    }

    /// L = Σ y·dy so that dL/dx and dL/dθ are what `backward(dy)` returns; checked on up to 24 coordinates
    /// of the input and of every trainable parameter. ReLU/ReLU6/max kinks within a step of a probe bend a
    /// central difference (a pre-activation of 5e-4 is common in the composite blocks), so each probe is taken
    /// at h = 1e-3, 2.5e-4 and 6e-5 and passes when one agrees; a wrong gradient fails both.
    func testFiniteDifferences() throws {
        for c in Self.cases {
            let (layer, x, _, dy) = try Self.prepare(c)
            let dx = layer.backward(dy)
            // The running statistics after the reference forward; probes restore them so L is a fixed function
            // (in training mode each forward would otherwise move them).
            let buffers = layer.allParameters.filter { !$0.isTrainable }
            var rng = SplitMix64(seed: c.seed)
            let fresh = c.make()
            TrainingFixtures.fill(fresh, &rng)
            let before = fresh.allParameters.filter { !$0.isTrainable }.map { $0.value }
            func loss(_ input: TrainTensor) throws -> Double {
                for (p, v) in zip(buffers, before) { p.value = v }
                let y = try layer.forward(input)
                var s = 0.0
                for i in 0..<y.count { s += Double(y.data[i]) * Double(dy.data[i]) }
                return s
            }
            func check(_ analytic: Float, _ what: String, _ lossAt: (Float) throws -> Double) rethrows {
                var best = Float.infinity, fdShown: Float = 0
                for h: Float in [1e-3, 2.5e-4, 6e-5] {
                    let fd = Float((try lossAt(h) - lossAt(-h)) / Double(2 * h))
                    if abs(fd - analytic) < best { best = abs(fd - analytic); fdShown = fd }
                }
                XCTAssertLessThanOrEqual(best, 3e-3 + 3e-2 * abs(analytic),
                                         "\(c.name) \(what): finite difference \(fdShown) vs analytic \(analytic)")
            }
            for i in probeIndices(x.count) {
                try check(dx.data[i], "dx[\(i)]") { h in
                    var xp = x
                    xp.data[i] += h
                    return try loss(xp)
                }
            }
            for p in layer.trainableParameters {
                let analytic = p.grad
                for i in probeIndices(p.value.count) {
                    try check(analytic[i], "\(p.name)[\(i)]") { h in
                        let v = p.value[i]
                        defer { p.value[i] = v }
                        p.value[i] = v + h
                        return try loss(x)
                    }
                }
            }
        }
    }

    private func probeIndices(_ n: Int) -> [Int] {
        n <= 24 ? Array(0..<n) : (0..<24).map { ($0 * 7919) % n }
    }
}
