import BottleneckCore

/// Deterministic synthetic tensors, bit-identical to `Tests/Reference/models/synthetic.py`, so PyTorch
/// reference outputs computed with the same values can be compared against ours without shipping
/// weights.
///
/// Each tensor has its own SplitMix64 stream seeded with the 64-bit FNV-1a hash of its UTF-8 name;
/// element i (C order) uses the stream's (i+1)-th output. Values therefore depend only on the name,
/// kind and shape, never on load order.
public enum SyntheticFill {
    /// What a parameter is, which selects its distribution.
    public enum Kind: String, Sendable, CaseIterable {
        /// Convolution or linear weight: He-uniform, `(2u - 1) * sqrt(6 / fanIn)`, fanIn = product of all
        /// dims but the first (keeps ReLU networks' activations O(1) through many layers).
        case weight
        /// Convolution or linear bias: `(2u - 1) * 0.1`.
        case bias
        /// BatchNorm gamma: `0.75 + 0.5u`.
        case bnWeight
        /// BatchNorm gamma of a BN that closes a residual branch: `0.1 + 0.2u` (keeps the residual
        /// stream of deep ResNets from growing geometrically).
        case bnWeightResidual
        /// BatchNorm beta: `(2u - 1) * 0.1`.
        case bnBias
        /// BatchNorm running mean: `(2u - 1) * 0.1`.
        case bnMean
        /// BatchNorm running variance: `0.5 + u` (strictly positive).
        case bnVar
    }

    /// 64-bit FNV-1a of the UTF-8 bytes of `name`.
    public static func fnv1a64(_ name: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// Fills `count` floats of `kind` for parameter `name` whose shape gives `fanIn`.
    public static func fill(name: String, kind: Kind, shape: [Int], into dst: UnsafeMutablePointer<Float>) {
        let count = shape.reduce(1, *)
        var rng = SplitMix64(seed: fnv1a64(name))
        switch kind {
        case .weight:
            let fanIn = shape.dropFirst().reduce(1, *)
            let scale = Float((6.0 / Double(max(1, fanIn))).squareRoot())
            for i in 0..<count { dst[i] = rng.nextSymmetric(scale: scale) }
        case .bias, .bnBias, .bnMean:
            for i in 0..<count { dst[i] = rng.nextSymmetric(scale: 0.1) }
        case .bnWeight:
            for i in 0..<count { dst[i] = 0.75 + 0.5 * rng.nextUniform() }
        case .bnWeightResidual:
            for i in 0..<count { dst[i] = 0.1 + 0.2 * rng.nextUniform() }
        case .bnVar:
            for i in 0..<count { dst[i] = 0.5 + rng.nextUniform() }
        }
    }

    /// The synthetic values as an array.
    public static func values(name: String, kind: Kind, shape: [Int]) -> [Float] {
        var out = [Float](repeating: 0, count: shape.reduce(1, *))
        out.withUnsafeMutableBufferPointer { fill(name: name, kind: kind, shape: shape, into: $0.baseAddress!) }
        return out
    }

    /// Deterministic input in `[-scale, scale)` (Python: `synthetic_input(name, shape, scale)`).
    public static func input(name: String, shape: [Int], scale: Float = 2) -> [Float] {
        var rng = SplitMix64(seed: fnv1a64(name))
        return (0..<shape.reduce(1, *)).map { _ in rng.nextSymmetric(scale: scale) }
    }

    /// The flat indices a parity fixture keeps for a tensor of `count` elements (Python:
    /// `sample_indices(name, n, k)`): all when `count <= k`, else k draws `z % count`.
    public static func sampleIndices(name: String, count: Int, k: Int = 2048) -> [Int] {
        if count <= k { return Array(0..<count) }
        var rng = SplitMix64(seed: fnv1a64(name))
        return (0..<k).map { _ in Int(rng.next() % UInt64(count)) }
    }
}
