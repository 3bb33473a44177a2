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

/// A layer that slides a `kernelH x kernelW` window over its input with `stride` and `padding`
/// (dense and depthwise convolutions): output size and work follow from those alone.
public protocol SlidingWindowLayer {
    var kernelH: Int { get }
    var kernelW: Int { get }
    var stride: Int { get }
    var padding: Padding { get }
    /// Input channels each output sums over (the input channel count of a dense convolution, 1 for a depthwise one).
    var inputsPerOutput: Int { get }
    /// Output channels.
    var outputChannels: Int { get }
}

extension SlidingWindowLayer {
    /// Output spatial size for an input of `height x width`.
    public func outputSize(height: Int, width: Int) -> (height: Int, width: Int) {
        let p = padding.resolve(height: height, width: width, kernelH: kernelH, kernelW: kernelW, stride: stride)
        return (windowOutput(height, pad: p.top + p.bottom, kernel: kernelH, stride: stride),
                windowOutput(width, pad: p.left + p.right, kernel: kernelW, stride: stride))
    }

    /// Multiply-accumulates per image for a `height x width` input (FLOPs are 2x this).
    public func macs(height: Int, width: Int) -> Int {
        let (oh, ow) = outputSize(height: height, width: width)
        return Conv2D.macs(outputHeight: oh, outputWidth: ow, kernelH: kernelH, kernelW: kernelW,
                           inputsPerOutput: inputsPerOutput, outChannels: outputChannels)
    }
}

/// A dense 2-D convolution (groups = 1) on NHWC activations, lowered to a GEMM (`PackedGEMM`).
///
/// Weights are reordered at init to `[Cout][kh][kw][Cin]` so one im2col row (the receptive field of
/// one output pixel, channels innermost) dots with one weight row, then packed into GEMM panels.
/// A batch-norm that follows the convolution is folded in via `channelScale` (multiplied into the
/// weights) and `bias`; bias, residual add and activation run in the GEMM's output pass.
/// 1x1 stride-1 unpadded convolutions skip im2col entirely: the NHWC input already is the
/// `[N*H*W, Cin]` GEMM operand. 3x3 stride-1 padding-1 convolutions with enough channels run as
/// Winograd F(4x4, 3x3) instead (`WinogradConvolution`, about 4x fewer multiply-adds); such a layer
/// keeps only the Winograd-transformed weights, except where Winograd pays only for batches (large
/// weights on small maps): those keep both and choose per call.
public final class Conv2D: SlidingWindowLayer, @unchecked Sendable {
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
    public var inputsPerOutput: Int { inChannels }
    public var outputChannels: Int { outChannels }
    /// Activation fused into the output pass.
    public let activation: Activation
    /// Whether the layer holds Winograd F(4x4, 3x3) weights (decided at init from the algorithm and
    /// geometry). It runs them on every call unless it also holds direct weights (`usesDirect`);
    /// then only on calls with at least `winogradMinimumTiles` tiles.
    public var usesWinograd: Bool { winograd != nil || line != nil }
    /// Floats of Winograd-transformed weights the layer holds (per weight pair 36, or α per folded
    /// kernel row of a 1-D Winograd layer; 0 without).
    public var winogradWeightFloats: Int {
        (winograd != nil ? 36 : line.map { $0.alpha * $0.foldedRows } ?? 0) * inChannels * outChannels
    }
    /// Whether the layer holds the direct path's weights (always, except for Winograd-only layers).
    public var usesDirect: Bool { direct != nil }
    /// Whether every forward pass takes the direct path (no Winograd weights of either kind).
    public var runsDirectOnly: Bool { direct != nil && winograd == nil && line == nil }

    /// Whether `forward` on `batch` maps of `height x width` runs the Winograd weights (else the
    /// direct ones): always when it holds only those, else from `winogradMinimumTiles` tiles per call.
    public func runsWinograd(batch: Int, height: Int, width: Int) -> Bool {
        if line != nil { return true }
        guard winograd != nil else { return false }
        let (oh, ow) = outputSize(height: height, width: width)
        return direct == nil || batch * Conv2D.winogradTiles(height: oh, width: ow) >= Conv2D.winogradMinimumTiles
    }
    /// The direct path's packed weights (nil when the layer always runs Winograd: one weight copy only).
    let direct: PackedWeights?
    package let winograd: WinogradConvolution?
    /// The 1-D Winograd weights of a 1 x r or r x 1 layer that runs them (then the only weights held).
    package let line: WinogradLineConvolution?
    let bias: UnsafeMutableBufferPointer<Float>?

    /// The direct path's packed GEMM weights, for kernels that fuse this layer's GEMM into their own
    /// loops (1x1 convolutions); traps for a Winograd layer, which keeps only its transformed weights.
    var weights: PackedWeights { direct! }


    /// Fewest input and output channels for which `.automatic` picks Winograd: the layout's floor
    /// (channels in whole 8-wide vectors), since Winograd beats the direct GEMM on 3x3 layers down to
    /// 8 channels (docs/ENGINE.md, "Winograd").
    public static let winogradMinimumChannels = 8

    /// Transformed weights (bytes, `36 * Cin * Cout * 4`) from which `.automatic` also looks at the
    /// number of tiles. Winograd's weights are 4x the direct ones; when they exceed the cache and a
    /// call has few tiles, streaming them costs more than the multiply-adds saved (ResNet's
    /// 512-channel 7x7 maps at batch 1, 4 tiles).
    public static let winogradLargeWeightBytes = 8 << 20
    /// Tiles (per image at the expected input size, or per call) from which a layer with large
    /// transformed weights runs Winograd: 8, two 7x7 maps (docs/ENGINE.md, "Winograd").
    public static let winogradMinimumTiles = 8

    /// Whether `.automatic` uses Winograd for every call on this geometry: 3x3, stride 1, padding 0 or 1,
    /// channel counts multiples of 8 and at least `winogradMinimumChannels`, and,
    /// for layers with large transformed weights whose `expectedInput` is known, at least
    /// `winogradMinimumTiles` 4x4 tiles per image. Layers that miss only that last condition (ResNet's
    /// 512-channel 7x7 stage) keep both weight sets and choose per call (`prefersWinogradForBatches`).
    public static func prefersWinograd(inChannels: Int, outChannels: Int, kernelH: Int, kernelW: Int, stride: Int,
                                       padding: Padding, expectedInput: (height: Int, width: Int)? = nil) -> Bool {
        supportsAutomaticWinograd(inChannels: inChannels, outChannels: outChannels, kernelH: kernelH, kernelW: kernelW,
                                  stride: stride, padding: padding)
            && !hasFewTilesPerImage(inChannels: inChannels, outChannels: outChannels, padding: padding,
                                                 expectedInput: expectedInput)
    }

    /// Whether `.automatic` keeps both the direct and the Winograd weights for this geometry and runs
    /// Winograd only on calls with at least `winogradMinimumTiles` tiles (a batch of 2 or more 7x7
    /// maps): the layers `prefersWinograd` rejects for their few tiles per image alone.
    public static func prefersWinogradForBatches(inChannels: Int, outChannels: Int, kernelH: Int, kernelW: Int, stride: Int,
                                                 padding: Padding, expectedInput: (height: Int, width: Int)?) -> Bool {
        supportsAutomaticWinograd(inChannels: inChannels, outChannels: outChannels, kernelH: kernelH, kernelW: kernelW,
                                  stride: stride, padding: padding)
            && hasFewTilesPerImage(inChannels: inChannels, outChannels: outChannels, padding: padding,
                                                 expectedInput: expectedInput)
    }

    static func supportsAutomaticWinograd(inChannels: Int, outChannels: Int, kernelH: Int, kernelW: Int, stride: Int,
                                          padding: Padding) -> Bool {
        min(inChannels, outChannels) >= winogradMinimumChannels
            && WinogradConvolution.supports(inChannels: inChannels, outChannels: outChannels, kernelH: kernelH,
                                            kernelW: kernelW, stride: stride, padding: padding)
    }

    /// Whether a layer with large transformed weights has fewer than `winogradMinimumTiles` tiles per
    /// image at `expectedInput` (tiles of its output, which is the input's size with padding 1 and two
    /// pixels smaller each way unpadded).
    static func hasFewTilesPerImage(inChannels: Int, outChannels: Int, padding: Padding,
                                    expectedInput: (height: Int, width: Int)?) -> Bool {
        guard let size = expectedInput, 36 * inChannels * outChannels * 4 >= winogradLargeWeightBytes else { return false }
        let p = padding.resolve(height: size.height, width: size.width, kernelH: 3, kernelW: 3, stride: 1)
        return winogradTiles(height: size.height + p.top + p.bottom - 2, width: size.width + p.left + p.right - 2)
            < winogradMinimumTiles
    }

    /// 4x4 output tiles of one `height x width` output map.
    static func winogradTiles(height: Int, width: Int) -> Int { ((height + 3) / 4) * ((width + 3) / 4) }

    /// Builds the layer from PyTorch-layout weights `[Cout][Cin][kh][kw]`.
    /// - Parameters:
    ///   - channelScale: optional per-output-channel factor multiplied into the weights (folded BN).
    ///   - bias: optional per-output-channel bias (folded BN shift plus any conv bias, already scaled).
    ///   - algorithm: `.automatic` (default) picks Winograd where `prefersWinograd` says so, and the
    ///     1-D Winograd (`WinogradLineConvolution`) for the other stride-1 layers it supports (1 x r,
    ///     r x 1, 5x5, ...) with at least `winogradMinimumChannels` channels; `.direct` and `.winograd`
    ///     force one (`.winograd` traps unless either supports the geometry; channels multiples of 8).
    ///   - expectedInput: the input size the layer will usually see (a network's native resolution),
    ///     for `.automatic`'s choice only; any size works either way.
    ///   - options: `.automatic` picks Winograd only when `options.winograd` is on.
    public init(weightOIHW: UnsafePointer<Float>, outChannels: Int, inChannels: Int, kernelH: Int, kernelW: Int,
                stride: Int = 1, padding: Padding = .symmetric(0), channelScale: [Float]? = nil, bias: [Float]? = nil,
                activation: Activation = .none, algorithm: ConvolutionAlgorithm = .automatic,
                expectedInput: (height: Int, width: Int)? = nil, options: EngineOptions = .default) {
        self.inChannels = inChannels; self.outChannels = outChannels
        self.kernelH = kernelH; self.kernelW = kernelW; self.stride = stride
        self.padding = padding; self.activation = activation
        self.bias = bias.map(AlignedBuffer.copy(of:))
        let useWinograd: Bool, alsoDirect: Bool
        let lineGeometry = WinogradLineConvolution.supports(inChannels: inChannels, outChannels: outChannels, kernelH: kernelH,
                                                            kernelW: kernelW, stride: stride, padding: padding)
        switch algorithm {
        case .direct: (useWinograd, alsoDirect) = (false, true)
        case .automatic:
            // Winograd wherever it can run; the direct weights too where it pays only for batches.
            useWinograd = options.winograd
                && (Conv2D.supportsAutomaticWinograd(inChannels: inChannels, outChannels: outChannels,
                                                     kernelH: kernelH, kernelW: kernelW, stride: stride, padding: padding)
                    || lineGeometry && min(inChannels, outChannels) >= Conv2D.winogradMinimumChannels)
            alsoDirect = !useWinograd
                || !lineGeometry && Conv2D.hasFewTilesPerImage(inChannels: inChannels, outChannels: outChannels,
                                                               padding: padding, expectedInput: expectedInput)
        case .winograd:
            precondition(lineGeometry || WinogradConvolution.supports(inChannels: inChannels, outChannels: outChannels,
                                                                      kernelH: kernelH, kernelW: kernelW, stride: stride,
                                                                      padding: padding),
                         "Conv2D: Winograd needs a 3x3 stride-1 kernel with padding 0 or 1 per side, or a stride-1 kernel "
                             + "WinogradLineConvolution.supports, and channels that are multiples of 8")
            (useWinograd, alsoDirect) = (true, false)
        }
        winograd = useWinograd && !lineGeometry ? WinogradConvolution(weightOIHW: weightOIHW, outChannels: outChannels,
                                                                      inChannels: inChannels, channelScale: channelScale,
                                                                      threads: options.workers) : nil
        line = useWinograd && lineGeometry
            ? WinogradLineConvolution(weightOIHW: weightOIHW, outChannels: outChannels, inChannels: inChannels, kernelH: kernelH,
                                      kernelW: kernelW, channelScale: channelScale, hugePages: options.hugePages,
                                      threads: options.workers) : nil
        guard alsoDirect else {
            direct = nil
            return
        }
        direct = Conv2D.packedWeights(weightOIHW: weightOIHW, outChannels: outChannels, inChannels: inChannels,
                                      kernelH: kernelH, kernelW: kernelW, channelScale: channelScale, transposed: false,
                                      hugePages: options.hugePages, threads: options.workers)
    }

    /// `weightOIHW` `[Cout][Cin][kh][kw]` times `channelScale[o]` (when given), packed for `PackedGEMM` with
    /// patch elements in `[kh][kw][Cin]` order: one row per output channel (`[Cout][kh*kw*Cin]`, the direct
    /// forward's operand), or with `transposed` one row per patch element (`[kh*kw*Cin][Cout]`, the input
    /// gradient's operand). 1x1 weights already are in row order and are packed straight from the source;
    /// others are first permuted to rows. Parallel over `threads` threads.
    static func packedWeights(weightOIHW: UnsafePointer<Float>, outChannels: Int, inChannels: Int, kernelH: Int, kernelW: Int,
                              channelScale: [Float]?, transposed: Bool, hugePages: Bool, threads: Int = 1) -> PackedWeights {
        let k = kernelH * kernelW * inChannels, taps = kernelH * kernelW
        func pack(_ rows: UnsafePointer<Float>) -> PackedWeights {
            (channelScale ?? []).withUnsafeBufferPointer { scale in
                let s = channelScale == nil ? nil : scale.baseAddress!
                return transposed ? PackedWeights(.columns(rows, scale: s), n: k, k: outChannels, hugePages: hugePages, threads: threads)
                    : PackedWeights(.rows(rows, scale: s), n: outChannels, k: k, hugePages: hugePages, threads: threads)
            }
        }
        if taps == 1 { return pack(weightOIHW) }
        let rows = AlignedBuffer.allocate(outChannels * k)
        defer { AlignedBuffer.free(rows) }
        let base = rows.baseAddress!
        // Element (i, y, x) of output channel o goes to rows[o][(y * kw + x) * Cin + i].
        TensorThreads.run(pieces: outChannels, threads: threads) { o in
            let src = weightOIHW + o * k, dst = base + o * k
            for i in 0..<inChannels {
                for t in 0..<taps { dst[t * inChannels + i] = src[i * taps + t] }
            }
        }
        return pack(base)
    }

    deinit {
        if let bias { AlignedBuffer.free(bias) }
    }

    /// Multiply-accumulates per image of any convolution-like layer: each of the
    /// `outputHeight x outputWidth x outChannels` outputs sums `kernelH x kernelW x inputsPerOutput`
    /// products (`inputsPerOutput` is the input channel count of a dense convolution, 1 for a depthwise
    /// one; a linear layer is the 1x1 case on a 1x1 map). The one FLOP rule behind
    /// `Architecture.flops` and `Network.layerTimes`.
    public static func macs(outputHeight: Int, outputWidth: Int, kernelH: Int, kernelW: Int,
                            inputsPerOutput: Int, outChannels: Int) -> Int {
        outputHeight * outputWidth * outChannels * kernelH * kernelW * inputsPerOutput
    }

    /// Runs the convolution.
    /// - Parameters:
    ///   - input: NHWC `[batch][height][width][inChannels]`.
    ///   - output: NHWC `[batch][oh][ow][outChannels]` whose pixels lie `outputStride` floats apart
    ///     (default `outChannels`; larger writes a channel slice of a wider tensor, such as a branch
    ///     of a concatenation, leaving the other channels untouched); must not alias `input`.
    ///   - residual: optional dense NHWC tensor of the output's shape added before the activation
    ///     (ResNet's skip connection, fused into the output pass). Must not alias `input`; may be
    ///     `output` itself (each element is read before it is written) when `outputStride` is dense.
    /// - Complexity: O(batch * oh * ow * kh * kw * Cin * Cout) multiply-adds; no im2col matrix (the
    ///   GEMM gathers receptive fields block by block). About a quarter of that on the Winograd path.
    public func forward(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                        output: UnsafeMutablePointer<Float>, outputStride: Int? = nil,
                        residual: UnsafePointer<Float>? = nil, options: EngineOptions = .default) {
        let outputStride = outputStride ?? outChannels
        precondition(outputStride >= outChannels, "Conv2D: output pixels closer than the output channels")
        let bias = self.bias.map { UnsafePointer($0.baseAddress!) }
        if let line {
            let p = padding.resolve(height: height, width: width, kernelH: kernelH, kernelW: kernelW, stride: stride)
            line.forward(input: input, batch: batch, height: height, width: width, padding: p, output: output,
                         outputStride: outputStride, bias: bias, residual: residual, activation: activation, options: options)
            return
        }
        if let winograd, runsWinograd(batch: batch, height: height, width: width) {
            let p = padding.resolve(height: height, width: width, kernelH: kernelH, kernelW: kernelW, stride: stride)
            winograd.forward(input: input, batch: batch, height: height, width: width, padding: p, output: output,
                             outputStride: outputStride, bias: bias, residual: residual, activation: activation,
                             options: options)
            return
        }
        let (operand, pixels) = directOperand(input: input, height: height, width: width)
        PackedGEMM.run(operand, m: batch * pixels, weights: weights, c: output, ldc: outputStride,
                       bias: bias, residual: residual,
                       residualStride: outChannels, activation: activation, options: options)
    }

    /// The left operand of the direct path's GEMM for an NHWC `input` of `height x width` maps, and
    /// its rows per image (output pixels): the input itself for an unpadded stride-1 1x1 convolution,
    /// else its receptive fields.
    func directOperand(input: UnsafePointer<Float>, height: Int, width: Int) -> (GEMMOperand, pixels: Int) {
        let p = padding.resolve(height: height, width: width, kernelH: kernelH, kernelW: kernelW, stride: stride)
        let (oh, ow) = outputSize(height: height, width: width)
        if kernelH == 1 && kernelW == 1 && stride == 1 && p == (0, 0, 0, 0) {
            return (.matrix(input, rowStride: inChannels), oh * ow)
        }
        return (.patches(PatchGeometry(input: input, height: height, width: width, channels: inChannels,
                                       kernelH: kernelH, kernelW: kernelW, stride: stride, padTop: p.top,
                                       padLeft: p.left, outHeight: oh, outWidth: ow)), oh * ow)
    }
}

/// A depthwise 2-D convolution (groups = channels, one filter per channel) on NHWC activations,
/// vectorised over channels with 8-wide SIMD; BN folding and the activation as in `Conv2D`.
public final class DepthwiseConv2D: SlidingWindowLayer, @unchecked Sendable {
    /// Channels (input = output).
    public let channels: Int
    /// Kernel height and width.
    public let kernelH: Int, kernelW: Int
    /// Stride in both dimensions.
    public let stride: Int
    /// Padding rule.
    public let padding: Padding
    public var inputsPerOutput: Int { 1 }
    public var outputChannels: Int { channels }
    /// Activation fused into the output pass.
    public let activation: Activation
    let weights: UnsafeMutableBufferPointer<Float>   // [kh][kw][C]
    let bias: UnsafeMutableBufferPointer<Float>      // [C], zeros when absent
    /// `channels` zeros: what `DepthwiseRow.segments` reads for window columns outside the image.
    let zeroPixel: UnsafeMutableBufferPointer<Float>

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
        zeroPixel = AlignedBuffer.allocate(channels)
        zeroPixel.initialize(repeating: 0)
    }

    deinit { AlignedBuffer.free(weights); AlignedBuffer.free(bias); AlignedBuffer.free(zeroPixel) }

    /// The row kernel for `height x width` inputs: row `i` of its output is image `i / oh`, output
    /// row `i % oh`, read from `input` and written to `output` (both NHWC, batch-major).
    /// With `ringRows` > 0 the input is one image whose row `y` lives in slot `y % ringRows` (see
    /// `DepthwiseRow.ringRows`).
    func rowKernel(input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, height: Int, width: Int,
                   ringRows: Int = 0) -> DepthwiseRow {
        let p = padding.resolve(height: height, width: width, kernelH: kernelH, kernelW: kernelW, stride: stride)
        let (oh, ow) = outputSize(height: height, width: width)
        // Output columns whose window lies fully inside the image take the register-blocked path;
        // the few edge columns take the clipped one.
        let interiorLo = min(ow, (p.left + stride - 1) / stride)
        let interiorHi = max(interiorLo, min(ow, width + p.left - kernelW >= 0 ? (width + p.left - kernelW) / stride + 1 : 0))
        return DepthwiseRow(
            input: input, output: output, weights: UnsafePointer(weights.baseAddress!), bias: UnsafePointer(bias.baseAddress!),
            zeroPixel: UnsafePointer(zeroPixel.baseAddress!), channels: channels, height: height, width: width, oh: oh, ow: ow, kh: kernelH, kw: kernelW, stride: stride,
            padTop: p.top, padLeft: p.left, interior: interiorLo..<interiorHi, activation: activation, ringRows: ringRows)
    }

    /// Runs the convolution: NHWC `input` to NHWC `output` (must not alias).
    /// - Complexity: O(batch * oh * ow * kh * kw * C); parallel over output rows, and over channel
    ///   blocks too when there are few rows (the 7x7 maps of batch 1).
    public func forward(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                        output: UnsafeMutablePointer<Float>, options: EngineOptions = .default) {
        let geometry = rowKernel(input: input, output: output, height: height, width: width)
        let rows = batch * geometry.oh, threads = options.workers
        let blocks = (channels + 15) / 16
        let groups = threads == 1 || rows >= 4 * threads ? 1 : min(blocks, (4 * threads + rows - 1) / rows)
        let task: (Int) -> Void = { t in
            let row = t / groups, g = t - row * groups
            let lo = g * blocks / groups * 16, hi = g == groups - 1 ? self.channels : (g + 1) * blocks / groups * 16
            geometry.run(row: row, channels: lo..<hi)
        }
        TensorThreads.run(pieces: rows * groups, threads: threads, task)
    }
}

/// A depthwise window shape known at compile time (`DepthwiseRow.segments`).
protocol DepthwiseWindow {
    /// Kernel height and width.
    static var kernel: Int { get }
    /// Stride in both dimensions.
    static var stride: Int { get }
    /// Whether segments inside the image compute their pixel addresses (`DirectColumns`) rather than
    /// read them from the pointer table (`TableColumns`): true except for 5x5 stride 1, where the
    /// compiler shuffles the eight computed column addresses through the stack (docs/ENGINE.md,
    /// "Depthwise").
    static var addressesInteriorDirectly: Bool { get }
}
enum Window3Stride1: DepthwiseWindow {
    static var kernel: Int { 3 }; static var stride: Int { 1 }; static var addressesInteriorDirectly: Bool { true }
}
enum Window3Stride2: DepthwiseWindow {
    static var kernel: Int { 3 }; static var stride: Int { 2 }; static var addressesInteriorDirectly: Bool { true }
}
enum Window5Stride1: DepthwiseWindow {
    static var kernel: Int { 5 }; static var stride: Int { 1 }; static var addressesInteriorDirectly: Bool { false }
}
enum Window5Stride2: DepthwiseWindow {
    static var kernel: Int { 5 }; static var stride: Int { 2 }; static var addressesInteriorDirectly: Bool { true }
}

/// Output pixels per depthwise segment (`DepthwiseRow.segment`), known at compile time.
protocol SegmentWidth { static var pixels: Int { get } }
enum FourPixels: SegmentWidth { static var pixels: Int { 4 } }
enum ThreePixels: SegmentWidth { static var pixels: Int { 3 } }

/// Where a depthwise segment (`DepthwiseRow.segment`) finds the input pixel vectors of its windows.
protocol SegmentColumns {
    /// The pixel at window row `r` (from the first row the segment reads) and column `i` (from the
    /// segment's first window column).
    func pixel(_ r: Int, _ i: Int) -> UnsafePointer<Float>
}

/// Window columns all inside the image: addresses computed from the segment's first pixel.
struct DirectColumns: SegmentColumns {
    let origin: UnsafePointer<Float>, rowStride: Int, pixelStride: Int
    @inline(__always) func pixel(_ r: Int, _ i: Int) -> UnsafePointer<Float> { origin + r * rowStride + i * pixelStride }
}

/// Window columns reaching past the image: a table of pixel pointers, `zeroPixel` outside.
struct TableColumns: SegmentColumns {
    let table: UnsafePointer<UnsafePointer<Float>>, rowSpan: Int
    @inline(__always) func pixel(_ r: Int, _ i: Int) -> UnsafePointer<Float> { table[r * rowSpan + i] }
}

/// One depthwise output row over a channel range.
///
/// The model zoo's windows (square 3x3 or 5x5, stride 1 or 2) run `segments`: 4 output pixels x 16
/// channels per register block across the whole row, edges included, with the window's size a
/// compile-time constant. Any other window runs 4-pixel blocks in the interior (`quad`) and clipped
/// windows at the edges (`edgePixel`); scalar code only for channels past the last multiple of 8.
struct DepthwiseRow {
    /// Bytes of input a segment reads across all channels (window rows x columns x channels) up to
    /// which `segments` finishes a segment's channel blocks before the next segment, reading each
    /// pixel's channels in one contiguous pass; above it each channel block sweeps the row, so its
    /// window rows stay in L1. With few channels (32 on a 112x112 map: 2.3 KB) a block sweeping the
    /// row would touch every other cache line of the rows, and the next sweep would find them gone.
    static let segmentMajorFootprint = 16 << 10
    let input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>
    let weights: UnsafePointer<Float>, bias: UnsafePointer<Float>, zeroPixel: UnsafePointer<Float>
    let channels: Int, height: Int, width: Int, oh: Int, ow: Int, kh: Int, kw: Int, stride: Int
    let padTop: Int, padLeft: Int
    let interior: Range<Int>
    let activation: Activation
    /// 0 when input rows follow one another; else the rows live in a ring of this many row slots
    /// (a fused MBConv block's scratch, `InvertedResidual`): row `y` in slot `y % ringRows`.
    let ringRows: Int

    /// The first pixel of input row `y` of `image` (see `ringRows`).
    @inline(__always)
    func row(_ image: UnsafePointer<Float>, _ y: Int) -> UnsafePointer<Float> {
        image + (ringRows == 0 ? y : y % ringRows) * width * channels
    }

    func run(row rowIndex: Int, channels range: Range<Int>) {
        let img = rowIndex / oh, oy = rowIndex - img * oh
        let y0 = oy * stride - padTop
        let kyLo = max(0, -y0), kyHi = max(kyLo, min(kh, height - y0))
        let image = input + img * height * width * channels
        let outRow = output + rowIndex * ow * channels
        if ow >= 4 && kh == kw {
            switch (kw, stride) {
            case (3, 1): return segments(Window3Stride1.self, range, y0, kyLo..<kyHi, image, outRow)
            case (3, 2): return segments(Window3Stride2.self, range, y0, kyLo..<kyHi, image, outRow)
            case (5, 1): return segments(Window5Stride1.self, range, y0, kyLo..<kyHi, image, outRow)
            case (5, 2): return segments(Window5Stride2.self, range, y0, kyLo..<kyHi, image, outRow)
            default: break
            }
        }
        let vec16 = range.lowerBound + (range.count & ~15), vec8 = range.lowerBound + (range.count & ~7)
        var ox = interior.lowerBound
        while ox + 4 <= interior.upperBound {
            var ch = range.lowerBound
            while ch < vec16 { quad(ox, ch, y0, kyLo..<kyHi, image, outRow, SIMD16<Float>.self); ch += 16 }
            if ch < vec8 { quad(ox, ch, y0, kyLo..<kyHi, image, outRow, SIMD8<Float>.self); ch += 8 }
            if ch < range.upperBound { for j in 0..<4 { scalarPixel(ox + j, ch..<range.upperBound, y0, kyLo..<kyHi, image, outRow) } }
            ox += 4
        }
        for x in 0..<ow where x < interior.lowerBound || x >= ox {
            var ch = range.lowerBound
            while ch + 64 <= vec16 { edgePixel4(x, ch, y0, kyLo..<kyHi, image, outRow); ch += 64 }
            while ch < vec16 { edgePixel(x, ch, y0, kyLo..<kyHi, image, outRow, SIMD16<Float>.self); ch += 16 }
            if ch < vec8 { edgePixel(x, ch, y0, kyLo..<kyHi, image, outRow, SIMD8<Float>.self); ch += 8 }
            if ch < range.upperBound { scalarPixel(x, ch..<range.upperBound, y0, kyLo..<kyHi, image, outRow) }
        }
    }

    /// The whole row (at least 4 pixels wide) in 4-pixel segments and up to three 3-pixel ones, so that
    /// no pixel is computed twice (a 4-pixel segment shifted back over the one before would redo up
    /// to three).
    ///
    /// Why not interior blocks plus clipped edge pixels: on the 7x7 and 14x14 maps of the late blocks
    /// a 5x5 window leaves few or no interior 4-pixel blocks, and a clipped pixel alone loads an
    /// input vector for every weight vector. Here a window column outside the image reads
    /// `zeroPixel` instead (through a table of pixel pointers, `TableColumns`, built for the segments
    /// that need it; interior ones address their pixels directly where `addressesInteriorDirectly`),
    /// so every segment is a full block: each input vector is loaded once for the
    /// up to 4 pixels whose windows hold it, each weight vector once per 4 pixels, and the 8
    /// independent accumulator chains of a 16-channel block keep both FMA pipes busy. The extra
    /// products are `x * 0` terms added in the same place of the same order, so results equal the
    /// clipped sums (up to the sign of an exact zero). With many channels a channel block sweeps the
    /// whole row before the next starts, so the window rows it reads (one 64-byte line per pixel) stay
    /// in L1; with few, each segment takes all channels at once (`segmentMajorFootprint`).
    func segments<W: DepthwiseWindow>(_: W.Type, _ range: Range<Int>, _ y0: Int, _ ky: Range<Int>,
                                      _ image: UnsafePointer<Float>, _ outRow: UnsafeMutablePointer<Float>) {
        /// Input columns `pixels` adjacent output pixels read.
        func span(pixels: Int) -> Int { (pixels - 1) * W.stride + W.kernel }
        let rowSpan = span(pixels: ow)
        // 4-pixel segments, then up to three 3-pixel ones so that they end exactly at the row's end
        // (7 = 4 + 3, 14 = 4 + 4 + 3 + 3); a 5-pixel row shifts its second 4-pixel segment back instead.
        let threes = ow % 4 != 0 && ow >= 6 ? 4 - ow % 4 : 0
        let fours = threes == 0 ? (ow + 3) / 4 : (ow - 3 * threes) / 4
        let segmentCount = fours + threes
        let vec16 = range.lowerBound + (range.count & ~15), vec8 = range.lowerBound + (range.count & ~7)
        let rowStride = width * channels, firstRow = row(image, y0 + ky.lowerBound)
        // Window rows that wrap around a ring of rows are not `rowStride` apart: the table holds them.
        let wraps = ringRows > 0 && (y0 + ky.lowerBound) % ringRows + ky.count > ringRows
        /// The first output pixel of segment `s`.
        func origin(_ s: Int) -> Int { s < fours ? min(4 * s, ow - 4) : 4 * fours + 3 * (s - fours) }
        /// Whether the windows of segment `s` lie inside the image horizontally.
        func inside(_ s: Int) -> Bool {
            let x0 = origin(s) * W.stride - padLeft
            return W.addressesInteriorDirectly && !wraps && x0 >= 0 && x0 + span(pixels: s < fours ? 4 : 3) <= width
        }
        withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: max(1, ky.count * rowSpan)) { buffer in
            // table[r * rowSpan + i]: the pixel at window row ky.lowerBound + r, column i - padLeft;
            // filled only where segments reach past the image (the interior ones address pixels directly).
            let table = buffer.baseAddress!
            for s in 0..<segmentCount where !inside(s) {
                let i0 = origin(s) * W.stride
                for r in 0..<ky.count {
                    let rowStart = row(image, y0 + ky.lowerBound + r)
                    for i in i0..<(i0 + span(pixels: s < fours ? 4 : 3)) {
                        let x = i - padLeft
                        table[r * rowSpan + i] = x >= 0 && x < width ? rowStart + x * channels : zeroPixel
                    }
                }
            }
            func run<V: KernelVector, P: SegmentWidth>(_: V.Type, _: P.Type, _ s: Int, _ ch: Int) {
                let ox = origin(s)
                if inside(s) {
                    let columns = DirectColumns(origin: firstRow + (ox * W.stride - padLeft) * channels,
                                                rowStride: rowStride, pixelStride: channels)
                    segment(W.self, V.self, P.self, ox, ch, ky, columns, outRow)
                } else {
                    segment(W.self, V.self, P.self, ox, ch, ky, TableColumns(table: table + ox * W.stride, rowSpan: rowSpan), outRow)
                }
            }
            func run<V: KernelVector>(_: V.Type, segment s: Int, _ ch: Int) {
                if s < fours { run(V.self, FourPixels.self, s, ch) } else { run(V.self, ThreePixels.self, s, ch) }
            }
            let footprint = W.kernel * span(pixels: 4) * channels * MemoryLayout<Float>.stride
            if footprint <= DepthwiseRow.segmentMajorFootprint {
                for s in 0..<segmentCount {
                    var ch = range.lowerBound
                    while ch < vec16 { run(SIMD16<Float>.self, segment: s, ch); ch += 16 }
                    if ch < vec8 { run(SIMD8<Float>.self, segment: s, ch) }
                }
            } else {
                var ch = range.lowerBound
                while ch < vec16 { for s in 0..<segmentCount { run(SIMD16<Float>.self, segment: s, ch) }; ch += 16 }
                if ch < vec8 { for s in 0..<segmentCount { run(SIMD8<Float>.self, segment: s, ch) } }
            }
            if vec8 < range.upperBound { for x in 0..<ow { scalarPixel(x, vec8..<range.upperBound, y0, ky, image, outRow) } }
        }
    }

    /// Four (or three: `P`) adjacent output pixels from `ox` for one channel block, reading the
    /// window's input pixel vectors where `columns` says.
    @inline(__always)
    func segment<W: DepthwiseWindow, V: KernelVector, C: SegmentColumns, P: SegmentWidth>(
        _: W.Type, _: V.Type, _: P.Type, _ ox: Int, _ ch: Int, _ ky: Range<Int>, _ columns: C,
        _ outRow: UnsafeMutablePointer<Float>
    ) {
        let c = channels
        let bv = V.load(UnsafeRawPointer(bias + ch))
        var a0 = bv, a1 = bv, a2 = bv, a3 = bv
        for r in 0..<ky.count {
            let wr = weights + (ky.lowerBound + r) * W.kernel * c + ch
            for x in 0..<W.kernel {
                let wv = V.load(UnsafeRawPointer(wr + x * c))
                a0 = a0.addingProduct(V.load(UnsafeRawPointer(columns.pixel(r, x) + ch)), wv)
                a1 = a1.addingProduct(V.load(UnsafeRawPointer(columns.pixel(r, x + W.stride) + ch)), wv)
                a2 = a2.addingProduct(V.load(UnsafeRawPointer(columns.pixel(r, x + 2 * W.stride) + ch)), wv)
                if P.pixels == 4 {
                    a3 = a3.addingProduct(V.load(UnsafeRawPointer(columns.pixel(r, x + 3 * W.stride) + ch)), wv)
                }
            }
        }
        let dst = outRow + ox * c + ch
        V.store(a0.activated(activation), to: UnsafeMutableRawPointer(dst))
        V.store(a1.activated(activation), to: UnsafeMutableRawPointer(dst + c))
        V.store(a2.activated(activation), to: UnsafeMutableRawPointer(dst + 2 * c))
        if P.pixels == 4 { V.store(a3.activated(activation), to: UnsafeMutableRawPointer(dst + 3 * c)) }
    }

    /// Four adjacent output pixels (full windows horizontally) for one channel block.
    @inline(__always)
    func quad<V: KernelVector>(_ ox: Int, _ ch: Int, _ y0: Int, _ ky: Range<Int>, _ image: UnsafePointer<Float>,
                             _ outRow: UnsafeMutablePointer<Float>, _: V.Type) {
        let c = channels, s = stride * channels
        let x0 = ox * stride - padLeft
        let bv = V.load(UnsafeRawPointer(bias + ch))
        var a0 = bv, a1 = bv, a2 = bv, a3 = bv
        for y in ky {
            let src = row(image, y0 + y) + x0 * c + ch
            let wr = weights + y * kw * c + ch
            for x in 0..<kw {
                let wv = V.load(UnsafeRawPointer(wr + x * c))
                let q = src + x * c
                a0 = a0.addingProduct(V.load(UnsafeRawPointer(q)), wv)
                a1 = a1.addingProduct(V.load(UnsafeRawPointer(q + s)), wv)
                a2 = a2.addingProduct(V.load(UnsafeRawPointer(q + 2 * s)), wv)
                a3 = a3.addingProduct(V.load(UnsafeRawPointer(q + 3 * s)), wv)
            }
        }
        let dst = outRow + ox * c + ch
        V.store(a0.activated(activation), to: UnsafeMutableRawPointer(dst))
        V.store(a1.activated(activation), to: UnsafeMutableRawPointer(dst + c))
        V.store(a2.activated(activation), to: UnsafeMutableRawPointer(dst + 2 * c))
        V.store(a3.activated(activation), to: UnsafeMutableRawPointer(dst + 3 * c))
    }

    /// One output pixel whose window is clipped by the image border, for one channel block.
    @inline(__always)
    func edgePixel<V: KernelVector>(_ ox: Int, _ ch: Int, _ y0: Int, _ ky: Range<Int>, _ image: UnsafePointer<Float>,
                                  _ outRow: UnsafeMutablePointer<Float>, _: V.Type) {
        let c = channels
        let x0 = ox * stride - padLeft
        let kxLo = max(0, -x0), kxHi = max(kxLo, min(kw, width - x0))
        var acc = V.load(UnsafeRawPointer(bias + ch))
        for y in ky {
            let src = row(image, y0 + y) + x0 * c + ch
            let wr = weights + y * kw * c + ch
            for x in kxLo..<kxHi {
                acc = acc.addingProduct(V.load(UnsafeRawPointer(src + x * c)),
                                        V.load(UnsafeRawPointer(wr + x * c)))
            }
        }
        V.store(acc.activated(activation), to: UnsafeMutableRawPointer(outRow + ox * c + ch))
    }

    /// One clipped output pixel for four 16-channel blocks at once: four independent accumulator
    /// chains instead of one, so the fused multiply-adds do not wait on each other's latency (the
    /// edges of windows other than 3x3 and 5x5, which `segments` does not cover).
    @inline(__always)
    func edgePixel4(_ ox: Int, _ ch: Int, _ y0: Int, _ ky: Range<Int>, _ image: UnsafePointer<Float>,
                    _ outRow: UnsafeMutablePointer<Float>) {
        typealias V = SIMD16<Float>
        let c = channels
        let x0 = ox * stride - padLeft
        let kxLo = max(0, -x0), kxHi = max(kxLo, min(kw, width - x0))
        var a0 = V.load(UnsafeRawPointer(bias + ch))
        var a1 = V.load(UnsafeRawPointer(bias + ch + 16))
        var a2 = V.load(UnsafeRawPointer(bias + ch + 32))
        var a3 = V.load(UnsafeRawPointer(bias + ch + 48))
        for y in ky {
            let src = row(image, y0 + y) + x0 * c + ch
            let wr = weights + y * kw * c + ch
            for x in kxLo..<kxHi {
                let q = src + x * c, w = wr + x * c
                a0 = a0.addingProduct(V.load(UnsafeRawPointer(q)), V.load(UnsafeRawPointer(w)))
                a1 = a1.addingProduct(V.load(UnsafeRawPointer(q + 16)), V.load(UnsafeRawPointer(w + 16)))
                a2 = a2.addingProduct(V.load(UnsafeRawPointer(q + 32)), V.load(UnsafeRawPointer(w + 32)))
                a3 = a3.addingProduct(V.load(UnsafeRawPointer(q + 48)), V.load(UnsafeRawPointer(w + 48)))
            }
        }
        let dst = outRow + ox * c + ch
        V.store(a0.activated(activation), to: UnsafeMutableRawPointer(dst))
        V.store(a1.activated(activation), to: UnsafeMutableRawPointer(dst + 16))
        V.store(a2.activated(activation), to: UnsafeMutableRawPointer(dst + 32))
        V.store(a3.activated(activation), to: UnsafeMutableRawPointer(dst + 48))
    }

    /// Channels past the last multiple of 8 (none in the model zoo), one at a time.
    func scalarPixel(_ ox: Int, _ chs: Range<Int>, _ y0: Int, _ ky: Range<Int>, _ image: UnsafePointer<Float>,
                     _ outRow: UnsafeMutablePointer<Float>) {
        let c = channels
        let x0 = ox * stride - padLeft
        let kxLo = max(0, -x0), kxHi = max(kxLo, min(kw, width - x0))
        for ch in chs {
            var acc = bias[ch]
            for y in ky {
                let src = row(image, y0 + y)
                for x in kxLo..<kxHi { acc += src[(x0 + x) * c + ch] * weights[(y * kw + x) * c + ch] }
            }
            outRow[ox * c + ch] = BottleneckTensor.activate(acc, activation)
        }
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

    /// Multiply-accumulates per input vector (FLOPs are 2x this).
    public var macs: Int {
        Conv2D.macs(outputHeight: 1, outputWidth: 1, kernelH: 1, kernelW: 1, inputsPerOutput: inFeatures, outChannels: outFeatures)
    }

    /// `output[batch][out] = act(input[batch][in] W^T + b)`.
    public func forward(input: UnsafePointer<Float>, batch: Int, output: UnsafeMutablePointer<Float>,
                        options: EngineOptions = .default) {
        Linear.forward(input: input, batch: batch, weight: UnsafePointer(weights.baseAddress!), outFeatures: outFeatures,
                       inFeatures: inFeatures, bias: bias.map { UnsafePointer($0.baseAddress!) }, activation: activation,
                       output: output, options: options)
    }

    /// The layer's product on caller-owned weights (`[out][in]`, `bias` `[out]` or nil): what `forward`
    /// runs, for weights that change between calls (fine-tuning).
    public static func forward(input: UnsafePointer<Float>, batch: Int, weight: UnsafePointer<Float>, outFeatures: Int,
                               inFeatures: Int, bias: UnsafePointer<Float>?, activation: Activation,
                               output: UnsafeMutablePointer<Float>, options: EngineOptions = .default) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), Int32(outFeatures), Int32(inFeatures),
                    1, input, Int32(inFeatures), weight, Int32(inFeatures), 0, output, Int32(outFeatures))
        applyEpilogueParallel(output, rows: batch, cols: outFeatures, bias: bias, residual: nil, activation: activation,
                              options: options)
    }
}
