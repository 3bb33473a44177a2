import Foundation
import CBLAS

/// Fully connected layer `y = x·Wᵀ + b` on `[N, in]` batches (PyTorch `nn.Linear`; keys `<name>.weight`
/// `[out, in]` and `<name>.bias` `[out]`). Forward and both gradients are one `cblas_sgemm` each.
public final class Linear: Layer {
    /// Input and output features.
    public let inFeatures: Int, outFeatures: Int
    /// `[out, in]` weight and `[out]` bias.
    public let weight: Parameter, bias: Parameter
    private var input: TrainTensor?

    /// Creates a zero-initialised linear layer.
    public init(name: String, inFeatures: Int, outFeatures: Int) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        weight = Parameter(name: name + ".weight", shape: [outFeatures, inFeatures])
        bias = Parameter(name: name + ".bias", shape: [outFeatures])
    }

    public var ownParameters: [Parameter] { [weight, bias] }

    public func forward(_ x: TrainTensor) throws -> TrainTensor {
        guard x.shape.count == 2, x.shape[1] == inFeatures else {
            throw TrainingError.shapeMismatch(layer: weight.name, expected: "[N, \(inFeatures)]", got: x.shape)
        }
        input = x
        let n = x.batch
        var y = TrainTensor(zeros: [n, outFeatures])
        y.data.withUnsafeMutableBufferPointer { yp in
            bias.value.withUnsafeBufferPointer { bp in
                for s in 0..<n { (yp.baseAddress! + s * outFeatures).update(from: bp.baseAddress!, count: outFeatures) }
            }
            x.data.withUnsafeBufferPointer { xp in
                weight.value.withUnsafeBufferPointer { wp in
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(outFeatures), Int32(inFeatures), 1,
                                xp.baseAddress!, Int32(inFeatures), wp.baseAddress!, Int32(inFeatures), 1,
                                yp.baseAddress!, Int32(outFeatures))
                }
            }
        }
        return y
    }

    public func backward(_ dy: TrainTensor) -> TrainTensor {
        guard let x = input else { preconditionFailure("Linear \(weight.name): backward without forward") }
        let n = x.batch
        var dx = TrainTensor(zeros: x.shape)
        dy.data.withUnsafeBufferPointer { dp in
            x.data.withUnsafeBufferPointer { xp in
                weight.grad.withUnsafeMutableBufferPointer { gw in
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outFeatures), Int32(inFeatures), Int32(n), 1,
                                dp.baseAddress!, Int32(outFeatures), xp.baseAddress!, Int32(inFeatures), 1,
                                gw.baseAddress!, Int32(inFeatures))
                }
            }
            weight.value.withUnsafeBufferPointer { wp in
                dx.data.withUnsafeMutableBufferPointer { dxp in
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(inFeatures), Int32(outFeatures), 1,
                                dp.baseAddress!, Int32(outFeatures), wp.baseAddress!, Int32(inFeatures), 0,
                                dxp.baseAddress!, Int32(inFeatures))
                }
            }
            bias.grad.withUnsafeMutableBufferPointer { gb in
                for s in 0..<n { for o in 0..<outFeatures { gb[o] += dp[s * outFeatures + o] } }
            }
        }
        return dx
    }
}

/// Mean softmax cross-entropy over a batch (PyTorch `F.cross_entropy`, reduction "mean").
public enum SoftmaxCrossEntropy {
    /// Loss and dLoss/dLogits for `[N, K]` logits and N integer labels in `0..<K`.
    /// The gradient is `(softmax − onehot)/N`. Computed with a max shift and double accumulators.
    public static func lossAndGradient(logits: TrainTensor, labels: [Int]) throws -> (loss: Double, gradient: TrainTensor) {
        guard logits.shape.count == 2, logits.batch == labels.count else {
            throw TrainingError.shapeMismatch(layer: "cross-entropy", expected: "[\(labels.count), K]", got: logits.shape)
        }
        let n = logits.batch, k = logits.shape[1]
        guard labels.allSatisfy({ $0 >= 0 && $0 < k }) else {
            throw TrainingError.invalidConfiguration("cross-entropy: labels must be in 0..<\(k), got \(labels)")
        }
        var grad = TrainTensor(zeros: logits.shape)
        var loss = 0.0
        logits.data.withUnsafeBufferPointer { lp in
            grad.data.withUnsafeMutableBufferPointer { gp in
                for s in 0..<n {
                    let row = lp.baseAddress! + s * k
                    var mx = -Float.infinity
                    for j in 0..<k { mx = max(mx, row[j]) }
                    var z = 0.0
                    for j in 0..<k { z += exp(Double(row[j] - mx)) }
                    loss += log(z) - Double(row[labels[s]] - mx)
                    for j in 0..<k {
                        let p = exp(Double(row[j] - mx)) / z
                        gp[s * k + j] = Float((p - (j == labels[s] ? 1 : 0)) / Double(n))
                    }
                }
            }
        }
        return (loss / Double(n), grad)
    }
}
