import CBLAS
import Foundation

/// Spatial zero padding of a convolution or pooling window.
public enum Padding: Sendable, Equatable {
    /// Fixed padding per side, in pixels (PyTorch's `padding=` is the symmetric case).
    case explicit(top: Int, left: Int, bottom: Int, right: Int)
    /// TensorFlow "SAME": output = ceil(input / stride); the total padding
    /// `max((out - 1) * stride + k - in, 0)` is split with the smaller half on top/left, computed
    /// from the actual input size (EfficientNet-Lite's `Conv2dDynamicSamePadding`).
    case same

    /// Symmetric padding of `p` pixels on every side.
    public static func symmetric(_ p: Int) -> Padding { .explicit(top: p, left: p, bottom: p, right: p) }

    /// Resolves to concrete per-side padding for an input of `height x width`.
    public func resolve(height: Int, width: Int, kernelH: Int, kernelW: Int, stride: Int)
        -> (top: Int, left: Int, bottom: Int, right: Int) {
        switch self {
        case let .explicit(t, l, b, r): return (t, l, b, r)
        case .same:
            let oh = (height + stride - 1) / stride, ow = (width + stride - 1) / stride
            let ph = max((oh - 1) * stride + kernelH - height, 0)
            let pw = max((ow - 1) * stride + kernelW - width, 0)
            return (ph / 2, pw / 2, ph - ph / 2, pw - pw / 2)
        }
    }
}

/// Output extent of a window op (floor mode, like PyTorch's default `ceil_mode=False`).
@inline(__always)
func windowOutput(_ input: Int, pad: Int, kernel: Int, stride: Int) -> Int {
    (input + pad - kernel) / stride + 1
}

/// A dense 2-D convolution (groups = 1) on NHWC activations, lowered to a GEMM (`PackedGEMM`).
///
/// Weights are reordered at init to `[Cout][kh][kw][Cin]` so one im2col row (the receptive field of
/// one output pixel, channels innermost) dots with one weight row, then packed into GEMM panels.
/// A batch-norm that follows the convolution is folded in via `channelScale` (multiplied into the
/// weights) and `bias`; bias, residual add and activation run in the GEMM's output pass.
/// 1x1 stride-1 unpadded convolutions skip im2col entirely: the NHWC input already is the
/// `[N*H*W, Cin]` GEMM operand.
public final class Conv2D: @unchecked Sendable {
    /// Input channels.
    public let inChannels: Int
    /// Output channels.
    public let outChannels: Int
    /// Kernel height and width.
    public let kernelH: Int, kernelW: Int
    /// Stride in both dimensions.
    public let stride: Int
    /// Padding rule.
    public let padding: Padding
    /// Activation fused into the output pass.
    public let activation: Activation
    let weights: PackedWeights
    let bias: UnsafeMutableBufferPointer<Float>?

    /// Builds the layer from PyTorch-layout weights `[Cout][Cin][kh][kw]`.
    /// - Parameters:
    ///   - channelScale: optional per-output-channel factor multiplied into the weights (folded BN).
    ///   - bias: optional per-output-channel bias (folded BN shift plus any conv bias, already scaled).
    public init(weightOIHW: UnsafePointer<Float>, outChannels: Int, inChannels: Int, kernelH: Int, kernelW: Int,
                stride: Int = 1, padding: Padding = .symmetric(0), channelScale: [Float]? = nil, bias: [Float]? = nil,
                activation: Activation = .none) {
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernelH = kernelH; self.kernelW = kernelW; self.stride = stride
        self.padding = padding; self.activation = activation
        let k = kernelH * kernelW * inChannels
        let rows = AlignedBuffer.allocate(outChannels * k)
        defer { AlignedBuffer.free(rows) }
        for o in 0..<outChannels {
            let s = channelScale?[o] ?? 1
            for i in 0..<inChannels {
                for y in 0..<kernelH {
                    for x in 0..<kernelW {
                        rows[o * k + (y * kernelW + x) * inChannels + i] =
                            weightOIHW[((o * inChannels + i) * kernelH + y) * kernelW + x] * s
                    }
                }
            }
        }
        weights = PackedWeights(rowsNK: rows.baseAddress!, n: outChannels, k: k)
        self.bias = bias.map(AlignedBuffer.copy(of:))
    }

    deinit {
        if let bias { AlignedBuffer.free(bias) }
    }

    /// Output spatial size for an input of `height x width`.
    public func outputSize(height: Int, width: Int) -> (height: Int, width: Int) {
        let p = padding.resolve(height: height, width: width, kernelH: kernelH, kernelW: kernelW, stride: stride)
        return (windowOutput(height, pad: p.top + p.bottom, kernel: kernelH, stride: stride),
                windowOutput(width, pad: p.left + p.right, kernel: kernelW, stride: stride))
    }

    /// Multiply-accumulates per output pixel (for FLOP counts: 2x this per pixel).
    public var macsPerPixel: Int { kernelH * kernelW * inChannels * outChannels }

    /// Runs the convolution.
    /// - Parameters:
    ///   - input: NHWC `[batch][height][width][inChannels]`.
    ///   - output: NHWC `[batch][oh][ow][outChannels]`; must not alias `input`.
    ///   - residual: optional NHWC tensor of the output's shape added before the activation
    ///     (ResNet's skip connection, fused into the output pass). May alias neither.
    ///   - workspace: scratch for im2col, grown on demand and reused.
    /// - Complexity: O(batch * oh * ow * kh * kw * Cin * Cout) multiply-adds.
    public func forward(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                        output: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>? = nil,
                        workspace: Workspace) {
        let p = padding.resolve(height: height, width: width, kernelH: kernelH, kernelW: kernelW, stride: stride)
        let oh = windowOutput(height, pad: p.top + p.bottom, kernel: kernelH, stride: stride)
        let ow = windowOutput(width, pad: p.left + p.right, kernel: kernelW, stride: stride)
        let m = batch * oh * ow, k = kernelH * kernelW * inChannels, n = outChannels
        let biasPointer = bias.map { UnsafePointer($0.baseAddress!) }
        if kernelH == 1 && kernelW == 1 && stride == 1 && p == (0, 0, 0, 0) {
            PackedGEMM.run(a: input, lda: k, m: m, weights: weights, c: output, ldc: n, bias: biasPointer,
                           residual: residual, residualStride: n, activation: activation)
            return
        }
        // im2col in row chunks of about 1 MB so the chunk is still cache-resident when the GEMM reads it.
        let chunk = max(PackedGEMM.mBlock, min(m, (1 << 18) / k / PackedGEMM.mBlock * PackedGEMM.mBlock))
        let scratch = workspace.pointer(minimumCount: min(chunk, m) * k)
        var r0 = 0
        while r0 < m {
            let rows = min(chunk, m - r0)
            im2col(input: input, height: height, width: width, oh: oh, ow: ow, pad: (p.top, p.left),
                   rowStart: r0, rows: rows, into: scratch)
            PackedGEMM.run(a: scratch, lda: k, m: rows, weights: weights, c: output + r0 * n, ldc: n, bias: biasPointer,
                           residual: residual.map { $0 + r0 * n }, residualStride: n, activation: activation)
            r0 += rows
        }
    }

    /// Fills `rows` im2col rows starting at output pixel `rowStart`. Each row is the receptive field
    /// `[kh][kw][Cin]`; within one kernel row the in-bounds pixels are contiguous in NHWC, so each
    /// kernel row is one copy plus zero fill for the padded edges.
    private func im2col(input: UnsafePointer<Float>, height: Int, width: Int, oh: Int, ow: Int, pad: (Int, Int),
                        rowStart: Int, rows: Int, into dst: UnsafeMutablePointer<Float>) {
        let cin = inChannels, kw = kernelW, kh = kernelH, s = stride
        let k = kh * kw * cin
        parallelRanges(rows, grain: max(1, 8192 / k)) { range in
            for r in range {
                let g = rowStart + r
                let img = g / (oh * ow), rem = g - img * oh * ow
                let oy = rem / ow, ox = rem - oy * ow
                let row = dst + r * k
                let x0 = ox * s - pad.1
                let kxLo = max(0, -x0), kxHi = min(kw, width - x0)
                for ky in 0..<kh {
                    let iy = oy * s - pad.0 + ky
                    let seg = row + ky * kw * cin
                    if iy < 0 || iy >= height || kxLo >= kxHi {
                        seg.update(repeating: 0, count: kw * cin)
                        continue
                    }
                    if kxLo > 0 { seg.update(repeating: 0, count: kxLo * cin) }
                    seg.advanced(by: kxLo * cin).update(
                        from: input + ((img * height + iy) * width + x0 + kxLo) * cin, count: (kxHi - kxLo) * cin)
                    if kxHi < kw { seg.advanced(by: kxHi * cin).update(repeating: 0, count: (kw - kxHi) * cin) }
                }
            }
        }
    }
}

/// A depthwise 2-D convolution (groups = channels, one filter per channel) on NHWC activations,
/// vectorised over channels with 8-wide SIMD; BN folding and the activation as in `Conv2D`.
public final class DepthwiseConv2D: @unchecked Sendable {
    /// Channels (input = output).
    public let channels: Int
    /// Kernel height and width.
    public let kernelH: Int, kernelW: Int
    /// Stride in both dimensions.
    public let stride: Int
    /// Padding rule.
    public let padding: Padding
    /// Activation fused into the output pass.
    public let activation: Activation
    let weights: UnsafeMutableBufferPointer<Float>   // [kh][kw][C]
    let bias: UnsafeMutableBufferPointer<Float>      // [C], zeros when absent

    /// Builds the layer from PyTorch-layout weights `[C][1][kh][kw]`.
    public init(weightC1HW: UnsafePointer<Float>, channels: Int, kernelH: Int, kernelW: Int, stride: Int = 1,
                padding: Padding = .symmetric(0), channelScale: [Float]? = nil, bias: [Float]? = nil,
                activation: Activation = .none) {
        self.channels = channels; self.kernelH = kernelH; self.kernelW = kernelW
        self.stride = stride; self.padding = padding; self.activation = activation
        weights = AlignedBuffer.allocate(kernelH * kernelW * channels)
        for c in 0..<channels {
            let s = channelScale?[c] ?? 1
            for t in 0..<(kernelH * kernelW) { weights[t * channels + c] = weightC1HW[c * kernelH * kernelW + t] * s }
        }
        self.bias = AlignedBuffer.allocate(channels)
        _ = self.bias.initialize(from: bias ?? [Float](repeating: 0, count: channels))
    }

    deinit { AlignedBuffer.free(weights); AlignedBuffer.free(bias) }

    /// Output spatial size for an input of `height x width`.
    public func outputSize(height: Int, width: Int) -> (height: Int, width: Int) {
        let p = padding.resolve(height: height, width: width, kernelH: kernelH, kernelW: kernelW, stride: stride)
        return (windowOutput(height, pad: p.top + p.bottom, kernel: kernelH, stride: stride),
                windowOutput(width, pad: p.left + p.right, kernel: kernelW, stride: stride))
    }

    /// Runs the convolution: NHWC `input` to NHWC `output` (must not alias).
    /// - Complexity: O(batch * oh * ow * kh * kw * C), parallel over output rows.
    public func forward(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                        output: UnsafeMutablePointer<Float>) {
        let p = padding.resolve(height: height, width: width, kernelH: kernelH, kernelW: kernelW, stride: stride)
        let oh = windowOutput(height, pad: p.top + p.bottom, kernel: kernelH, stride: stride)
        let ow = windowOutput(width, pad: p.left + p.right, kernel: kernelW, stride: stride)
        let c = channels, kh = kernelH, kw = kernelW, s = stride
        let vec = c & ~7
        let w = UnsafePointer(weights.baseAddress!), b = UnsafePointer(bias.baseAddress!)
        let act = activation
        let zero = SIMD8<Float>(repeating: 0), six = SIMD8<Float>(repeating: 6)
        // Output columns whose window lies fully inside the image take the register-blocked path
        // (4 pixels per 8-channel block, each weight vector loaded once per 4 outputs); the few edge
        // columns take the bounds-checked path.
        let interiorLo = min(ow, (p.left + s - 1) / s)
        let interiorHi = max(interiorLo, min(ow, width + p.left - kw >= 0 ? (width + p.left - kw) / s + 1 : 0))
        parallelRanges(batch * oh, grain: 1) { range in
            for rowIndex in range {
                let img = rowIndex / oh, oy = rowIndex - img * oh
                let y0 = oy * s - p.top
                let kyLo = max(0, -y0), kyHi = max(kyLo, min(kh, height - y0))
                let inImage = input + img * height * width * c
                let outRow = output + rowIndex * ow * c
                var ox = interiorLo
                while ox + 4 <= interiorHi {
                    let x0 = ox * s - p.left
                    var ch = 0
                    while ch < vec {
                        let bv = UnsafeRawPointer(b + ch).loadUnaligned(as: SIMD8<Float>.self)
                        var a0 = bv, a1 = bv, a2 = bv, a3 = bv
                        for ky in kyLo..<kyHi {
                            let src = inImage + ((y0 + ky) * width + x0) * c + ch
                            let wr = w + ky * kw * c + ch
                            for kx in 0..<kw {
                                let wv = UnsafeRawPointer(wr + kx * c).loadUnaligned(as: SIMD8<Float>.self)
                                let q = src + kx * c
                                a0 += UnsafeRawPointer(q).loadUnaligned(as: SIMD8<Float>.self) * wv
                                a1 += UnsafeRawPointer(q + s * c).loadUnaligned(as: SIMD8<Float>.self) * wv
                                a2 += UnsafeRawPointer(q + 2 * s * c).loadUnaligned(as: SIMD8<Float>.self) * wv
                                a3 += UnsafeRawPointer(q + 3 * s * c).loadUnaligned(as: SIMD8<Float>.self) * wv
                            }
                        }
                        let dst = outRow + ox * c + ch
                        UnsafeMutableRawPointer(dst).storeBytes(of: clampActivation(a0, act, zero, six), as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(dst + c).storeBytes(of: clampActivation(a1, act, zero, six), as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(dst + 2 * c).storeBytes(of: clampActivation(a2, act, zero, six), as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(dst + 3 * c).storeBytes(of: clampActivation(a3, act, zero, six), as: SIMD8<Float>.self)
                        ch += 8
                    }
                    if vec < c {
                        for j in 0..<4 { edgePixel(ox + j, vectorised: false) }
                    }
                    ox += 4
                }
                for x in 0..<ow where x < interiorLo || x >= ox { edgePixel(x, vectorised: true) }

                /// One output pixel with clipped window; channels from 0 (or from `vec` for the tail only).
                func edgePixel(_ ox: Int, vectorised: Bool) {
                    let x0 = ox * s - p.left
                    let kxLo = max(0, -x0), kxHi = max(kxLo, min(kw, width - x0))
                    let dst = outRow + ox * c
                    var ch = vectorised ? 0 : vec
                    while ch < vec {
                        var acc = UnsafeRawPointer(b + ch).loadUnaligned(as: SIMD8<Float>.self)
                        for ky in kyLo..<kyHi {
                            let src = inImage + ((y0 + ky) * width + x0) * c + ch
                            let wr = w + ky * kw * c + ch
                            for kx in kxLo..<kxHi {
                                acc += UnsafeRawPointer(src + kx * c).loadUnaligned(as: SIMD8<Float>.self)
                                    * UnsafeRawPointer(wr + kx * c).loadUnaligned(as: SIMD8<Float>.self)
                            }
                        }
                        UnsafeMutableRawPointer(dst + ch).storeBytes(of: clampActivation(acc, act, zero, six), as: SIMD8<Float>.self)
                        ch += 8
                    }
                    while ch < c {
                        var acc = b[ch]
                        for ky in kyLo..<kyHi {
                            for kx in kxLo..<kxHi {
                                acc += inImage[((y0 + ky) * width + x0 + kx) * c + ch] * w[(ky * kw + kx) * c + ch]
                            }
                        }
                        dst[ch] = BottleneckTensor.activate(acc, act)
                        ch += 1
                    }
                }
            }
        }
    }
}

@inline(__always)
func clampActivation(_ v: SIMD8<Float>, _ act: Activation, _ zero: SIMD8<Float>, _ six: SIMD8<Float>) -> SIMD8<Float> {
    switch act {
    case .none: return v
    case .relu: return v.replacing(with: zero, where: v .< zero)
    case .relu6: return v.replacing(with: zero, where: v .< zero).replacing(with: six, where: v .> six)
    }
}

/// A fully connected layer `y = x W^T + b` over row-major `[batch][in]` inputs (PyTorch's
/// `nn.Linear` weight layout `[out][in]`), one sgemm plus the fused bias/activation pass.
public final class Linear: @unchecked Sendable {
    /// Input features.
    public let inFeatures: Int
    /// Output features.
    public let outFeatures: Int
    /// Activation fused into the output pass.
    public let activation: Activation
    let weights: UnsafeMutableBufferPointer<Float>
    let bias: UnsafeMutableBufferPointer<Float>?

    /// Builds the layer from `[out][in]` weights. `columnPermutation`, when given, maps a new input
    /// index to the PyTorch one (`new[o][j] = old[o][perm[j]]`); VGG uses it so an NHWC flatten
    /// feeds weights trained on torch's NCHW flatten.
    public init(weight: UnsafePointer<Float>, outFeatures: Int, inFeatures: Int, bias: [Float]?,
                activation: Activation = .none, columnPermutation: [Int]? = nil) {
        self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.activation = activation
        weights = AlignedBuffer.allocate(outFeatures * inFeatures)
        if let perm = columnPermutation {
            for o in 0..<outFeatures {
                let src = weight + o * inFeatures, dst = weights.baseAddress! + o * inFeatures
                for j in 0..<inFeatures { dst[j] = src[perm[j]] }
            }
        } else {
            weights.baseAddress!.initialize(from: weight, count: outFeatures * inFeatures)
        }
        self.bias = bias.map(AlignedBuffer.copy(of:))
    }

    deinit {
        AlignedBuffer.free(weights)
        if let bias { AlignedBuffer.free(bias) }
    }

    /// `output[batch][out] = act(input[batch][in] W^T + b)`.
    public func forward(input: UnsafePointer<Float>, batch: Int, output: UnsafeMutablePointer<Float>) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), Int32(outFeatures), Int32(inFeatures),
                    1, input, Int32(inFeatures), weights.baseAddress, Int32(inFeatures), 0, output, Int32(outFeatures))
        applyEpilogueParallel(output, rows: batch, cols: outFeatures, bias: bias.map { UnsafePointer($0.baseAddress!) },
                              residual: nil, activation: activation)
    }
}
