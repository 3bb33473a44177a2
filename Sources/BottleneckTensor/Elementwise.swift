import CVectorAccess

/// Point-wise activation applied in a kernel's output pass.
public enum Activation: String, Sendable, CaseIterable {
    /// Identity.
    case none
    /// max(x, 0).
    case relu
    /// min(max(x, 0), 6), as in MobileNet/EfficientNet-Lite.
    case relu6
}

/// The output pass shared by every convolution and linear layer: one sweep over a row-major
/// `rows x cols` block that adds a per-column bias, an optional residual of the same layout and
/// applies the activation, while the block is still in cache from the GEMM that produced it.
///
/// - Complexity: O(rows * cols), vectorised 8 lanes wide.
public func applyEpilogue(_ out: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                          bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                          activation: Activation) {
    if bias == nil && residual == nil && activation == .none { return }
    let vecCols = cols & ~7
    for r in 0..<rows {
        let row = out + r * cols
        let res = residual.map { $0 + r * cols }
        var c = 0
        while c < vecCols {
            var v = SIMD8<Float>.load(UnsafeRawPointer(row + c))
            if let bias { v += SIMD8<Float>.load(UnsafeRawPointer(bias + c)) }
            if let res { v += SIMD8<Float>.load(UnsafeRawPointer(res + c)) }
            SIMD8<Float>.store(v.activated(activation), to: UnsafeMutableRawPointer(row + c))
            c += 8
        }
        while c < cols {
            var v = row[c]
            if let bias { v += bias[c] }
            if let res { v += res[c] }
            row[c] = activate(v, activation)
            c += 1
        }
    }
}

@inline(__always)
func activate(_ v: Float, _ a: Activation) -> Float {
    switch a {
    case .none: return v
    case .relu: return v < 0 ? 0 : v
    case .relu6: return v < 0 ? 0 : (v > 6 ? 6 : v)
    }
}

/// Parallel `applyEpilogue` over row blocks.
func applyEpilogueParallel(_ out: UnsafeMutablePointer<Float>, rows: Int, cols: Int,
                           bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?,
                           activation: Activation, options: EngineOptions) {
    parallelRanges(rows, grain: max(1, 16384 / max(1, cols)), threads: options.workers) { r in
        applyEpilogue(out + r.lowerBound * cols, rows: r.count, cols: cols, bias: bias,
                      residual: residual.map { $0 + r.lowerBound * cols }, activation: activation)
    }
}

/// Element-wise kernels on flat buffers.
public enum Elementwise {
    /// `out[i] = act(a[i] + b[i])` (a residual add, optionally followed by ReLU). `out` may alias `a`.
    public static func add(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>,
                           count: Int, activation: Activation = .none, options: EngineOptions = .default) {
        if UnsafePointer(out) != a { out.update(from: a, count: count) }
        applyEpilogueParallel(out, rows: 1, cols: count, bias: nil, residual: b, activation: activation, options: options)
    }

    /// In-place activation over `count` floats.
    public static func activate(_ x: UnsafeMutablePointer<Float>, count: Int, activation: Activation,
                                options: EngineOptions = .default) {
        applyEpilogueParallel(x, rows: 1, cols: count, bias: nil, residual: nil, activation: activation, options: options)
    }

    /// Batch normalisation in inference mode on an NHWC (channels-last) buffer of `rows` pixels:
    /// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, in place. Used only where no convolution
    /// precedes the BN (otherwise the BN is folded into the convolution's weights at load time).
    public static func batchNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, channels: Int,
                                 gamma: [Float], beta: [Float], mean: [Float], variance: [Float], eps: Float,
                                 options: EngineOptions = .default) {
        let (scale, shift) = foldBatchNorm(gamma: gamma, beta: beta, mean: mean, variance: variance, eps: eps)
        scale.withUnsafeBufferPointer { s in
            shift.withUnsafeBufferPointer { t in
                parallelRanges(rows, grain: max(1, 16384 / max(1, channels)), threads: options.workers) { r in
                    for i in r {
                        let row = x + i * channels
                        for c in 0..<channels { row[c] = row[c] * s[c] + t[c] }
                    }
                }
            }
        }
    }

    /// Row-wise softmax of a `rows x cols` matrix, in place, computed in the max-subtracted form
    /// so large logits do not overflow. Sums accumulate in Double.
    public static func softmax(_ x: UnsafeMutablePointer<Float>, rows: Int, cols: Int) {
        for r in 0..<rows {
            let row = x + r * cols
            var m = -Float.infinity
            for c in 0..<cols { m = max(m, row[c]) }
            var sum = 0.0
            for c in 0..<cols { let e = (row[c] - m).expValue; row[c] = e; sum += Double(e) }
            let inv = Float(1.0 / sum)
            for c in 0..<cols { row[c] *= inv }
        }
    }
}

/// The per-channel affine form of an inference BatchNorm: `scale = gamma / sqrt(var + eps)`,
/// `shift = beta - mean * scale`. Computed in Double then rounded, like PyTorch's CPU BN which
/// accumulates `invstd` in the op's accumulation type.
public func foldBatchNorm(gamma: [Float], beta: [Float], mean: [Float], variance: [Float], eps: Float)
    -> (scale: [Float], shift: [Float]) {
    var scale = [Float](repeating: 0, count: gamma.count), shift = scale
    for c in 0..<gamma.count {
        let s = Double(gamma[c]) / (Double(variance[c]) + Double(eps)).squareRoot()
        scale[c] = Float(s)
        shift[c] = Float(Double(beta[c]) - Double(mean[c]) * s)
    }
    return (scale, shift)
}

extension Float {
    @inline(__always) var expValue: Float {
        #if canImport(Darwin)
        return Float(Foundation.exp(Double(self)))
        #else
        return Float(Glibc.exp(Double(self)))
        #endif
    }
}

#if canImport(Darwin)
import Foundation
#else
import Glibc
#endif

/// The SIMD widths the kernels (GEMM tiles, depthwise, epilogues) run at. Generic code calls the
/// `SIMD` protocol's default (lane-by-lane) comparisons even when specialised; the clamping
/// requirements route them to the concrete vector types' operations.
protocol KernelVector: SIMD where Scalar == Float {
    /// The `scalarCount` floats at `p` (any alignment), always inlined (`CVectorAccess`).
    static func load(_ p: UnsafeRawPointer) -> Self
    /// Writes `v` to `p` (any alignment), always inlined (`CVectorAccess`).
    static func store(_ v: Self, to p: UnsafeMutableRawPointer)
    /// Lanes below 0 set to 0 (NaN kept).
    func zeroingNegatives() -> Self
    /// Lanes above `cap` set to `cap` (NaN kept).
    func capping(at cap: Float) -> Self
}

extension KernelVector {
    /// `self` after the activation (ReLU, ReLU6 or none). ReLU6 clamps the clamped value (not `self`
    /// twice): the optimiser then emits one max and one min instead of two compares, a mask and a blend.
    @_transparent
    func activated(_ activation: Activation) -> Self {
        switch activation {
        case .none: return self
        case .relu: return zeroingNegatives()
        case .relu6: return zeroingNegatives().capping(at: 6)
        }
    }
}

extension SIMD16: KernelVector where Scalar == Float {
    @_transparent static func load(_ p: UnsafeRawPointer) -> SIMD16<Float> { bottleneck_load_f32x16(p) }
    @_transparent static func store(_ v: SIMD16<Float>, to p: UnsafeMutableRawPointer) { bottleneck_store_f32x16(p, v) }
    @_transparent func zeroingNegatives() -> SIMD16<Float> { replacing(with: SIMD16<Float>(), where: self .< SIMD16<Float>()) }
    @_transparent func capping(at cap: Float) -> SIMD16<Float> {
        let c = SIMD16<Float>(repeating: cap)
        return replacing(with: c, where: self .> c)
    }
}

extension SIMD8: KernelVector where Scalar == Float {
    @_transparent static func load(_ p: UnsafeRawPointer) -> SIMD8<Float> { bottleneck_load_f32x8(p) }
    @_transparent static func store(_ v: SIMD8<Float>, to p: UnsafeMutableRawPointer) { bottleneck_store_f32x8(p, v) }
    @_transparent func zeroingNegatives() -> SIMD8<Float> { replacing(with: SIMD8<Float>(), where: self .< SIMD8<Float>()) }
    @_transparent func capping(at cap: Float) -> SIMD8<Float> {
        let c = SIMD8<Float>(repeating: cap)
        return replacing(with: c, where: self .> c)
    }
}
