/// A tiny deterministic generator that Swift and the Python reference scripts implement
/// identically, so synthetic weights and fixtures can be regenerated bit for bit on both sides.
///
/// Algorithm: SplitMix64. `nextUniform()` maps the top 24 bits to a float in [0, 1), which is
/// exact in float32, so `numpy.float32` arithmetic in the reference scripts reproduces it.
public struct SplitMix64: Sendable {
    /// Current state.
    public var state: UInt64

    /// Seeds the generator.
    public init(seed: UInt64) { state = seed }

    /// Next 64-bit value.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform float in [0, 1) with 24 bits of resolution: `Float(next() >> 40) / 2^24`.
    public mutating func nextUniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform float in [-scale, scale): `(2u - 1) * scale` computed in float32.
    public mutating func nextSymmetric(scale: Float) -> Float { (nextUniform() * 2 - 1) * scale }
}
