import BottleneckTensor

/// Max, average, adaptive average or global average pooling (`Pooling2D`) and its backward pass.
final class PoolNode: GraphNode {
    enum Kind {
        case max(kernel: Int, stride: Int, padding: Int)
        case average(kernel: Int, stride: Int, padding: Int, countIncludePad: Bool)
        case adaptive(height: Int, width: Int)
        case global
    }

    let kind: Kind
    private var input: Activations?
    private var options = EngineOptions.default

    init(_ kind: Kind) { self.kind = kind }

    override func forward(_ x: Activations, _ mode: GraphMode) -> Activations {
        precondition(!x.isVector, "pooling needs a spatial input")
        var y: Activations
        switch kind {
        case let .max(k, s, p), let .average(k, s, p, _):
            let (oh, ow) = Pooling2D.outputSize(height: x.height, width: x.width, kernel: k, stride: s, padding: p)
            y = Activations(batch: x.batch, height: oh, width: ow, channels: x.channels)
        case let .adaptive(h, w):
            y = Activations(batch: x.batch, height: h, width: w, channels: x.channels)
        case .global:
            y = Activations(batch: x.batch, height: 1, width: 1, channels: x.channels, isVector: true)
        }
        x.values.withUnsafeBufferPointer { xp in y.values.withUnsafeMutableBufferPointer { yp in
            let src = xp.baseAddress!, dst = yp.baseAddress!
            switch kind {
            case let .max(k, s, p):
                Pooling2D.maxPool(input: src, batch: x.batch, height: x.height, width: x.width, channels: x.channels, kernel: k,
                                  stride: s, padding: p, output: dst, options: mode.options)
            case let .average(k, s, p, countIncludePad):
                Pooling2D.avgPool(input: src, batch: x.batch, height: x.height, width: x.width, channels: x.channels, kernel: k,
                                  stride: s, padding: p, countIncludePad: countIncludePad, output: dst, options: mode.options)
            case let .adaptive(h, w):
                Pooling2D.adaptiveAvgPool(input: src, batch: x.batch, height: x.height, width: x.width, channels: x.channels,
                                          outHeight: h, outWidth: w, output: dst, options: mode.options)
            case .global:
                Pooling2D.global(input: src, batch: x.batch, height: x.height, width: x.width, channels: x.channels, max: false,
                                 output: dst, options: mode.options)
            }
        } }
        // Only max pooling reads its input backward; the others keep its shape.
        if case .max = kind { input = x } else { input = x.zeros() }
        options = mode.options
        return y
    }

    override func backward(_ dy: Activations, needsInputGradient: Bool) -> Activations? {
        guard needsInputGradient else { return nil }
        guard let x = input else { preconditionFailure("pooling: backward without forward") }
        var dx = x.zeros()
        dy.values.withUnsafeBufferPointer { gp in dx.values.withUnsafeMutableBufferPointer { dp in
            let g = gp.baseAddress!, d = dp.baseAddress!
            switch kind {
            case let .max(k, s, p):
                x.values.withUnsafeBufferPointer { xp in
                    Backward.maxPool(input: xp.baseAddress!, batch: x.batch, height: x.height, width: x.width, channels: x.channels,
                                     kernel: k, stride: s, padding: p, outputGradient: g, into: d, options: options)
                }
            case let .average(k, s, p, countIncludePad):
                Backward.avgPool(batch: x.batch, height: x.height, width: x.width, channels: x.channels, kernel: k, stride: s,
                                 padding: p, countIncludePad: countIncludePad, outputGradient: g, into: d, options: options)
            case let .adaptive(h, w):
                Backward.adaptiveAvgPool(batch: x.batch, height: x.height, width: x.width, channels: x.channels, outHeight: h,
                                         outWidth: w, outputGradient: g, into: d, options: options)
            case .global:
                Backward.globalAvgPool(batch: x.batch, height: x.height, width: x.width, channels: x.channels,
                                       outputGradient: g, into: d, options: options)
            }
        } }
        return dx
    }
}

/// Flatten (PyTorch's NCHW order) + fully connected layer (`Linear.forward` on the parameter's weights)
/// + activation, and its backward pass.
final class LinearNode: GraphNode {
    let weight: Parameter, bias: Parameter
    let activation: Activation
    /// The flattened input `[N][in]` and the shape it came in (to give the gradient the same shape).
    private var flat: [Float] = []
    private var inputLayout: Activations?
    private var output: [Float] = []
    private var options = EngineOptions.default

    init(weight: Parameter, bias: Parameter, activation: Activation) {
        self.weight = weight; self.bias = bias; self.activation = activation
    }

    var outFeatures: Int { weight.shape[0] }
    var inFeatures: Int { weight.shape[1] }

    override var parameters: [Parameter] { [weight, bias] }

    override func forward(_ x: Activations, _ mode: GraphMode) -> Activations {
        precondition(x.height * x.width * x.channels == inFeatures, "\(weight.name): \(x.height * x.width * x.channels) inputs for \(inFeatures)")
        flat = x.pytorchLayout(options: mode.options)
        inputLayout = x.zeros()
        var y = [Float](repeating: 0, count: x.batch * outFeatures)
        flat.withUnsafeBufferPointer { xp in weight.value.withUnsafeBufferPointer { w in bias.value.withUnsafeBufferPointer { b in
            y.withUnsafeMutableBufferPointer { yp in
                Linear.forward(input: xp.baseAddress!, batch: x.batch, weight: w.baseAddress!, outFeatures: outFeatures,
                               inFeatures: inFeatures, bias: b.baseAddress!, activation: activation, output: yp.baseAddress!,
                               options: mode.options)
            }
        } } }
        output = y
        options = mode.options
        return Activations(batch: x.batch, height: 1, width: 1, channels: outFeatures, isVector: true, values: y)
    }

    override func backward(_ dy: Activations, needsInputGradient: Bool) -> Activations? {
        guard let layout = inputLayout else { preconditionFailure("\(weight.name): backward without forward") }
        var g = dy.values
        let batch = layout.batch
        output.withUnsafeBufferPointer { yp in g.withUnsafeMutableBufferPointer { gp in
            Backward.activation(activation, output: yp.baseAddress!, gradient: gp.baseAddress!, count: gp.count, options: options)
        } }
        Backward.accumulateChannelSums(g, rows: batch, channels: outFeatures, into: &bias.grad)
        var dxFlat = [Float](repeating: 0, count: needsInputGradient ? batch * inFeatures : 0)
        flat.withUnsafeBufferPointer { xp in weight.value.withUnsafeBufferPointer { w in weight.grad.withUnsafeMutableBufferPointer { dw in
            g.withUnsafeBufferPointer { gp in dxFlat.withUnsafeMutableBufferPointer { dxp in
                Backward.linear(input: xp.baseAddress!, batch: batch, inFeatures: inFeatures, outFeatures: outFeatures,
                                weight: w.baseAddress!, outputGradient: gp.baseAddress!, accumulateWeightGradient: dw.baseAddress!,
                                inputGradient: needsInputGradient ? dxp.baseAddress! : nil)
            } }
        } } }
        guard needsInputGradient else { return nil }
        if layout.isVector || (layout.height == 1 && layout.width == 1) {
            var dx = layout
            dx.values = dxFlat
            return dx
        }
        var dx = layout
        dxFlat.withUnsafeBufferPointer { src in dx.values.withUnsafeMutableBufferPointer { dst in
            Layout.nchwToNhwc(src.baseAddress!, batch: batch, channels: layout.channels, height: layout.height,
                              width: layout.width, into: dst.baseAddress!, options: options)
        } }
        return dx
    }
}

/// `activation(body(x) + shortcut(x))` (shortcut = identity when nil): the body's closing convolution
/// adds the skip tensor and applies the activation (`ConvolutionNode.addsResidual`).
final class ResidualNode: GraphNode {
    let body: [GraphNode]
    let shortcut: [GraphNode]?

    init(body: [GraphNode], shortcut: [GraphNode]?) { self.body = body; self.shortcut = shortcut }

    override var parameters: [Parameter] { (body + (shortcut ?? [])).flatMap(\.parameters) }
    override func invalidate() { for n in body + (shortcut ?? []) { n.invalidate() } }

    private var closing: ConvolutionNode { body.last as! ConvolutionNode }

    override func forward(_ x: Activations, _ mode: GraphMode) -> Activations {
        let skip = shortcut.map { forwardSequence($0, x, mode) } ?? x
        let h = forwardSequence(Array(body.dropLast()), x, mode)
        let y = closing.forward(h, residual: skip, mode)
        precondition(y.values.count == skip.values.count, "residual: the shortcut's output does not match the body's")
        return y
    }

    override func backward(_ dy: Activations, needsInputGradient: Bool) -> Activations? {
        let dh = closing.backward(dy, needsInputGradient: body.count > 1 || needsInputGradient)
        let dBody = body.count > 1 ? backwardSequence(Array(body.dropLast()), dh!, needsInputGradient: needsInputGradient) : dh
        let sum = closing.sumGradient!
        let dSkip = shortcut.map { backwardSequence($0, sum, needsInputGradient: needsInputGradient) } ?? sum
        guard needsInputGradient, var dx = dBody, let dSkip else { return nil }
        for i in dx.values.indices { dx.values[i] += dSkip.values[i] }
        return dx
    }
}

/// Branches on one input, outputs concatenated on channels in branch order (`torch.cat(dim=1)`).
final class ConcatNode: GraphNode {
    let branches: [[GraphNode]]
    private var channelCounts: [Int] = []
    private var input: Activations?

    init(branches: [[GraphNode]]) { self.branches = branches }

    override var parameters: [Parameter] { branches.joined().flatMap(\.parameters) }
    override func invalidate() { for n in branches.joined() { n.invalidate() } }

    override func forward(_ x: Activations, _ mode: GraphMode) -> Activations {
        let outputs = branches.map { forwardSequence($0, x, mode) }
        channelCounts = outputs.map(\.channels)
        let first = outputs[0], total = channelCounts.reduce(0, +)
        var y = Activations(batch: x.batch, height: first.height, width: first.width, channels: total)
        var offset = 0
        for o in outputs {
            precondition(o.height == first.height && o.width == first.width, "concatenated branches disagree on their output size")
            for p in 0..<o.pixels { for ch in 0..<o.channels { y.values[p * total + offset + ch] = o.values[p * o.channels + ch] } }
            offset += o.channels
        }
        input = x.zeros()
        return y
    }

    override func backward(_ dy: Activations, needsInputGradient: Bool) -> Activations? {
        guard let x = input else { preconditionFailure("concatenation: backward without forward") }
        var dx = needsInputGradient ? x : nil
        var offset = 0
        for (branch, channels) in zip(branches, channelCounts) {
            var slice = Activations(batch: dy.batch, height: dy.height, width: dy.width, channels: channels)
            for p in 0..<dy.pixels { for ch in 0..<channels { slice.values[p * channels + ch] = dy.values[p * dy.channels + offset + ch] } }
            offset += channels
            if let d = backwardSequence(branch, slice, needsInputGradient: needsInputGradient), dx != nil {
                for i in d.values.indices { dx!.values[i] += d.values[i] }
            }
        }
        return dx
    }
}
