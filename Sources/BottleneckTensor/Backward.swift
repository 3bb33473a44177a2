import CBLAS

/// The geometry of a dense (groups = 1) or depthwise convolution, as its backward passes need it.
/// Depthwise convolutions have `inChannels == outChannels` and one filter per channel.
public struct ConvolutionShape: SlidingWindowLayer, Sendable, Equatable {
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
    /// One filter per channel (`inChannels == outChannels`).
    public let isDepthwise: Bool

    /// Describes a convolution.
    public init(inChannels: Int, outChannels: Int, kernelH: Int, kernelW: Int, stride: Int, padding: Padding,
                isDepthwise: Bool = false) {
        precondition(!isDepthwise || inChannels == outChannels, "a depthwise convolution keeps its channel count")
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernelH = kernelH; self.kernelW = kernelW; self.stride = stride; self.padding = padding
        self.isDepthwise = isDepthwise
    }

    public var inputsPerOutput: Int { isDepthwise ? 1 : inChannels }
    public var outputChannels: Int { outChannels }

    /// Length of one receptive field of a dense convolution, `kernelH * kernelW * inChannels` (the
    /// weight gradient's row length, in `[kh][kw][Cin]` order).
    public var patchLength: Int { kernelH * kernelW * inChannels }

    /// Whether the GEMM operand is the NHWC input itself (1x1, stride 1, no padding).
    func isPlainPointwise(height: Int, width: Int) -> Bool {
        kernelH == 1 && kernelW == 1 && stride == 1
            && padding.resolve(height: height, width: width, kernelH: 1, kernelW: 1, stride: 1) == (0, 0, 0, 0)
    }

    /// The receptive fields of `input` (NHWC, `inChannels` channels) as the GEMM's patch operand.
    func patches(_ input: UnsafePointer<Float>, height: Int, width: Int) -> PatchGeometry {
        let p = padding.resolve(height: height, width: width, kernelH: kernelH, kernelW: kernelW, stride: stride)
        let (oh, ow) = outputSize(height: height, width: width)
        return PatchGeometry(input: input, height: height, width: width, channels: inChannels, kernelH: kernelH,
                             kernelW: kernelW, stride: stride, padTop: p.top, padLeft: p.left, outHeight: oh, outWidth: ow)
    }
}

/// Floats of im2col rows the convolution backward passes hold at once (gathered patches for the
/// weight gradient, patch gradients before they are scattered): 4 MiB, an L3-sized block that keeps
/// the GEMMs long without allocating a whole layer's im2col matrix. A single image whose rows exceed
/// it is still processed whole.
let backwardPatchBudget = 1 << 20

/// The input gradient of a dense convolution on NHWC activations: `dx = col2im(dy · W)`, the GEMM
/// against the transposed (packed) weights on the inference engine's `PackedGEMM`, then each patch
/// gradient scattered back onto the pixels it was gathered from.
///
/// Built from the same PyTorch-layout weights (and folded batch-norm scale) as `Conv2D`; rebuild it
/// when the weights change.
public final class ConvolutionInputGradient: @unchecked Sendable {
    /// The convolution.
    public let shape: ConvolutionShape
    /// `W` transposed: `n = kh * kw * Cin` rows of `k = Cout`.
    let transposed: PackedWeights

    /// Packs `weightOIHW` `[Cout][Cin][kh][kw]` times `channelScale[o]` (when given) as `[kh*kw*Cin][Cout]`.
    public init(weightOIHW: UnsafePointer<Float>, shape: ConvolutionShape, channelScale: [Float]? = nil,
                options: EngineOptions = .default) {
        self.shape = shape
        transposed = Conv2D.packedWeights(weightOIHW: weightOIHW, outChannels: shape.outChannels, inChannels: shape.inChannels,
                                          kernelH: shape.kernelH, kernelW: shape.kernelW, channelScale: channelScale,
                                          transposed: true, hugePages: options.hugePages, threads: options.workers)
    }

    /// Writes `dx` (NHWC `[batch][height][width][Cin]`, overwritten) from `outputGradient` (NHWC
    /// `[batch][oh][ow][Cout]`). `dx` must not alias `outputGradient`.
    /// - Complexity: `batch * oh * ow * Cout * kh * kw * Cin` multiply-adds.
    public func run(outputGradient g: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                    into dx: UnsafeMutablePointer<Float>, options: EngineOptions = .default) {
        run(outputGradient: g, batch: batch, height: height, width: width, into: dx, blockFloats: backwardPatchBudget,
            options: options)
    }

    /// `run` with patch gradients computed `blockFloats` floats (whole images, at least one) at a time.
    func run(outputGradient g: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
             into dx: UnsafeMutablePointer<Float>, blockFloats: Int, options: EngineOptions) {
        let cout = shape.outChannels, cin = shape.inChannels, k = shape.patchLength
        let (oh, ow) = shape.outputSize(height: height, width: width)
        if shape.isPlainPointwise(height: height, width: width) {
            PackedGEMM.run(.matrix(g, rowStride: cout), m: batch * oh * ow, weights: transposed, c: dx, ldc: cin,
                           bias: nil, residual: nil, residualStride: cin, activation: .none, options: options)
            return
        }
        dx.update(repeating: 0, count: batch * height * width * cin)
        let perImage = oh * ow * k
        let images = max(1, min(batch, blockFloats / max(1, perImage)))
        KernelScratch.with(count: images * perImage) { columns in
            var n0 = 0
            while n0 < batch {
                let n = min(images, batch - n0)
                PackedGEMM.run(.matrix(g + n0 * oh * ow * cout, rowStride: cout), m: n * oh * ow, weights: transposed,
                               c: columns, ldc: k, bias: nil, residual: nil, residualStride: k, activation: .none,
                               options: options)
                // Images own disjoint pixels of dx: one task each.
                let first = n0
                TensorThreads.run(pieces: n, threads: options.workers) { i in
                    let geometry = self.shape.patches(UnsafePointer(dx + (first + i) * height * width * cin),
                                                      height: height, width: width)
                    Self.scatter(UnsafePointer(columns + i * perImage), geometry: geometry,
                                 into: dx + (first + i) * height * width * cin)
                }
                n0 += n
            }
        }
    }

    /// col2im of one image: adds patch row `r` (output pixel `r`, `[kh][kw][Cin]`) onto the input
    /// pixels its window covers; padding positions are dropped.
    static func scatter(_ columns: UnsafePointer<Float>, geometry g: PatchGeometry, into image: UnsafeMutablePointer<Float>) {
        let cin = g.channels, k = g.kernelH * g.kernelW * cin
        for oy in 0..<g.outHeight {
            for ox in 0..<g.outWidth {
                let row = columns + (oy * g.outWidth + ox) * k
                let y0 = oy * g.stride - g.padTop, x0 = ox * g.stride - g.padLeft
                for ky in 0..<g.kernelH {
                    let iy = y0 + ky
                    if iy < 0 || iy >= g.height { continue }
                    let xLo = max(0, -x0), xHi = min(g.kernelW, g.width - x0)
                    if xLo >= xHi { continue }
                    let src = row + (ky * g.kernelW + xLo) * cin
                    let dst = image + (iy * g.width + x0 + xLo) * cin
                    for e in 0..<((xHi - xLo) * cin) { dst[e] += src[e] }
                }
            }
        }
    }
}

/// Weight and bias gradients of the layers, and the backward passes of the parameter-free ones, on
/// NHWC activations: the counterparts of the inference kernels (`Conv2D`, `DepthwiseConv2D`,
/// `Linear`, `Pooling2D`, the fused activations). Gradients named `...Gradient` with `accumulate`
/// semantics add to what the buffer holds (PyTorch's `.grad`); input gradients overwrite.
public enum Backward {
    /// Multiplies `gradient` in place by the derivative of `activation` at the layer's output
    /// `output`: ReLU passes where `output > 0`, ReLU6 where `0 < output < 6` (PyTorch's convention:
    /// zero at the kinks; the output determines it since the activation is monotone and clamps).
    public static func activation(_ activation: Activation, output: UnsafePointer<Float>,
                                  gradient: UnsafeMutablePointer<Float>, count: Int, options: EngineOptions = .default) {
        guard activation != .none else { return }
        let cap: Float = activation == .relu6 ? 6 : .infinity
        parallelRanges(count, grain: 1 << 14, threads: options.workers) { range in
            for i in range where !(output[i] > 0 && output[i] < cap) { gradient[i] = 0 }
        }
    }

    /// `sums[c] += Σ_rows gradient[r][c]`: a bias gradient (and batch norm's shift gradient), summed in
    /// double.
    public static func accumulateChannelSums(_ gradient: UnsafePointer<Float>, rows: Int, channels: Int,
                                             into sums: UnsafeMutablePointer<Float>) {
        var acc = [Double](repeating: 0, count: channels)
        acc.withUnsafeMutableBufferPointer { a in
            for r in 0..<rows {
                let row = gradient + r * channels
                for c in 0..<channels { a[c] += Double(row[c]) }
            }
            for c in 0..<channels { sums[c] += Float(a[c]) }
        }
    }

    /// Dense convolution weight gradient: `dW[o][j] += Σ_m dy[m][o] · patch[m][j]`, with `dW` in the
    /// GEMM's row layout `[Cout][kh][kw][Cin]` and `patch` the receptive fields of `input` (NHWC) (the
    /// input itself for a plain 1x1 layer), gathered a block of images at a time (`backwardPatchBudget`)
    /// by the inference GEMM's gather. Each block is one `PackedGEMM` on the kernel threads: `dyᵀ`
    /// (`[Cout][rows]`) against the block packed as weights (`n` = patch length, reduced over its rows),
    /// adding onto `dW` through the residual input.
    /// - Complexity: `batch * oh * ow * Cout * kh * kw * Cin` multiply-adds.
    public static func convolutionWeightGradient(_ shape: ConvolutionShape, input: UnsafePointer<Float>, batch: Int,
                                                 height: Int, width: Int, outputGradient g: UnsafePointer<Float>,
                                                 accumulate dW: UnsafeMutablePointer<Float>, options: EngineOptions = .default) {
        convolutionWeightGradient(shape, input: input, batch: batch, height: height, width: width, outputGradient: g,
                                  accumulate: dW, blockFloats: backwardPatchBudget, options: options)
    }

    /// `convolutionWeightGradient` gathering `blockFloats` floats of patches (at least one image's rows) at a time.
    static func convolutionWeightGradient(_ shape: ConvolutionShape, input: UnsafePointer<Float>, batch: Int,
                                          height: Int, width: Int, outputGradient g: UnsafePointer<Float>,
                                          accumulate dW: UnsafeMutablePointer<Float>, blockFloats: Int,
                                          options: EngineOptions) {
        let cout = shape.outChannels, k = shape.patchLength
        let (oh, ow) = shape.outputSize(height: height, width: width)
        let m = batch * oh * ow
        let pointwise = shape.isPlainPointwise(height: height, width: width)
        let geometry = shape.patches(input, height: height, width: width)
        let rowsPerBlock = pointwise ? m : max(oh * ow, min(m, blockFloats / max(1, k)))
        KernelScratch.with(count: cout * rowsPerBlock + (pointwise ? 0 : rowsPerBlock * k)) { scratch in
            let transposedGradient = scratch, patches = scratch + cout * rowsPerBlock
            var r0 = 0
            while r0 < m {
                let rows = min(rowsPerBlock, m - r0), first = r0
                if !pointwise {
                    let pieces = min(rows, 4 * options.workers)
                    TensorThreads.run(pieces: pieces, threads: options.workers) { piece in
                        let a = piece * rows / pieces, b = (piece + 1) * rows / pieces
                        if a < b { geometry.gather(row0: first + a, rows: b - a, k0: 0, kc: k, into: patches + a * k, rowStride: k) }
                    }
                }
                Layout.transposeEachImage(g + r0 * cout, batch: 1, rows: rows, columns: cout, into: transposedGradient,
                                          options: options)
                let block = pointwise ? input + r0 * k : UnsafePointer(patches)
                let packed = PackedWeights(.columns(block, scale: nil), n: k, k: rows, hugePages: false, threads: options.workers)
                PackedGEMM.run(.matrix(transposedGradient, rowStride: rows), m: cout, weights: packed, c: dW, ldc: k,
                               bias: nil, residual: dW, residualStride: k, activation: .none, options: options)
                r0 += rows
            }
        }
    }

    /// Depthwise convolution gradients. `weights` is the forward's `[kh][kw][C]` filter (folded scale
    /// included when the forward folded one); `weightGradient` (`[kh][kw][C]`, accumulated) receives
    /// `Σ dy · x` over each tap's window positions; `inputGradient` (NHWC, overwritten) when given.
    /// Stride 1: the input gradient is the inference kernel's forward convolution of `dy` with the
    /// filter rotated by 180° (`transposedStrideOne`). Otherwise both gradients come from one loop
    /// parallel over channel blocks (every task owns its channels of both outputs).
    /// - Complexity: `2 * batch * oh * ow * kh * kw * C` multiply-adds.
    public static func depthwise(_ shape: ConvolutionShape, input: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                                 weights: UnsafePointer<Float>, outputGradient g: UnsafePointer<Float>,
                                 accumulateWeightGradient dW: UnsafeMutablePointer<Float>,
                                 inputGradient dx: UnsafeMutablePointer<Float>?, options: EngineOptions = .default) {
        let c = shape.inChannels, kh = shape.kernelH, kw = shape.kernelW, s = shape.stride
        let p = shape.padding.resolve(height: height, width: width, kernelH: kh, kernelW: kw, stride: s)
        let (oh, ow) = shape.outputSize(height: height, width: width)
        let transposed = dx == nil ? nil : transposedStrideOne(shape, weights: weights, height: height, width: width)
        if let transposed, let dx { transposed.forward(input: g, batch: batch, height: oh, width: ow, output: dx, options: options) }
        let dx = transposed == nil ? dx : nil
        let blocks = (c + 7) / 8
        let pieces = max(1, min(blocks, 4 * options.workers))
        TensorThreads.run(pieces: pieces, threads: options.workers) { piece in
            let c0 = piece * blocks / pieces * 8, c1 = min(c, (piece + 1) * blocks / pieces * 8)
            guard c0 < c1 else { return }
            let n = c1 - c0
            if let dx { for pixel in 0..<(batch * height * width) { (dx + pixel * c + c0).update(repeating: 0, count: n) } }
            for img in 0..<batch {
                let x = input + img * height * width * c, dxImage = dx.map { $0 + img * height * width * c }
                for oy in 0..<oh {
                    let y0 = oy * s - p.top
                    for ox in 0..<ow {
                        let x0 = ox * s - p.left
                        let gp = g + ((img * oh + oy) * ow + ox) * c + c0
                        for ky in 0..<kh {
                            let iy = y0 + ky
                            if iy < 0 || iy >= height { continue }
                            for kx in 0..<kw {
                                let ix = x0 + kx
                                if ix < 0 || ix >= width { continue }
                                let tap = (ky * kw + kx) * c + c0, pixel = (iy * width + ix) * c + c0
                                let xp = x + pixel, wg = dW + tap
                                for j in 0..<n { wg[j] += gp[j] * xp[j] }
                                if let dxImage {
                                    let d = dxImage + pixel, w = weights + tap
                                    for j in 0..<n { d[j] += gp[j] * w[j] }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The stride-1 depthwise convolution whose forward pass on `dy` (`oh x ow`) is the input gradient
    /// (`height x width`) of `shape`: each input pixel sums the outputs whose windows covered it, which
    /// is the window of the 180°-rotated filter padded by `k - 1 - pad` before and the rest after.
    /// Nil for other strides or when that padding would be negative. `weights`: `[kh][kw][C]`.
    static func transposedStrideOne(_ shape: ConvolutionShape, weights: UnsafePointer<Float>, height: Int,
                                    width: Int) -> DepthwiseConv2D? {
        let c = shape.inChannels, kh = shape.kernelH, kw = shape.kernelW, taps = kh * kw
        guard shape.stride == 1 else { return nil }
        let p = shape.padding.resolve(height: height, width: width, kernelH: kh, kernelW: kw, stride: 1)
        let (oh, ow) = shape.outputSize(height: height, width: width)
        let top = kh - 1 - p.top, left = kw - 1 - p.left
        let bottom = height - oh + kh - 1 - top, right = width - ow + kw - 1 - left
        guard min(top, left, bottom, right) >= 0 else { return nil }
        // Rotated, in PyTorch's [C][1][kh][kw]: tap t of the rotated filter is tap taps - 1 - t.
        var rotated = [Float](repeating: 0, count: taps * c)
        for t in 0..<taps { for ch in 0..<c { rotated[ch * taps + taps - 1 - t] = weights[t * c + ch] } }
        return rotated.withUnsafeBufferPointer {
            DepthwiseConv2D(weightC1HW: $0.baseAddress!, channels: c, kernelH: kh, kernelW: kw, stride: 1,
                            padding: .explicit(top: top, left: left, bottom: bottom, right: right))
        }
    }

    /// Fully connected layer gradients for `y = x Wᵀ + b` with `x` `[batch][in]` and `W` `[out][in]`:
    /// `dW += dyᵀ x`, and `dx = dy W` (overwritten) when `inputGradient` is given. One sgemm each.
    public static func linear(input: UnsafePointer<Float>, batch: Int, inFeatures: Int, outFeatures: Int,
                              weight: UnsafePointer<Float>, outputGradient g: UnsafePointer<Float>,
                              accumulateWeightGradient dW: UnsafeMutablePointer<Float>,
                              inputGradient dx: UnsafeMutablePointer<Float>?) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outFeatures), Int32(inFeatures), Int32(batch), 1,
                    g, Int32(outFeatures), input, Int32(inFeatures), 1, dW, Int32(inFeatures))
        if let dx {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(batch), Int32(inFeatures), Int32(outFeatures), 1,
                        g, Int32(outFeatures), weight, Int32(inFeatures), 0, dx, Int32(inFeatures))
        }
    }

    /// Max pooling input gradient (`Pooling2D.maxPool`'s geometry): each output gradient goes to the
    /// first input of its window (row-major scan) holding the window's maximum, as PyTorch routes it.
    /// `dx` (NHWC) is overwritten. Parallel over images.
    public static func maxPool(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int, channels c: Int,
                               kernel: Int, stride: Int, padding: Int, outputGradient g: UnsafePointer<Float>,
                               into dx: UnsafeMutablePointer<Float>, options: EngineOptions = .default) {
        let (oh, ow) = Pooling2D.outputSize(height: height, width: width, kernel: kernel, stride: stride, padding: padding)
        TensorThreads.run(pieces: batch, threads: options.workers) { img in
            let x = input + img * height * width * c, d = dx + img * height * width * c
            d.update(repeating: 0, count: height * width * c)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, c)) { best in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: max(1, c)) { where_ in
                    for oy in 0..<oh {
                        let y0 = oy * stride - padding
                        for ox in 0..<ow {
                            let x0 = ox * stride - padding
                            best.initialize(repeating: -.infinity)
                            where_.initialize(repeating: -1)
                            for iy in max(0, y0)..<min(height, y0 + kernel) {
                                for ix in max(0, x0)..<min(width, x0 + kernel) {
                                    let pixel = (iy * width + ix) * c
                                    for ch in 0..<c where x[pixel + ch] > best[ch] || where_[ch] < 0 {
                                        best[ch] = x[pixel + ch]; where_[ch] = pixel + ch
                                    }
                                }
                            }
                            let gp = g + ((img * oh + oy) * ow + ox) * c
                            for ch in 0..<c where where_[ch] >= 0 { d[where_[ch]] += gp[ch] }
                        }
                    }
                }
            }
        }
    }

    /// Average pooling input gradient (`Pooling2D.avgPool`'s windows and divisors): each output
    /// gradient, divided by its window's divisor, is added to every input pixel of the window.
    /// `dx` (NHWC) is overwritten.
    public static func avgPool(batch: Int, height: Int, width: Int, channels c: Int, kernel: Int, stride: Int, padding: Int,
                               countIncludePad: Bool, outputGradient g: UnsafePointer<Float>,
                               into dx: UnsafeMutablePointer<Float>, options: EngineOptions = .default) {
        let (oh, ow) = Pooling2D.outputSize(height: height, width: width, kernel: kernel, stride: stride, padding: padding)
        TensorThreads.run(pieces: batch, threads: options.workers) { img in
            let d = dx + img * height * width * c
            d.update(repeating: 0, count: height * width * c)
            for oy in 0..<oh {
                let y0 = oy * stride - padding, ys = max(0, y0)..<min(height, y0 + kernel)
                for ox in 0..<ow {
                    let x0 = ox * stride - padding, xs = max(0, x0)..<min(width, x0 + kernel)
                    let cells = countIncludePad
                        ? (min(y0 + kernel, height + padding) - y0) * (min(x0 + kernel, width + padding) - x0)
                        : ys.count * xs.count
                    spread(g + ((img * oh + oy) * ow + ox) * c, scale: 1 / Float(cells), ys: ys, xs: xs, width: width,
                           channels: c, into: d)
                }
            }
        }
    }

    /// Adaptive average pooling input gradient (`Pooling2D.adaptiveAvgPool`'s cells). `dx` overwritten.
    public static func adaptiveAvgPool(batch: Int, height: Int, width: Int, channels c: Int, outHeight: Int, outWidth: Int,
                                       outputGradient g: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>,
                                       options: EngineOptions = .default) {
        TensorThreads.run(pieces: batch, threads: options.workers) { img in
            let d = dx + img * height * width * c
            d.update(repeating: 0, count: height * width * c)
            for oy in 0..<outHeight {
                let ys = (oy * height / outHeight)..<((oy + 1) * height + outHeight - 1) / outHeight
                for ox in 0..<outWidth {
                    let xs = (ox * width / outWidth)..<((ox + 1) * width + outWidth - 1) / outWidth
                    spread(g + ((img * outHeight + oy) * outWidth + ox) * c, scale: 1 / Float(ys.count * xs.count),
                           ys: ys, xs: xs, width: width, channels: c, into: d)
                }
            }
        }
    }

    /// Global average pooling input gradient: `dx[n][y][x][c] = dy[n][c] / (H * W)` (overwritten).
    public static func globalAvgPool(batch: Int, height: Int, width: Int, channels c: Int,
                                     outputGradient g: UnsafePointer<Float>, into dx: UnsafeMutablePointer<Float>,
                                     options: EngineOptions = .default) {
        let scale = 1 / Float(height * width)
        parallelRanges(batch * height * width, grain: 256, threads: options.workers) { pixels in
            for pixel in pixels {
                let src = g + pixel / (height * width) * c, dst = dx + pixel * c
                for ch in 0..<c { dst[ch] = src[ch] * scale }
            }
        }
    }

    /// Adds `g[0..<channels] * scale` to the pixels `ys x xs` of one NHWC image.
    @inline(__always)
    static func spread(_ g: UnsafePointer<Float>, scale: Float, ys: Range<Int>, xs: Range<Int>, width: Int, channels c: Int,
                       into image: UnsafeMutablePointer<Float>) {
        for y in ys {
            for x in xs {
                let dst = image + (y * width + x) * c
                for ch in 0..<c { dst[ch] += g[ch] * scale }
            }
        }
    }
}
