/// A differentiable layer: a forward pass that remembers what its backward pass needs, and a backward
/// pass that accumulates parameter gradients and returns the gradient with respect to its input.
///
/// Layers are classes because they cache forward state and own ``Parameter``s that the optimiser updates
/// in place. One `backward` call must follow each `forward` whose gradient is wanted; a second `forward`
/// overwrites the cache.
public protocol Layer: AnyObject {
    /// Runs the layer on a batch and caches what `backward` needs.
    func forward(_ x: TrainTensor) throws -> TrainTensor
    /// Given dLoss/dOutput of the last forward, accumulates dLoss/dParameters and returns dLoss/dInput.
    func backward(_ dy: TrainTensor) -> TrainTensor
    /// Parameters and buffers owned directly by this layer (not by its children).
    var ownParameters: [Parameter] { get }
    /// Child layers, for containers.
    var children: [Layer] { get }
    /// Puts the layer in training (true) or evaluation (false) behaviour; containers forward it to children.
    func setTraining(_ training: Bool)
}

extension Layer {
    public var ownParameters: [Parameter] { [] }
    public var children: [Layer] { [] }
    public func setTraining(_ training: Bool) { for c in children { c.setTraining(training) } }

    /// Every parameter and buffer of this layer and its descendants, in forward order.
    public var allParameters: [Parameter] { ownParameters + children.flatMap { $0.allParameters } }

    /// Trainable parameters only, in forward order.
    public var trainableParameters: [Parameter] { allParameters.filter { $0.isTrainable } }

    /// Zeroes every trainable parameter's gradient.
    public func zeroGrad() { for p in trainableParameters { p.zeroGrad() } }

    /// Copies values from a state dict for every parameter and buffer, checking shapes.
    /// Keys absent from the dictionary throw ``TrainingError/missingKey(_:)``.
    public func load(_ state: StateDict) throws {
        for p in allParameters {
            let e = try state.get(p.name)
            guard e.values.count == p.value.count else {
                throw TrainingError.parameterShape(key: p.name, expected: p.shape, got: e.shape)
            }
            p.value = e.values
        }
    }

    /// Current parameters and buffers as a state dict (same keys as the PyTorch checkpoint).
    public func stateDict() -> StateDict {
        var s = StateDict()
        for p in allParameters { s.set(p.name, shape: p.shape, values: p.value) }
        return s
    }
}

/// Layers applied one after another.
public final class Sequential: Layer {
    /// The layers, in forward order.
    public private(set) var layers: [Layer]

    /// Creates a chain of layers.
    public init(_ layers: [Layer]) { self.layers = layers }

    /// Appends a layer at the end.
    public func append(_ layer: Layer) { layers.append(layer) }

    public var children: [Layer] { layers }

    public func forward(_ x: TrainTensor) throws -> TrainTensor {
        var h = x
        for l in layers { h = try l.forward(h) }
        return h
    }

    public func backward(_ dy: TrainTensor) -> TrainTensor {
        var g = dy
        for l in layers.reversed() { g = l.backward(g) }
        return g
    }
}

/// `post(body(x) + shortcut(x))`: a residual connection. `shortcut == nil` is the identity;
/// `post == nil` applies nothing after the sum (EfficientNet) while ResNet passes a ReLU.
public final class Residual: Layer {
    /// Main branch.
    public let body: Layer
    /// Projection branch (ResNet `downsample`), or nil for the identity.
    public let shortcut: Layer?
    /// Applied to the sum, or nil.
    public let post: Layer?

    /// Creates a residual block.
    public init(body: Layer, shortcut: Layer? = nil, post: Layer? = nil) {
        self.body = body
        self.shortcut = shortcut
        self.post = post
    }

    public var children: [Layer] { [body] + (shortcut.map { [$0] } ?? []) + (post.map { [$0] } ?? []) }

    public func forward(_ x: TrainTensor) throws -> TrainTensor {
        var y = try body.forward(x)
        let s = try shortcut?.forward(x) ?? x
        guard s.shape == y.shape else {
            throw TrainingError.shapeMismatch(layer: "residual add", expected: "\(y.shape)", got: s.shape)
        }
        addInPlace(&y.data, s.data)
        return try post?.forward(y) ?? y
    }

    public func backward(_ dy: TrainTensor) -> TrainTensor {
        let dsum = post?.backward(dy) ?? dy
        var dx = body.backward(dsum)
        let ds = shortcut?.backward(dsum) ?? dsum
        addInPlace(&dx.data, ds.data)
        return dx
    }
}

/// `a += b` elementwise.
@inline(__always)
func addInPlace(_ a: inout [Float], _ b: [Float]) {
    precondition(a.count == b.count)
    a.withUnsafeMutableBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            for i in 0..<pa.count { pa[i] += pb[i] }
        }
    }
}

extension Layer {
    /// Calls `body` on this layer and every descendant, depth first in forward order.
    public func visit(_ body: (Layer) -> Void) {
        body(self)
        for c in children { c.visit(body) }
    }

    /// Sets ``BatchNorm2d/updatesStatistics`` on every BatchNorm in the tree.
    public func setBatchNormUpdatesStatistics(_ on: Bool) {
        visit { ($0 as? BatchNorm2d)?.updatesStatistics = on }
    }
}
