import BottleneckTensor
import Foundation

/// A learnable tensor or buffer of a training graph, named and shaped as in the PyTorch state dict.
public final class Parameter {
    /// State-dict key, e.g. `_blocks.15._bn1.weight`.
    public let name: String
    /// Shape as PyTorch stores it (conv `[Cout, Cin, kh, kw]`, linear `[out, in]`, BN `[C]`).
    public let shape: [Int]
    /// Current values, in PyTorch's layout.
    public var value: [Float]
    /// Gradient accumulated by backward passes since the last `zeroGrad` (empty for buffers).
    public var grad: [Float]
    /// Whether an optimiser updates it (false for BatchNorm running statistics).
    public let isTrainable: Bool

    /// A parameter holding `value` (zeros when nil). Precondition: `value` has `shape`'s element count.
    public init(name: String, shape: [Int], value: [Float]? = nil, trainable: Bool = true) {
        let n = shape.reduce(1, *)
        precondition(value == nil || value!.count == n, "Parameter \(name): \(value!.count) values for shape \(shape)")
        self.name = name
        self.shape = shape
        self.value = value ?? [Float](repeating: 0, count: n)
        self.grad = trainable ? [Float](repeating: 0, count: n) : []
        self.isTrainable = trainable
    }

    /// Sets the gradient to zero.
    public func zeroGrad() {
        if !grad.isEmpty { grad.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
    }
}

/// The differentiable form of a run of layers of an `Architecture`, compiled from the same `LayerSpec`s
/// as `Network` and run on the same NHWC kernels: forward passes are `Conv2D` (packed GEMM or Winograd,
/// BN folded, bias/residual/activation fused), `DepthwiseConv2D`, `Pooling2D` and `Linear`; each layer
/// keeps what its backward pass (`Backward`, `ConvolutionInputGradient`) needs.
///
/// BatchNorm is frozen by default (evaluation mode: running statistics, folded into the convolution
/// before it); its affine terms still train. With `updatesBatchStatistics` and `training` on, it
/// normalises with batch statistics and updates the running ones (`BatchNormSpec.momentum`); the
/// convolution then runs unfolded. Parameters keep PyTorch's layouts and keys, so `parameters` is a
/// state dict of the trained layers; after changing their values call `parametersDidChange()` so the
/// kernels repack them. Not thread-safe; the kernels use `options.threads`.
public final class TrainingGraph {
    /// Every parameter and buffer, in state-dict order (the head's last).
    public let parameters: [Parameter]
    /// The parameters an optimiser updates, in state-dict order.
    public var trainableParameters: [Parameter] { parameters.filter(\.isTrainable) }
    /// Per-image input shape (PyTorch layout).
    public let inputShape: ActivationShape
    /// Per-image output shape of the layers before the head (PyTorch layout).
    public let featureShape: ActivationShape
    /// Per-image output shape (`featureShape`, or the head's outputs).
    public let outputShape: ActivationShape
    /// Engine settings of the kernels.
    public let options: EngineOptions
    /// Training behaviour (batch statistics when `updatesBatchStatistics`) or evaluation behaviour.
    public var training = true
    /// Whether BatchNorm uses and updates batch statistics while `training`.
    public var updatesBatchStatistics = false
    /// Whether `backward` returns the gradient with respect to the input (off: the first layer skips it).
    public var computesInputGradient = false

    private let body: [GraphNode]
    private let head: LinearNode?
    private var lastBatch = 0
    private var lastRanHead = false

    /// Compiles `layers` (whose input has per-image shape `input`) with weights from `weights`, and, when
    /// `head` is given, appends a new zero-initialised linear layer `<head.name>.weight/.bias` from the
    /// layers' (vector) output to `head.outputs` values.
    /// - Throws: `ModelLoadingError` for a missing key, a shape mismatch or invalid values (naming
    ///   `sourceName`); `ModelLoadingError.invalidValues` when a head follows a spatial output.
    init(layers: [LayerSpec], input: ActivationShape, weights: WeightSource, sourceName: String,
         head: (name: String, outputs: Int)?, options: EngineOptions) throws {
        let compiler = LayerCompiler(source: weights, sourceName: sourceName, options: options)
        body = try GraphNode.compileSequence(layers, input: input, compiler: compiler)
        let shape = Architecture.outputShape(of: layers, input: input)
        inputShape = input
        featureShape = shape
        self.options = options
        if let head {
            guard case let .vector(features) = shape else {
                throw ModelLoadingError.invalidValues(key: head.name + ".weight",
                                                      reason: "a classifier head needs vector features, the layers output \(shape)",
                                                      source: sourceName)
            }
            let node = LinearNode(weight: Parameter(name: head.name + ".weight", shape: [head.outputs, features]),
                                  bias: Parameter(name: head.name + ".bias", shape: [head.outputs]), activation: .none)
            self.head = node
            outputShape = .vector(head.outputs)
        } else {
            self.head = nil
            outputShape = shape
        }
        parameters = body.flatMap(\.parameters) + (self.head?.parameters ?? [])
    }

    /// The trainable form of stages `stages` of `architecture` for `inputSize`-square images (default: its
    /// native resolution), see `init`.
    public convenience init(architecture: Architecture, stages: ClosedRange<Int>, weights: WeightSource,
                            sourceName: String = "weights", head: (name: String, outputs: Int)? = nil,
                            inputSize: Int? = nil, options: EngineOptions = .default) throws {
        let size = inputSize ?? architecture.inputSize
        let input = stages.lowerBound == 0 ? ActivationShape.map(channels: 3, height: size, width: size)
            : architecture.stageShapes(height: size, width: size)[stages.lowerBound - 1]
        try self.init(layers: architecture.stages[stages].flatMap(\.layers), input: input, weights: weights,
                      sourceName: sourceName, head: head, options: options)
    }

    /// A graph of a head alone on `features`-long vectors (fine-tuning with no trainable stage).
    public convenience init(headOn features: Int, name: String, outputs: Int, options: EngineOptions = .default) throws {
        try self.init(layers: [], input: .vector(features), weights: EmptyWeights(), sourceName: "head",
                      head: (name, outputs), options: options)
    }

    /// The head's weight `[outputs, features]` and bias, when there is a head.
    public var headParameters: (weight: Parameter, bias: Parameter)? { head.map { ($0.weight, $0.bias) } }

    /// Runs the graph on `batch` inputs in PyTorch layout (`[N][C][H][W]` or `[N][D]`) and returns the
    /// output in PyTorch layout, keeping what `backward` needs. `includeHead: false` stops before the head
    /// (the features). Precondition: `input.count == batch * inputShape.count`.
    public func forward(_ input: [Float], batch: Int, includeHead: Bool = true) -> [Float] {
        precondition(input.count == batch * inputShape.count, "TrainingGraph.forward: \(input.count) floats for \(batch) x \(inputShape)")
        let mode = GraphMode(batchStatistics: training && updatesBatchStatistics, options: options)
        var x = Activations(pytorch: input, batch: batch, shape: inputShape, options: options)
        for node in body { x = node.forward(x, mode) }
        lastBatch = batch
        lastRanHead = includeHead && head != nil
        if lastRanHead, let head { x = head.forward(x, mode) }
        return x.pytorchLayout(options: options)
    }

    /// Accumulates every trainable parameter's gradient for `outputGradient` (dLoss/dOutput of the last
    /// `forward`, PyTorch layout) and returns dLoss/dInput (PyTorch layout) when `computesInputGradient`.
    public func backward(_ outputGradient: [Float]) -> [Float]? {
        let shape = lastRanHead ? outputShape : featureShape
        precondition(outputGradient.count == lastBatch * shape.count, "TrainingGraph.backward: gradient does not match the last forward")
        var g: Activations? = Activations(pytorch: outputGradient, batch: lastBatch, shape: shape, options: options)
        if lastRanHead, let head { g = head.backward(g!, needsInputGradient: !body.isEmpty || computesInputGradient) }
        for (i, node) in body.enumerated().reversed() {
            g = node.backward(g!, needsInputGradient: i > 0 || computesInputGradient)
        }
        return computesInputGradient ? g?.pytorchLayout(options: options) : nil
    }

    /// Repacks the kernels' weights from the parameters' current values (after an optimiser step or
    /// any other change of `Parameter.value`).
    public func parametersDidChange() {
        for node in body { node.invalidate() }
        head?.invalidate()
    }

    /// Zeroes every trainable parameter's gradient.
    public func zeroGrad() { for p in trainableParameters { p.zeroGrad() } }
}

/// A weight source with no tensors.
struct EmptyWeights: WeightSource {
    var keys: [String] { [] }
    func shape(of key: String) -> [Int]? { nil }
    func load(_ key: String) throws -> [Float] { throw ModelLoadingError.missingKey(key, source: "head") }
}

/// How a forward pass runs.
struct GraphMode {
    /// BatchNorm normalises with (and updates from) batch statistics.
    let batchStatistics: Bool
    let options: EngineOptions
}

/// An NHWC batch of activations (a vector batch has height = width = 1 and `isVector`).
struct Activations {
    var batch: Int, height: Int, width: Int, channels: Int
    var isVector: Bool
    var values: [Float]

    init(batch: Int, height: Int, width: Int, channels: Int, isVector: Bool = false, values: [Float]? = nil) {
        self.batch = batch; self.height = height; self.width = width; self.channels = channels; self.isVector = isVector
        self.values = values ?? [Float](repeating: 0, count: batch * height * width * channels)
    }

    /// Rows of the NHWC matrix (`batch * height * width`).
    var pixels: Int { batch * height * width }

    /// From PyTorch layout.
    init(pytorch: [Float], batch: Int, shape: ActivationShape, options: EngineOptions) {
        switch shape {
        case let .vector(d):
            self.init(batch: batch, height: 1, width: 1, channels: d, isVector: true, values: pytorch)
        case let .map(c, h, w):
            self.init(batch: batch, height: h, width: w, channels: c)
            pytorch.withUnsafeBufferPointer { src in values.withUnsafeMutableBufferPointer { dst in
                Layout.nchwToNhwc(src.baseAddress!, batch: batch, channels: c, height: h, width: w, into: dst.baseAddress!,
                                  options: options)
            } }
        }
    }

    /// In PyTorch layout.
    func pytorchLayout(options: EngineOptions) -> [Float] {
        if isVector || (height == 1 && width == 1) { return values }
        var out = [Float](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { src in out.withUnsafeMutableBufferPointer { dst in
            Layout.nhwcToNchw(src.baseAddress!, batch: batch, height: height, width: width, channels: channels,
                              into: dst.baseAddress!, options: options)
        } }
        return out
    }

    /// Same size and layout, zeros.
    func zeros() -> Activations { Activations(batch: batch, height: height, width: width, channels: channels, isVector: isVector) }
}

/// One layer (or block) of a training graph.
class GraphNode {
    /// Parameters and buffers in state-dict order.
    var parameters: [Parameter] { [] }
    /// Runs the layer on `x`, keeping what `backward` needs.
    func forward(_ x: Activations, _ mode: GraphMode) -> Activations { fatalError("abstract") }
    /// Accumulates parameter gradients for `dy` (dLoss/dOutput of the last forward) and returns dLoss/dInput
    /// when `needsInputGradient`.
    func backward(_ dy: Activations, needsInputGradient: Bool) -> Activations? { fatalError("abstract") }
    /// Drops kernels built from parameter values (rebuilt by the next forward).
    func invalidate() {}

    /// The node for `spec` on inputs of shape `input`, its tensors read (and checked) by `compiler`.
    static func compile(_ spec: LayerSpec, input: ActivationShape, compiler: LayerCompiler,
                        activation override: Activation? = nil) throws -> GraphNode {
        switch spec {
        case let .conv(name, cin, cout, k, stride, padding, hasBias, bn, activation, kernelWidth):
            let kw = kernelWidth ?? k
            let shape = ConvolutionShape(inChannels: cin, outChannels: cout, kernelH: k, kernelW: kw, stride: stride, padding: padding)
            return ConvolutionNode(shape: shape, depthwise: false,
                                   weight: Parameter(name: name + ".weight", shape: [cout, cin, k, kw],
                                                     value: try compiler.tensor(name + ".weight", [cout, cin, k, kw])),
                                   bias: hasBias ? Parameter(name: name + ".bias", shape: [cout],
                                                             value: try compiler.tensor(name + ".bias", [cout])) : nil,
                                   batchNorm: try bn.map { try BatchNormParameters($0, channels: cout, compiler: compiler) },
                                   activation: override ?? activation)
        case let .depthwise(name, c, k, stride, padding, bn, activation):
            let shape = ConvolutionShape(inChannels: c, outChannels: c, kernelH: k, kernelW: k, stride: stride, padding: padding,
                                         isDepthwise: true)
            return ConvolutionNode(shape: shape, depthwise: true,
                                   weight: Parameter(name: name + ".weight", shape: [c, 1, k, k],
                                                     value: try compiler.tensor(name + ".weight", [c, 1, k, k])),
                                   bias: nil, batchNorm: try bn.map { try BatchNormParameters($0, channels: c, compiler: compiler) },
                                   activation: override ?? activation)
        case let .maxPool(k, s, p):
            return PoolNode(.max(kernel: k, stride: s, padding: p))
        case let .avgPool(k, s, p, countIncludePad):
            return PoolNode(.average(kernel: k, stride: s, padding: p, countIncludePad: countIncludePad))
        case let .adaptiveAvgPool(h, w):
            return PoolNode(.adaptive(height: h, width: w))
        case .globalAvgPool:
            return PoolNode(.global)
        case let .linear(name, inF, outF, activation):
            return LinearNode(weight: Parameter(name: name + ".weight", shape: [outF, inF],
                                                value: try compiler.tensor(name + ".weight", [outF, inF])),
                              bias: Parameter(name: name + ".bias", shape: [outF], value: try compiler.tensor(name + ".bias", [outF])),
                              activation: activation)
        case let .residual(body, shortcut, activation):
            let nodes = try Architecture.mapSequence(body, input: input) { layer, shape, isLast in
                try compile(layer, input: shape, compiler: compiler, activation: isLast ? activation : nil)
            }
            // As in `Network`: the skip tensor is added in the closing dense convolution's output pass.
            guard let closing = nodes.last as? ConvolutionNode, !closing.depthwise else {
                preconditionFailure("a residual body must end with a dense convolution")
            }
            closing.addsResidual = true
            return ResidualNode(body: nodes, shortcut: try shortcut.map { try compileSequence($0, input: input, compiler: compiler) })
        case let .concat(branches):
            return ConcatNode(branches: try branches.map { try compileSequence($0, input: input, compiler: compiler) })
        }
    }

    static func compileSequence(_ layers: [LayerSpec], input: ActivationShape, compiler: LayerCompiler) throws -> [GraphNode] {
        try Architecture.mapSequence(layers, input: input) { layer, shape, _ in try compile(layer, input: shape, compiler: compiler) }
    }
}

/// Runs `nodes` forward in order.
func forwardSequence(_ nodes: [GraphNode], _ x: Activations, _ mode: GraphMode) -> Activations {
    nodes.reduce(x) { $1.forward($0, mode) }
}

/// Runs `nodes` backward in reverse; the first node computes an input gradient only when `needsInputGradient`.
func backwardSequence(_ nodes: [GraphNode], _ dy: Activations, needsInputGradient: Bool) -> Activations? {
    var g: Activations? = dy
    for (i, node) in nodes.enumerated().reversed() { g = node.backward(g!, needsInputGradient: i > 0 || needsInputGradient) }
    return g
}

/// A BatchNorm's tensors: gamma (absent for shift-only batch norms, whose gamma is 1), beta, running
/// mean and variance.
struct BatchNormParameters {
    let gamma: Parameter?, beta: Parameter, mean: Parameter, variance: Parameter
    let eps: Float, momentum: Float

    init(_ spec: BatchNormSpec, channels c: Int, compiler: LayerCompiler) throws {
        func load(_ suffix: String, trainable: Bool) throws -> Parameter {
            Parameter(name: spec.name + suffix, shape: [c], value: try compiler.tensor(spec.name + suffix, [c]), trainable: trainable)
        }
        switch spec.keys {
        case .torch:
            gamma = try load(".weight", trainable: true)
            beta = try load(".bias", trainable: true)
            mean = try load(".running_mean", trainable: false)
            variance = try load(".running_var", trainable: false)
        case .shiftOnly:
            gamma = nil
            beta = try load(".beta", trainable: true)
            mean = try load(".mean", trainable: false)
            variance = try load(".var", trainable: false)
        }
        eps = spec.eps
        momentum = spec.momentum
    }

    var parameters: [Parameter] { (gamma.map { [$0] } ?? []) + [beta, mean, variance] }

    func gammaValue(_ c: Int) -> Float { gamma?.value[c] ?? 1 }
}

/// A dense or depthwise convolution with its optional bias, BatchNorm and activation, and (closing a
/// residual block) the skip tensor added before the activation.
final class ConvolutionNode: GraphNode {
    let shape: ConvolutionShape
    let depthwise: Bool
    let weight: Parameter
    let bias: Parameter?
    let batchNorm: BatchNormParameters?
    let activation: Activation
    /// Set when the node closes a residual block: `forward` adds the skip tensor, `backward` keeps the
    /// gradient at the sum in `sumGradient`.
    var addsResidual = false
    /// dLoss/d(pre-activation sum) of the last backward (residual closers only).
    var sumGradient: Activations?

    // Kernels for the current parameter values and mode (nil: to build).
    private var dense: Conv2D?
    private var depthwiseKernel: DepthwiseConv2D?
    /// The depthwise filter the forward multiplies by, `[kh][kw][C]` (scale folded in evaluation mode).
    private var depthwiseTaps: [Float] = []
    private var inputGradient: ConvolutionInputGradient?
    private var builtForBatchStatistics = false
    /// Per output channel: the scale the forward multiplies the raw convolution by (folded BN), or nil.
    private var scale: [Float]?

    // Saved by forward.
    private var input: Activations?
    private var output: Activations?
    /// The raw convolution output and its batch statistics (batch-statistics mode only).
    private var raw: [Float] = []
    private var batchMean: [Float] = [], batchInverseStd: [Float] = []
    private var ranBatchStatistics = false
    /// Engine settings of the last forward (the backward runs with them).
    private var lastOptions = EngineOptions.default

    init(shape: ConvolutionShape, depthwise: Bool, weight: Parameter, bias: Parameter?, batchNorm: BatchNormParameters?,
         activation: Activation) {
        self.shape = shape; self.depthwise = depthwise; self.weight = weight; self.bias = bias
        self.batchNorm = batchNorm; self.activation = activation
    }

    override var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) + (batchNorm?.parameters ?? []) }

    override func invalidate() { dense = nil; depthwiseKernel = nil; inputGradient = nil }

    private var taps: Int { shape.kernelH * shape.kernelW }

    /// 1/sqrt(running variance + eps) per channel.
    private var runningInverseStd: [Float] {
        guard let bn = batchNorm else { return [] }
        return bn.variance.value.map { 1 / ($0 + bn.eps).squareRoot() }
    }

    /// Builds the forward kernel: folded (scale, shift) in evaluation mode, the raw convolution plus its
    /// bias in batch-statistics mode (normalisation then runs separately).
    private func build(batchStatistics: Bool, options: EngineOptions) {
        let c = shape.outChannels
        var shift = bias?.value
        scale = nil
        if let bn = batchNorm, !batchStatistics {
            let inv = runningInverseStd
            let s = (0..<c).map { bn.gammaValue($0) * inv[$0] }
            shift = (0..<c).map { bn.beta.value[$0] - bn.mean.value[$0] * s[$0] + (bias?.value[$0] ?? 0) * s[$0] }
            scale = s
        }
        let fused: Activation = batchStatistics && batchNorm != nil ? .none : activation
        weight.value.withUnsafeBufferPointer { w in
            if depthwise {
                depthwiseKernel = DepthwiseConv2D(weightC1HW: w.baseAddress!, channels: c, kernelH: shape.kernelH,
                                                  kernelW: shape.kernelW, stride: shape.stride, padding: shape.padding,
                                                  channelScale: scale, bias: shift, activation: fused)
                var t = [Float](repeating: 0, count: taps * c)
                for ch in 0..<c { for k in 0..<taps { t[k * c + ch] = w[ch * taps + k] * (scale?[ch] ?? 1) } }
                depthwiseTaps = t
            } else {
                dense = Conv2D(weightOIHW: w.baseAddress!, outChannels: c, inChannels: shape.inChannels, kernelH: shape.kernelH,
                               kernelW: shape.kernelW, stride: shape.stride, padding: shape.padding, channelScale: scale,
                               bias: shift, activation: fused, options: options)
            }
        }
        inputGradient = nil
        builtForBatchStatistics = batchStatistics
    }

    override func forward(_ x: Activations, _ mode: GraphMode) -> Activations {
        forward(x, residual: nil, mode)
    }

    /// The layer on `x`, plus `residual` (the skip tensor of the output's shape) before the activation.
    func forward(_ x: Activations, residual: Activations?, _ mode: GraphMode) -> Activations {
        precondition(x.channels == shape.inChannels && !x.isVector, "convolution \(weight.name): input \(x.channels) channels")
        let batchStatistics = mode.batchStatistics && batchNorm != nil
        if (depthwise ? depthwiseKernel == nil : dense == nil) || builtForBatchStatistics != batchStatistics {
            build(batchStatistics: batchStatistics, options: mode.options)
        }
        let (oh, ow) = shape.outputSize(height: x.height, width: x.width)
        var y = Activations(batch: x.batch, height: oh, width: ow, channels: shape.outChannels)
        let fusesResidual = residual != nil && !batchStatistics
        x.values.withUnsafeBufferPointer { xp in y.values.withUnsafeMutableBufferPointer { yp in
            if let depthwiseKernel {
                depthwiseKernel.forward(input: xp.baseAddress!, batch: x.batch, height: x.height, width: x.width,
                                        output: yp.baseAddress!, options: mode.options)
            } else if fusesResidual, let residual {
                residual.values.withUnsafeBufferPointer { r in
                    dense!.forward(input: xp.baseAddress!, batch: x.batch, height: x.height, width: x.width,
                                   output: yp.baseAddress!, residual: r.baseAddress!, options: mode.options)
                }
            } else {
                dense!.forward(input: xp.baseAddress!, batch: x.batch, height: x.height, width: x.width,
                               output: yp.baseAddress!, options: mode.options)
            }
        } }
        lastOptions = mode.options
        ranBatchStatistics = batchStatistics
        if batchStatistics { normaliseWithBatchStatistics(&y, residual: residual) }
        input = x
        output = y
        return y
    }

    /// Batch-statistics BatchNorm on the raw convolution output in `y` (kept in `raw`), the residual add
    /// and the activation, in place; updates the running statistics as PyTorch does (unbiased variance).
    private func normaliseWithBatchStatistics(_ y: inout Activations, residual: Activations?) {
        let bn = batchNorm!, c = shape.outChannels, m = y.pixels
        raw = y.values
        var sum = [Double](repeating: 0, count: c), squares = [Double](repeating: 0, count: c)
        raw.withUnsafeBufferPointer { z in
            for r in 0..<m { for ch in 0..<c { let v = Double(z[r * c + ch]); sum[ch] += v; squares[ch] += v * v } }
        }
        batchMean = (0..<c).map { Float(sum[$0] / Double(m)) }
        batchInverseStd = (0..<c).map { ch in
            let mean = sum[ch] / Double(m), variance = max(squares[ch] / Double(m) - mean * mean, 0)
            let unbiased = m > 1 ? variance * Double(m) / Double(m - 1) : variance
            bn.mean.value[ch] = (1 - bn.momentum) * bn.mean.value[ch] + bn.momentum * Float(mean)
            bn.variance.value[ch] = (1 - bn.momentum) * bn.variance.value[ch] + bn.momentum * Float(unbiased)
            return Float(1 / (variance + Double(bn.eps)).squareRoot())
        }
        let cap: Float = activation == .relu6 ? 6 : .infinity
        y.values.withUnsafeMutableBufferPointer { out in
            for r in 0..<m {
                for ch in 0..<c {
                    var v = (out[r * c + ch] - batchMean[ch]) * batchInverseStd[ch] * bn.gammaValue(ch) + bn.beta.value[ch]
                    if let residual { v += residual.values[r * c + ch] }
                    out[r * c + ch] = activation == .none ? v : min(max(v, 0), cap)
                }
            }
        }
    }

    override func backward(_ dy: Activations, needsInputGradient: Bool) -> Activations? {
        guard let x = input, let y = output else { preconditionFailure("convolution \(weight.name): backward without forward") }
        let options = lastOptions
        let c = shape.outChannels, m = y.pixels
        var g = dy
        y.values.withUnsafeBufferPointer { yp in g.values.withUnsafeMutableBufferPointer { gp in
            Backward.activation(activation, output: yp.baseAddress!, gradient: gp.baseAddress!, count: gp.count, options: options)
        } }
        if addsResidual { sumGradient = g }
        var gradientSum = [Float](repeating: 0, count: c)
        Backward.accumulateChannelSums(g.values, rows: m, channels: c, into: &gradientSum)
        if ranBatchStatistics, let bn = batchNorm {
            // dz = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)), xhat from the raw output.
            var gxhat = [Double](repeating: 0, count: c)
            raw.withUnsafeBufferPointer { z in g.values.withUnsafeBufferPointer { gp in
                for r in 0..<m { for ch in 0..<c {
                    gxhat[ch] += Double(gp[r * c + ch]) * Double((z[r * c + ch] - batchMean[ch]) * batchInverseStd[ch])
                } }
            } }
            for ch in 0..<c {
                bn.beta.grad[ch] += gradientSum[ch]
                bn.gamma?.grad[ch] += Float(gxhat[ch])
            }
            let meanG = gradientSum.map { $0 / Float(m) }, meanGX = gxhat.map { Float($0 / Double(m)) }
            raw.withUnsafeBufferPointer { z in g.values.withUnsafeMutableBufferPointer { gp in
                for r in 0..<m { for ch in 0..<c {
                    let xhat = (z[r * c + ch] - batchMean[ch]) * batchInverseStd[ch]
                    gp[r * c + ch] = bn.gammaValue(ch) * batchInverseStd[ch] * (gp[r * c + ch] - meanG[ch] - xhat * meanGX[ch])
                } }
            } }
            gradientSum = [Float](repeating: 0, count: c)
            Backward.accumulateChannelSums(g.values, rows: m, channels: c, into: &gradientSum)
        }
        // G = gᵀ · patches, in the kernels' layout ([Cout][kh][kw][Cin], or [kh][kw][C] for depthwise).
        let k = depthwise ? taps : shape.patchLength
        var rows = [Float](repeating: 0, count: c * k)
        var dx: Activations? = needsInputGradient ? x.zeros() : nil
        x.values.withUnsafeBufferPointer { xp in g.values.withUnsafeBufferPointer { gp in rows.withUnsafeMutableBufferPointer { rp in
            if depthwise {
                depthwiseTaps.withUnsafeBufferPointer { w in
                    if dx != nil {
                        dx!.values.withUnsafeMutableBufferPointer { d in
                            Backward.depthwise(shape, input: xp.baseAddress!, batch: x.batch, height: x.height, width: x.width,
                                               weights: w.baseAddress!, outputGradient: gp.baseAddress!,
                                               accumulateWeightGradient: rp.baseAddress!, inputGradient: d.baseAddress!,
                                               options: options)
                        }
                    } else {
                        Backward.depthwise(shape, input: xp.baseAddress!, batch: x.batch, height: x.height, width: x.width,
                                           weights: w.baseAddress!, outputGradient: gp.baseAddress!,
                                           accumulateWeightGradient: rp.baseAddress!, inputGradient: nil, options: options)
                    }
                }
            } else {
                Backward.convolutionWeightGradient(shape, input: xp.baseAddress!, batch: x.batch, height: x.height,
                                                   width: x.width, outputGradient: gp.baseAddress!,
                                                   accumulate: rp.baseAddress!, options: options)
                if dx != nil {
                    if inputGradient == nil {
                        inputGradient = weight.value.withUnsafeBufferPointer {
                            ConvolutionInputGradient(weightOIHW: $0.baseAddress!, shape: shape, channelScale: scale, options: options)
                        }
                    }
                    dx!.values.withUnsafeMutableBufferPointer { d in
                        inputGradient!.run(outputGradient: gp.baseAddress!, batch: x.batch, height: x.height, width: x.width,
                                           into: d.baseAddress!, options: options)
                    }
                }
            }
        } } }
        // rows holds the gradient of the raw convolution's weights times the folded scale's absence:
        // d(weight) = scale * rows; BN's gamma sees sum(g * xhat) = invstd * (sum(W . rows) + (b - mean) sum(g)).
        let inChannels = depthwise ? 1 : shape.inChannels, tapCount = taps, isDepthwise = depthwise
        let s = ranBatchStatistics ? nil : scale
        // Per output channel (disjoint slices of the weight gradient, in parallel): the weight gradient and
        // Σ W · rows, which BN's gamma gradient needs.
        var dots = [Double](repeating: 0, count: c)
        weight.value.withUnsafeBufferPointer { wb in weight.grad.withUnsafeMutableBufferPointer { gb in
            rows.withUnsafeBufferPointer { rb in dots.withUnsafeMutableBufferPointer { db in
                let w = wb.baseAddress!, dw = gb.baseAddress!, r = rb.baseAddress!, dot = db.baseAddress!
                let pieces = min(c, 4 * options.workers)
                TensorThreads.run(pieces: pieces, threads: options.workers) { piece in
                    for o in (piece * c / pieces)..<((piece + 1) * c / pieces) {
                        let factor = s?[o] ?? 1
                        var sum = 0.0
                        for t in 0..<tapCount {
                            for i in 0..<inChannels {
                                let g = isDepthwise ? r[t * c + o] : r[(o * tapCount + t) * inChannels + i]
                                let p = (o * inChannels + i) * tapCount + t
                                sum += Double(w[p]) * Double(g)
                                dw[p] += g * factor
                            }
                        }
                        dot[o] = sum
                    }
                }
            } }
        } }
        let inv = runningInverseStd
        for o in 0..<c {
            if let bias { bias.grad[o] += gradientSum[o] * (s?[o] ?? 1) }
            if !ranBatchStatistics, let bn = batchNorm {
                bn.beta.grad[o] += gradientSum[o]
                let centred = dots[o] + Double((bias?.value[o] ?? 0) - bn.mean.value[o]) * Double(gradientSum[o])
                bn.gamma?.grad[o] += Float(Double(inv[o]) * centred)
            }
        }
        return dx
    }
}
