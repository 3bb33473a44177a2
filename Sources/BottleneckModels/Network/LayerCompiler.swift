import BottleneckTensor

/// A layer with its weights prepared for the kernels.
enum CompiledLayer {
    case conv(Conv2D)
    case depthwise(DepthwiseConv2D)
    case maxPool(kernel: Int, stride: Int, padding: Int)
    case avgPool(kernel: Int, stride: Int, padding: Int, countIncludePad: Bool)
    case adaptiveAvgPool(height: Int, width: Int)
    case globalAvgPool
    case linear(Linear)
    /// The body's last layer is a convolution compiled with the block's activation; the skip tensor
    /// is added in its output pass.
    indirect case residual(body: [CompiledLayer], shortcut: [CompiledLayer]?)
    /// An MBConv block run as one fused kernel; `unfused` is the same block as separate layers, run
    /// instead when fusion does not pay (thin bands at small batch) or is switched off.
    indirect case invertedResidual(InvertedResidual, unfused: [CompiledLayer])
    /// Branches run on the same input, outputs concatenated on channels (`channels` in total).
    indirect case concat(branches: [[CompiledLayer]], channels: Int)

    /// The layers this one is made of (a residual block's body and shortcut; an MBConv block's
    /// unfused form, which shares the fused kernel's weights).
    var children: [CompiledLayer] {
        switch self {
        case let .residual(body, shortcut): body + (shortcut ?? [])
        case let .invertedResidual(_, unfused): unfused
        case let .concat(branches, _): Array(branches.joined())
        default: []
        }
    }

    /// Bytes of convolution weights this layer holds (Winograd layers count their transformed weights,
    /// and layers holding both kinds count both).
    var convolutionWeightBytes: Int {
        switch self {
        case let .conv(c):
            (c.winogradWeightFloats + (c.usesDirect ? c.kernelH * c.kernelW * c.inChannels * c.outChannels : 0))
                * MemoryLayout<Float>.size
        case let .depthwise(d): d.kernelH * d.kernelW * d.channels * MemoryLayout<Float>.size
        default: children.reduce(0) { $0 + $1.convolutionWeightBytes }
        }
    }

    /// Whether this layer is, or contains, a fully connected layer.
    var containsLinear: Bool {
        if case .linear = self { return true }
        return children.contains { $0.containsLinear }
    }
}

/// Compiles a specification into runnable layers: reads each tensor once from a `WeightSource`, checks
/// its shape and values, folds BatchNorm into the convolution before it, repacks weights for the
/// kernels `options` selects (Winograd or direct, huge pages) and fuses MBConv runs. It owns no state
/// beyond its inputs; the layers it returns own their packed weights.
struct LayerCompiler {
    let source: WeightSource
    let sourceName: String
    /// Engine settings the layers are built for (Winograd or not, huge pages).
    let options: EngineOptions

    /// Compiles stages `0...last` of `architecture`: one array of layers per stage, each
    /// [expand →] depthwise → project run fused (`fusingInvertedResiduals`).
    /// - Throws: `ModelLoadingError` for a missing key, a shape mismatch or invalid values.
    func compileStages(of architecture: Architecture, through last: Int) throws -> [[CompiledLayer]] {
        var compiled: [[CompiledLayer]] = []
        var shape = ActivationShape.map(channels: 3, height: architecture.inputSize, width: architecture.inputSize)
        for stage in architecture.stages[0...last] {
            var layers: [CompiledLayer] = []
            for spec in stage.layers {
                layers.append(try compile(spec, input: shape, fusedActivation: nil))
                shape = Architecture.infer(spec, shape).shape
            }
            compiled.append(LayerCompiler.fusingInvertedResiduals(layers))
        }
        return compiled
    }

    /// Replaces each [expand →] depthwise → project run of layers (with or without a skip connection)
    /// by a fused `InvertedResidual`, keeping the layers for when fusion does not pay.
    static func fusingInvertedResiduals(_ layers: [CompiledLayer]) -> [CompiledLayer] {
        /// The fused block for `run` if it is [expand,] depthwise, project.
        func block(_ run: ArraySlice<CompiledLayer>, addsInput: Bool) -> InvertedResidual? {
            let layers = Array(run)
            guard layers.count == 2 || layers.count == 3, case let .conv(p) = layers.last!, InvertedResidual.isPointwise(p),
                  case let .depthwise(d) = layers[layers.count - 2] else { return nil }
            if layers.count == 2 { return InvertedResidual(expand: nil, depthwise: d, project: p, addsInput: addsInput) }
            guard case let .conv(e) = layers[0], InvertedResidual.isPointwise(e) else { return nil }
            return InvertedResidual(expand: e, depthwise: d, project: p, addsInput: addsInput)
        }
        var result: [CompiledLayer] = []
        var i = 0
        while i < layers.count {
            if case let .residual(body, nil) = layers[i], let fused = block(body[...], addsInput: true) {
                result.append(.invertedResidual(fused, unfused: [layers[i]]))
                i += 1
            } else if let (fused, n) = [3, 2].lazy.compactMap({ n in
                          i + n <= layers.count ? block(layers[i..<(i + n)], addsInput: false).map { ($0, n) } : nil }).first {
                result.append(.invertedResidual(fused, unfused: Array(layers[i..<(i + n)])))
                i += n
            } else {
                result.append(layers[i])
                i += 1
            }
        }
        return result
    }

    /// The tensor `key`, which must have exactly `shape` and finite values (`WeightValidation`).
    func tensor(_ key: String, _ shape: [Int]) throws -> [Float] {
        guard let found = source.shape(of: key) else { throw ModelLoadingError.missingKey(key, source: sourceName) }
        // PyTorch accepts a 0-d/1-element mismatch nowhere here; compare exactly.
        guard found == shape else { throw ModelLoadingError.shapeMismatch(key: key, expected: shape, found: found, source: sourceName) }
        let values = try source.load(key)
        guard values.count == shape.reduce(1, *) else {
            throw ModelLoadingError.shapeMismatch(key: key, expected: shape, found: [values.count], source: sourceName)
        }
        try WeightValidation.check(values, key: key, source: sourceName)
        return values
    }

    /// Folded (scale, shift) of a BN, with an optional preceding conv bias merged into the shift.
    func fold(_ bn: BatchNormSpec?, channels c: Int, convBias: [Float]?) throws -> (scale: [Float]?, shift: [Float]?) {
        guard let bn else { return (nil, convBias) }
        let keys: (beta: String, mean: String, variance: String) =
            bn.keys == .torch ? (".bias", ".running_mean", ".running_var") : (".beta", ".mean", ".var")
        let gamma = bn.keys == .torch ? try tensor(bn.name + ".weight", [c]) : [Float](repeating: 1, count: c)
        var (scale, shift) = foldBatchNorm(gamma: gamma, beta: try tensor(bn.name + keys.beta, [c]),
                                           mean: try tensor(bn.name + keys.mean, [c]),
                                           variance: try tensor(bn.name + keys.variance, [c]), eps: bn.eps)
        if let convBias { for i in 0..<c { shift[i] += convBias[i] * scale[i] } }
        return (scale, shift)
    }

    /// Compiles one layer whose input has `input` shape; `fusedActivation` overrides the layer's own
    /// activation (a residual block's closing convolution applies the block's).
    func compile(_ spec: LayerSpec, input: ActivationShape, fusedActivation: Activation?) throws -> CompiledLayer {
        switch spec {
        case let .conv(name, cin, cout, k, stride, padding, hasBias, bn, activation, kernelWidth):
            let kw = kernelWidth ?? k
            let w = try tensor(name + ".weight", [cout, cin, k, kw])
            let bias = hasBias ? try tensor(name + ".bias", [cout]) : nil
            let (scale, shift) = try fold(bn, channels: cout, convBias: bias)
            var expected: (height: Int, width: Int)? = nil
            if case let .map(_, h, wd) = input { expected = (h, wd) }
            return .conv(w.withUnsafeBufferPointer {
                Conv2D(weightOIHW: $0.baseAddress!, outChannels: cout, inChannels: cin, kernelH: k, kernelW: kw, stride: stride,
                       padding: padding, channelScale: scale, bias: shift, activation: fusedActivation ?? activation,
                       expectedInput: expected, options: options)
            })
        case let .depthwise(name, c, k, stride, padding, bn, activation):
            let w = try tensor(name + ".weight", [c, 1, k, k])
            let (scale, shift) = try fold(bn, channels: c, convBias: nil)
            return .depthwise(w.withUnsafeBufferPointer {
                DepthwiseConv2D(weightC1HW: $0.baseAddress!, channels: c, kernelH: k, kernelW: k, stride: stride,
                                padding: padding, channelScale: scale, bias: shift, activation: fusedActivation ?? activation)
            })
        case let .maxPool(k, s, p):
            return .maxPool(kernel: k, stride: s, padding: p)
        case let .avgPool(k, s, p, countIncludePad):
            return .avgPool(kernel: k, stride: s, padding: p, countIncludePad: countIncludePad)
        case let .concat(branches):
            let compiled = try branches.map { branch in
                try Architecture.mapSequence(branch, input: input) { l, shape, _ in try compile(l, input: shape, fusedActivation: nil) }
            }
            guard case let .map(channels, _, _) = Architecture.infer(spec, input).shape else {
                preconditionFailure("a concatenation outputs a map")
            }
            return .concat(branches: compiled, channels: channels)
        case let .adaptiveAvgPool(h, w):
            return .adaptiveAvgPool(height: h, width: w)
        case .globalAvgPool:
            return .globalAvgPool
        case let .linear(name, inF, outF, activation):
            let w = try tensor(name + ".weight", [outF, inF])
            let b = try tensor(name + ".bias", [outF])
            var permutation: [Int]? = nil
            if case let .map(c, h, wd) = input, h * wd > 1 {
                // Our flatten order is (y, x, c); torch's is (c, y, x).
                var perm = [Int](repeating: 0, count: inF)
                for y in 0..<h { for x in 0..<wd { for ch in 0..<c { perm[(y * wd + x) * c + ch] = ch * h * wd + y * wd + x } } }
                permutation = perm
            }
            return .linear(w.withUnsafeBufferPointer {
                Linear(weight: $0.baseAddress!, outFeatures: outF, inFeatures: inF, bias: b, activation: activation,
                       columnPermutation: permutation)
            })
        case let .residual(body, shortcut, activation):
            let compiledBody = try Architecture.mapSequence(body, input: input) { l, shape, isLast in
                if isLast, case .conv = l {} else if isLast {
                    preconditionFailure("residual body must end with a convolution")
                }
                return try compile(l, input: shape, fusedActivation: isLast ? activation : nil)
            }
            let compiledShortcut = try shortcut.map { layers in
                try Architecture.mapSequence(layers, input: input) { l, shape, _ in try compile(l, input: shape, fusedActivation: nil) }
            }
            return .residual(body: compiledBody, shortcut: compiledShortcut)
        }
    }
}
