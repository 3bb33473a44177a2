import BottleneckModels
import Foundation

/// Stochastic gradient descent with PyTorch's `torch.optim.SGD` semantics (dampening 0):
/// `d = g + wd·p; buf = momentum·buf + d` (buf = d on the first step); `d = nesterov ? d + momentum·buf : buf`;
/// `p −= lr·d`.
public final class SGD {
    /// Parameters updated, in a fixed order.
    public let parameters: [Parameter]
    /// Momentum factor (0 disables the buffer).
    public var momentum: Float
    /// L2 penalty added to the gradient.
    public var weightDecay: Float
    /// Nesterov momentum.
    public var nesterov: Bool
    /// Learning rate used by the next ``step()``; schedules overwrite it each step or epoch.
    public var learningRate: Float
    private var buffers: [[Float]]

    /// Creates the optimiser over the trainable parameters given (buffers are ignored).
    public init(parameters: [Parameter], learningRate: Float, momentum: Float = 0.9, weightDecay: Float = 0,
                nesterov: Bool = false) {
        self.parameters = parameters.filter { $0.isTrainable }
        self.learningRate = learningRate
        self.momentum = momentum
        self.weightDecay = weightDecay
        self.nesterov = nesterov
        self.buffers = Array(repeating: [], count: self.parameters.count)
    }

    /// Applies one update with the current gradients. O(number of parameters).
    public func step() {
        let lr = learningRate, mom = momentum, wd = weightDecay, nest = nesterov
        for (k, p) in parameters.enumerated() {
            let first = buffers[k].isEmpty
            if first && mom != 0 { buffers[k] = [Float](repeating: 0, count: p.value.count) }
            p.value.withUnsafeMutableBufferPointer { v in
                p.grad.withUnsafeBufferPointer { g in
                    buffers[k].withUnsafeMutableBufferPointer { b in
                        for i in 0..<v.count {
                            var d = g[i] + wd * v[i]
                            if mom != 0 {
                                b[i] = first ? d : mom * b[i] + d
                                d = nest ? d + mom * b[i] : b[i]
                            }
                            v[i] -= lr * d
                        }
                    }
                }
            }
        }
    }

    /// Zeroes the gradients of every parameter it updates.
    public func zeroGrad() { for p in parameters { p.zeroGrad() } }
}

/// Learning-rate schedules in closed form, matching PyTorch's schedulers stepped once per `t`.
public enum LRSchedule: Sendable, Equatable {
    /// Constant rate.
    case constant
    /// `CosineAnnealingLR(T_max: total, eta_min: minimum)`: `min + (base − min)(1 + cos(π·t/total))/2`.
    case cosine(total: Int, minimum: Float)
    /// `StepLR(step_size: every, gamma: gamma)`: `base · gamma^⌊t/every⌋`.
    case step(every: Int, gamma: Float)

    /// The learning rate after `t` scheduler steps for base rate `base`.
    public func rate(base: Float, at t: Int) -> Float {
        switch self {
        case .constant: return base
        case let .cosine(total, minimum):
            guard total > 0 else { return base }
            return minimum + (base - minimum) * Float((1 + cos(Double.pi * Double(t) / Double(total))) / 2)
        case let .step(every, gamma):
            return base * Float(pow(Double(gamma), Double(t / max(every, 1))))
        }
    }
}
