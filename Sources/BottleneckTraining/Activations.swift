import BottleneckCore

/// Elementwise clamp `min(max(x, 0), cap)`: ReLU (`cap = +∞`) and ReLU6 (`cap = 6`).
///
/// The gradient passes where `0 < x < cap` (PyTorch's `threshold_backward` / `hardtanh_backward` convention:
/// zero at the kinks).
public final class Clamp: Layer {
    /// Upper bound (`.infinity` for ReLU).
    public let cap: Float
    private var input: TrainTensor?

    /// Creates a clamp to `[0, cap]`.
    public init(cap: Float) { self.cap = cap }

    public func forward(_ x: TrainTensor) throws -> TrainTensor {
        input = x
        var y = x
        let cap = cap
        y.data.withUnsafeMutableBufferPointer { p in
            for i in 0..<p.count { p[i] = min(max(p[i], 0), cap) }
        }
        return y
    }

    public func backward(_ dy: TrainTensor) -> TrainTensor {
        guard let x = input else { preconditionFailure("Clamp: backward without forward") }
        var dx = dy
        let cap = cap
        x.data.withUnsafeBufferPointer { xp in
            dx.data.withUnsafeMutableBufferPointer { dp in
                for i in 0..<dp.count where !(xp[i] > 0 && xp[i] < cap) { dp[i] = 0 }
            }
        }
        return dx
    }
}

/// `nn.ReLU`.
public func ReLU() -> Clamp { Clamp(cap: .infinity) }
/// `nn.ReLU6`.
public func ReLU6() -> Clamp { Clamp(cap: 6) }

/// Inverted dropout (`nn.Dropout`): the identity in evaluation mode; in training mode it zeroes each
/// element with probability `p` and scales survivors by `1/(1−p)`, drawing from a seeded ``SplitMix64``-style
/// generator so runs are reproducible.
public final class Dropout: Layer {
    /// Drop probability in [0, 1).
    public let p: Float
    private var training = false
    private var state: UInt64
    private var mask: [Float] = []

    /// Creates a dropout layer with its own seed.
    public init(p: Float, seed: UInt64 = 0) {
        precondition(p >= 0 && p < 1, "Dropout p must be in [0, 1)")
        self.p = p
        self.state = seed
    }

    public func setTraining(_ training: Bool) { self.training = training }

    public func forward(_ x: TrainTensor) throws -> TrainTensor {
        guard training, p > 0 else { mask = []; return x }
        var rng = SplitMix64(seed: state)
        let keep = 1 / (1 - p)
        mask = (0..<x.count).map { _ in rng.nextUniform() < p ? 0 : keep }
        state = rng.state
        var y = x
        for i in 0..<y.count { y.data[i] *= mask[i] }
        return y
    }

    public func backward(_ dy: TrainTensor) -> TrainTensor {
        guard !mask.isEmpty else { return dy }
        var dx = dy
        for i in 0..<dx.count { dx.data[i] *= mask[i] }
        return dx
    }
}

extension SplitMix64 {
    /// Uniform in [0, 1) with 53 bits.
    mutating func uniformDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
    /// Uniform integer in `0..<n`.
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
