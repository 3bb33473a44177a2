import BottleneckCore
@testable import BottleneckModels
import BottleneckTensor
import BottleneckTraining
import XCTest

/// Every layer kind of a `TrainingGraph` (compiled from `LayerSpec`s, run on the NHWC inference kernels):
/// forward output, input gradient and parameter gradients against PyTorch (NCHW fixtures from
/// Tests/Reference/training/make_grads.py; the graph takes and returns PyTorch's layout), plus central
/// finite differences through the whole graph.
///
/// Standalone BatchNorm and activations are not layers of the specification language (they always follow a
/// convolution), so those cases run behind a 1x1 identity convolution `id` (exact: `1 * x + 0`), whose weight
/// draws nothing from the fixture's random stream and whose gradient is left out of the comparison.
/// The fixture's grouped convolution and biased depthwise convolution have no counterpart in the
/// specification language (no architecture uses them) and are not run.
///
/// Tolerances: PyTorch parity `max|Δ| ≤ 1e-4 · max|ref|` per array (float32 summation-order noise is ~1e-6);
/// finite differences `|fd − analytic| ≤ 3e-3 + 3e-2·|analytic|` on L = Σ y·dy accumulated in double, each
/// probe at h = 1e-3, 2.5e-4 and 6e-5 (a ReLU/ReLU6/max kink within a step bends one difference; a wrong
/// gradient fails all three).
final class GradientParityTests: XCTestCase {
    struct Case {
        let name: String
        let seed: UInt64
        let layers: [LayerSpec]
        let xShape: [Int]
        var xScale: Float = 1
        var train = false
        /// Identity 1x1 convolution in front (name `id`) with this many channels.
        var identity: Int? = nil
    }

    static func conv(_ name: String, _ cin: Int, _ cout: Int, _ k: Int, stride: Int = 1, padding: Padding = .symmetric(0),
                     bn: String? = nil, eps: Float = 1e-5, momentum: Float = 0.1, activation: Activation = .none) -> LayerSpec {
        .conv(name: name, inChannels: cin, outChannels: cout, kernel: k, stride: stride, padding: padding, bias: false,
              bn: bn.map { BatchNormSpec(name: $0, eps: eps, closesResidual: false, momentum: momentum) }, activation: activation)
    }

    /// EfficientNet-Lite's MBConv block as the architecture writes it (`EfficientNetLiteFamily`).
    static func mbconv(_ p: String, _ cin: Int, _ cout: Int, expand: Int, kernel: Int, stride: Int, momentum: Float = 0.01) -> [LayerSpec] {
        let mid = cin * expand
        let body: [LayerSpec] = [
            conv(p + "._expand_conv", cin, mid, 1, padding: .same, bn: p + "._bn0", eps: 1e-3, momentum: momentum, activation: .relu6),
            .depthwise(name: p + "._depthwise_conv", channels: mid, kernel: kernel, stride: stride, padding: .same,
                       bn: BatchNormSpec(name: p + "._bn1", eps: 1e-3, closesResidual: false, momentum: momentum), activation: .relu6),
            conv(p + "._project_conv", mid, cout, 1, padding: .same, bn: p + "._bn2", eps: 1e-3, momentum: momentum),
        ]
        return stride == 1 && cin == cout ? [.residual(body: body, shortcut: nil, activation: .none)] : body
    }

    /// torchvision's BasicBlock / Bottleneck as `ResNetFamily` writes them.
    static func resnetBlock(_ p: String, _ cin: Int, _ planes: Int, stride: Int, bottleneck: Bool) -> LayerSpec {
        let out = bottleneck ? planes * 4 : planes
        let body: [LayerSpec] = bottleneck ? [
            conv(p + ".conv1", cin, planes, 1, bn: p + ".bn1", activation: .relu),
            conv(p + ".conv2", planes, planes, 3, stride: stride, padding: .symmetric(1), bn: p + ".bn2", activation: .relu),
            conv(p + ".conv3", planes, out, 1, bn: p + ".bn3"),
        ] : [
            conv(p + ".conv1", cin, planes, 3, stride: stride, padding: .symmetric(1), bn: p + ".bn1", activation: .relu),
            conv(p + ".conv2", planes, planes, 3, padding: .symmetric(1), bn: p + ".bn2"),
        ]
        let shortcut = stride != 1 || cin != out ? [conv(p + ".downsample.0", cin, out, 1, stride: stride, bn: p + ".downsample.1")] : nil
        return .residual(body: body, shortcut: shortcut, activation: .relu)
    }

    static var cases: [Case] { [
        Case(name: "conv_dense_same", seed: 102, layers: [conv("op", 3, 5, 3, stride: 2, padding: .same)], xShape: [2, 3, 8, 7]),
        Case(name: "conv_dw_same", seed: 103, layers: [.depthwise(name: "op", channels: 6, kernel: 5, stride: 2, padding: .same,
                                                                  bn: nil, activation: .none)], xShape: [2, 6, 8, 9]),
        Case(name: "conv_1x1", seed: 105, layers: [conv("op", 8, 5, 1)], xShape: [2, 8, 4, 3]),
        Case(name: "conv_1x1_s2", seed: 106, layers: [conv("op", 4, 6, 1, stride: 2)], xShape: [2, 4, 5, 5]),
        Case(name: "bn_eval", seed: 107, layers: [conv("id", 5, 5, 1, bn: "op")], xShape: [3, 5, 4, 3], xScale: 2, identity: 5),
        Case(name: "bn_train", seed: 108, layers: [conv("id", 5, 5, 1, bn: "op")], xShape: [3, 5, 4, 3], xScale: 2, train: true,
             identity: 5),
        Case(name: "relu", seed: 109, layers: [conv("id", 3, 3, 1, activation: .relu)], xShape: [2, 3, 4, 4], xScale: 3, identity: 3),
        Case(name: "relu6", seed: 110, layers: [conv("id", 3, 3, 1, activation: .relu6)], xShape: [2, 3, 4, 4], xScale: 8, identity: 3),
        Case(name: "maxpool", seed: 111, layers: [.maxPool(kernel: 3, stride: 2, padding: 1)], xShape: [2, 3, 7, 6]),
        Case(name: "gap", seed: 112, layers: [.globalAvgPool], xShape: [2, 4, 3, 5]),
        Case(name: "linear", seed: 113, layers: [.linear(name: "op", inFeatures: 7, outFeatures: 4, activation: .none)], xShape: [3, 7]),
        Case(name: "mbconv_skip", seed: 114, layers: mbconv("op", 4, 4, expand: 6, kernel: 3, stride: 1), xShape: [2, 4, 6, 6]),
        Case(name: "mbconv_s2", seed: 115, layers: mbconv("op", 4, 8, expand: 6, kernel: 5, stride: 2), xShape: [2, 4, 8, 8]),
        Case(name: "basic_ds", seed: 116, layers: [resnetBlock("op", 4, 8, stride: 2, bottleneck: false)], xShape: [2, 4, 6, 6]),
        Case(name: "bottleneck_ds", seed: 117, layers: [resnetBlock("op", 8, 4, stride: 2, bottleneck: true)], xShape: [2, 8, 6, 6]),
    ] }

    static func inputShape(_ dims: [Int]) -> ActivationShape {
        dims.count == 4 ? .map(channels: dims[1], height: dims[2], width: dims[3]) : .vector(dims[1])
    }

    /// Builds the case's graph, input and upstream gradient exactly as the script does, and runs forward.
    static func prepare(_ c: Case) throws -> (graph: TrainingGraph, x: [Float], y: [Float], dy: [Float], state: StateDict) {
        var rng = SplitMix64(seed: c.seed)
        var fixed: [String: [Float]] = [:]
        if let n = c.identity { fixed["id.weight"] = (0..<(n * n)).map { $0 % (n + 1) == 0 ? 1 : 0 } }
        let specs = c.layers.flatMap(Architecture.parameters(of:))
        var stateRng = rng
        let state = TrainingFixtures.fill(specs, &stateRng, fixed: fixed)
        let graph = try TrainingFixtures.graph(c.layers, input: inputShape(c.xShape), &rng, fixed: fixed)
        graph.training = c.train
        graph.updatesBatchStatistics = c.train
        let batch = c.xShape[0]
        let x = TrainingFixtures.symmetric(&rng, c.xShape.reduce(1, *), c.xScale)
        let y = graph.forward(x, batch: batch)
        let dy = TrainingFixtures.symmetric(&rng, y.count, 1)
        return (graph, x, y, dy, state)
    }

    func testAgainstPyTorch() throws {
        for c in Self.cases {
            let (graph, _, y, dy, _) = try Self.prepare(c)
            let dx = graph.backward(dy)!
            TrainingFixtures.assertClose(y, try TrainingFixtures.load(c.name + ".y"), tol: 1e-4, "\(c.name) forward")
            TrainingFixtures.assertClose(dx, try TrainingFixtures.load(c.name + ".dx"), tol: 1e-4, "\(c.name) dx")
            let excluded: Set<String> = c.identity == nil ? [] : ["id.weight"]
            let grads = TrainingFixtures.flatGrads(graph, excluding: excluded)
            if !grads.isEmpty {
                TrainingFixtures.assertClose(grads, try TrainingFixtures.load(c.name + ".grads"), tol: 1e-4, "\(c.name) parameter gradients")
            }
            if c.train {
                let stats = graph.parameters.filter { !$0.isTrainable }.sorted { $0.name < $1.name }.flatMap { $0.value }
                TrainingFixtures.assertClose(stats, try TrainingFixtures.load(c.name + ".stats"), tol: 1e-5, "\(c.name) running stats")
            }
        }
    }

    func testCrossEntropyAgainstPyTorch() throws {
        var rng = SplitMix64(seed: 118)
        let logits = TrainingFixtures.symmetric(&rng, 20, 3)
        let (loss, grad) = try SoftmaxCrossEntropy.lossAndGradient(logits: logits, classes: 5, labels: [0, 4, 2, 1])
        TrainingFixtures.assertClose([Float(loss)], try TrainingFixtures.load("xent.y"), tol: 1e-6, "cross-entropy loss")
        TrainingFixtures.assertClose(grad, try TrainingFixtures.load("xent.dx"), tol: 1e-5, "cross-entropy gradient")
    }

    /// L = Σ y·dy, so dL/dx and dL/dθ are what `backward(dy)` returns; checked on up to 24 coordinates of the
    /// input and of every trainable parameter (after each probe of a parameter, the graph repacks it).
    func testFiniteDifferences() throws {
        for c in Self.cases {
            let (graph, x, _, dy, state) = try Self.prepare(c)
            let dx = graph.backward(dy)!
            let buffers = graph.parameters.filter { !$0.isTrainable }
            func loss(_ input: [Float]) -> Double {
                // Batch statistics move the running ones on every forward: restore them so L is one function.
                for p in buffers { p.value = try! state.get(p.name).values }
                let y = graph.forward(input, batch: c.xShape[0])
                return zip(y, dy).reduce(0) { $0 + Double($1.0) * Double($1.1) }
            }
            func check(_ analytic: Float, _ what: String, _ lossAt: (Float) -> Double) {
                var best = Float.infinity, shown: Float = 0
                for h: Float in [1e-3, 2.5e-4, 6e-5] {
                    let fd = Float((lossAt(h) - lossAt(-h)) / Double(2 * h))
                    if abs(fd - analytic) < best { best = abs(fd - analytic); shown = fd }
                }
                XCTAssertLessThanOrEqual(best, 3e-3 + 3e-2 * abs(analytic), "\(c.name) \(what): finite difference \(shown) vs analytic \(analytic)")
            }
            for i in probeIndices(x.count) {
                check(dx[i], "dx[\(i)]") { h in
                    var xp = x
                    xp[i] += h
                    return loss(xp)
                }
            }
            for p in graph.trainableParameters where p.name != "id.weight" {
                let analytic = p.grad
                for i in probeIndices(p.value.count) {
                    check(analytic[i], "\(p.name)[\(i)]") { h in
                        let v = p.value[i]
                        defer { p.value[i] = v; graph.parametersDidChange() }
                        p.value[i] = v + h
                        graph.parametersDidChange()
                        return loss(x)
                    }
                }
            }
        }
    }

    private func probeIndices(_ n: Int) -> [Int] {
        n <= 24 ? Array(0..<n) : (0..<24).map { ($0 * 7919) % n }
    }
}
