import Foundation

/// Batch normalisation over NCHW channels (PyTorch `nn.BatchNorm2d`), with a backward pass.
///
/// By default it runs in evaluation mode: a frozen affine map using the running statistics
/// (`y = (x − mean)/√(var+eps)·γ + β`), whose γ and β still receive gradients. With
/// ``updatesStatistics`` set and the layer in training mode it normalises with the batch statistics
/// (biased variance) and updates the running ones PyTorch's way:
/// `running = (1 − momentum)·running + momentum·batch`, with the unbiased variance.
/// Keys: `<name>.weight`, `.bias`, `.running_mean`, `.running_var`.
public final class BatchNorm2d: Layer {
    /// Channels.
    public let channels: Int
    /// Added to the variance before the square root.
    public let eps: Float
    /// PyTorch momentum (weight of the new batch statistic).
    public let momentum: Float
    /// γ, β (trainable) and the running statistics (buffers).
    public let weight: Parameter, bias: Parameter, runningMean: Parameter, runningVar: Parameter
    /// Whether training mode uses and updates batch statistics (false: always the frozen running statistics).
    public var updatesStatistics = false

    private var training = false
    private var input: TrainTensor?
    // Per-channel mean and 1/√(var+eps) used by the last forward.
    private var usedMean: [Float] = []
    private var usedInvStd: [Float] = []
    private var usedBatchStats = false

    /// Creates a BatchNorm with γ = 1, β = 0, mean 0, var 1.
    public init(name: String, channels: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        self.channels = channels
        self.eps = eps
        self.momentum = momentum
        weight = Parameter(name: name + ".weight", shape: [channels])
        bias = Parameter(name: name + ".bias", shape: [channels])
        runningMean = Parameter(name: name + ".running_mean", shape: [channels], trainable: false)
        runningVar = Parameter(name: name + ".running_var", shape: [channels], trainable: false)
        weight.value = [Float](repeating: 1, count: channels)
        runningVar.value = [Float](repeating: 1, count: channels)
    }

    public var ownParameters: [Parameter] { [weight, bias, runningMean, runningVar] }
    public func setTraining(_ training: Bool) { self.training = training }

    public func forward(_ x: TrainTensor) throws -> TrainTensor {
        guard x.shape.count == 4, x.channels == channels else {
            throw TrainingError.shapeMismatch(layer: weight.name, expected: "[N, \(channels), H, W]", got: x.shape)
        }
        input = x
        let n = x.batch, hw = x.height * x.width, m = n * hw
        usedBatchStats = training && updatesStatistics
        usedMean = runningMean.value
        usedInvStd = runningVar.value.map { 1 / ($0 + eps).squareRoot() }
        if usedBatchStats {
            precondition(m > 1, "BatchNorm2d \(weight.name): batch statistics need more than one value per channel")
            x.data.withUnsafeBufferPointer { xp in
                for c in 0..<channels {
                    var sum = 0.0, sq = 0.0
                    for s in 0..<n {
                        let base = xp.baseAddress! + (s * channels + c) * hw
                        for i in 0..<hw { let v = Double(base[i]); sum += v; sq += v * v }
                    }
                    let mean = sum / Double(m)
                    let varB = max(sq / Double(m) - mean * mean, 0)
                    usedMean[c] = Float(mean)
                    usedInvStd[c] = Float(1 / (varB + Double(eps)).squareRoot())
                    let unbiased = varB * Double(m) / Double(m - 1)
                    runningMean.value[c] = (1 - momentum) * runningMean.value[c] + momentum * Float(mean)
                    runningVar.value[c] = (1 - momentum) * runningVar.value[c] + momentum * Float(unbiased)
                }
            }
        }
        var y = TrainTensor(zeros: x.shape)
        x.data.withUnsafeBufferPointer { xp in
            y.data.withUnsafeMutableBufferPointer { yp in
                for c in 0..<channels {
                    let scale = weight.value[c] * usedInvStd[c]
                    let shift = bias.value[c] - usedMean[c] * scale
                    for s in 0..<n {
                        let off = (s * channels + c) * hw
                        let xs = xp.baseAddress! + off, ys = yp.baseAddress! + off
                        for i in 0..<hw { ys[i] = xs[i] * scale + shift }
                    }
                }
            }
        }
        return y
    }

    public func backward(_ dy: TrainTensor) -> TrainTensor {
        guard let x = input else { preconditionFailure("BatchNorm2d \(weight.name): backward without forward") }
        precondition(dy.shape == x.shape)
        let n = x.batch, hw = x.height * x.width, m = Double(n * hw)
        var dx = TrainTensor(zeros: x.shape)
        x.data.withUnsafeBufferPointer { xp in
            dy.data.withUnsafeBufferPointer { dyp in
                dx.data.withUnsafeMutableBufferPointer { dxp in
                    for c in 0..<channels {
                        let mean = usedMean[c], inv = usedInvStd[c]
                        // Σdy and Σdy·x̂ over the channel give dβ and dγ, and the batch-statistics correction.
                        var sdy = 0.0, sdyx = 0.0
                        for s in 0..<n {
                            let off = (s * channels + c) * hw
                            let xs = xp.baseAddress! + off, ds = dyp.baseAddress! + off
                            for i in 0..<hw {
                                let d = Double(ds[i])
                                sdy += d
                                sdyx += d * Double((xs[i] - mean) * inv)
                            }
                        }
                        bias.grad[c] += Float(sdy)
                        weight.grad[c] += Float(sdyx)
                        let g = weight.value[c] * inv
                        if usedBatchStats {
                            let a = Float(sdy / m), b = Float(sdyx / m)
                            for s in 0..<n {
                                let off = (s * channels + c) * hw
                                let xs = xp.baseAddress! + off, ds = dyp.baseAddress! + off, dxs = dxp.baseAddress! + off
                                for i in 0..<hw { dxs[i] = g * (ds[i] - a - (xs[i] - mean) * inv * b) }
                            }
                        } else {
                            for s in 0..<n {
                                let off = (s * channels + c) * hw
                                let ds = dyp.baseAddress! + off, dxs = dxp.baseAddress! + off
                                for i in 0..<hw { dxs[i] = g * ds[i] }
                            }
                        }
                    }
                }
            }
        }
        return dx
    }
}
