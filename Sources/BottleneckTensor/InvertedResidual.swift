import Foundation
import Synchronization

/// A MobileNetV2/EfficientNet inverted-residual block (MBConv) run as one fused kernel:
/// 1x1 expand (+ BN + activation) → k x k depthwise (+ BN + activation) → 1x1 project (+ BN, plus the
/// block input when `addsInput`), on NHWC activations.
///
/// Run layer by layer, the expanded tensor (6x the block's input channels, up to 112x112x96 floats =
/// 4.8 MB per image in EfficientNet-Lite0) is written to memory by the expand convolution, read
/// back by the depthwise one, written again and read by the projection: the early blocks are bound
/// by that traffic, not by arithmetic. Here each task walks the output rows of one image (or one
/// band of it) a few rows at a time and keeps only the expanded rows the depthwise window needs,
/// plus the depthwise output of those rows, in a scratch buffer sized to stay in L2. Each value is
/// computed by the same kernels in the same order as the unfused layers, so results are identical.
/// Blocks without expansion (the first MBConv of EfficientNet) fuse depthwise → project the same
/// way, reading the input rows in place. The network's stem convolution may take the expansion's
/// place before such a block (`expand` a direct k x k convolution): the stem's output rows then live
/// only in the ring, as expanded rows do.
public final class InvertedResidual: @unchecked Sendable {
    /// The 1x1 expansion (stride 1, no padding); nil for a block with expansion ratio 1. Or a
    /// direct convolution of any window and stride producing the depthwise input (a stem fused
    /// into a block without expansion; `expandsInPlace` false).
    public let expand: Conv2D?
    /// Whether `expand` is absent or a 1x1 stride-1 convolution: the depthwise input then has the
    /// block input's height and width.
    public let expandsInPlace: Bool
    /// The depthwise convolution over the expanded channels.
    public let depthwise: DepthwiseConv2D
    /// The 1x1 projection (stride 1, no padding).
    public let project: Conv2D
    /// Whether the block input is added to the projection (stride 1 and equal channel counts).
    public let addsInput: Bool

    /// Bytes of expanded rows plus depthwise output one task keeps in flight (about half of a
    /// 512 KB L2, leaving room for the weight panels).
    static let scratchBudget = 256 << 10

    /// Builds the fused block from its three layers.
    /// - Precondition: `project` is a 1x1 stride-1 unpadded convolution; `expand` is one too, or a
    ///   convolution on the direct path only (no Winograd weights); channels chain through
    ///   `depthwise`; `addsInput` requires a 1x1 (or no) expansion, a stride-1 depthwise and
    ///   `project.outChannels == inChannels`.
    public init(expand: Conv2D?, depthwise: DepthwiseConv2D, project: Conv2D, addsInput: Bool) {
        let expandsInPlace = expand.map(InvertedResidual.isPointwise) ?? true
        precondition(InvertedResidual.isPointwise(project), "InvertedResidual: project must be a 1x1 stride-1 convolution")
        precondition(expand.map { InvertedResidual.isPointwise($0) || $0.runsDirectOnly } ?? true,
                     "InvertedResidual: expand must be a 1x1 stride-1 convolution or run on the direct path only")
        precondition(!addsInput || expandsInPlace, "InvertedResidual: a skip connection needs a 1x1 expansion or none")
        precondition((expand?.outChannels ?? depthwise.channels) == depthwise.channels && project.inChannels == depthwise.channels,
                     "InvertedResidual: channel counts do not chain")
        precondition(!addsInput || (depthwise.stride == 1 && project.outChannels == (expand?.inChannels ?? depthwise.channels)),
                     "InvertedResidual: a skip connection needs stride 1 and equal channels")
        self.expand = expand; self.depthwise = depthwise; self.project = project; self.addsInput = addsInput
        self.expandsInPlace = expandsInPlace
    }

    /// The depthwise input's size for a block input of `height x width`.
    func expandedSize(height: Int, width: Int) -> (height: Int, width: Int) {
        expand?.outputSize(height: height, width: width) ?? (height, width)
    }

    /// Whether a block on `batch` images with more than one band runs as two walks that meet
    /// (`EngineOptions.meetingSteps`): one image on two threads.
    static func runsAsWalks(batch: Int, options: EngineOptions) -> Bool {
        batch == 1 && options.workers == 2 && options.meetingSteps
    }

    /// True for a 1x1, stride-1 convolution without padding (one that reads NHWC rows in place).
    public static func isPointwise(_ conv: Conv2D) -> Bool {
        guard conv.kernelH == 1 && conv.kernelW == 1 && conv.stride == 1 else { return false }
        return conv.padding.resolve(height: 8, width: 8, kernelH: 1, kernelW: 1, stride: 1) == (0, 0, 0, 0)
    }

    /// Output spatial size for an input of `height x width`.
    public func outputSize(height: Int, width: Int) -> (height: Int, width: Int) {
        let (eh, ew) = expandedSize(height: height, width: width)
        return depthwise.outputSize(height: eh, width: ew)
    }

    /// Multiply-accumulates per image for a `height x width` input: its three layers' sum.
    public func macs(height: Int, width: Int) -> Int {
        let (eh, ew) = expandedSize(height: height, width: width), (oh, ow) = outputSize(height: height, width: width)
        return (expand?.macs(height: height, width: width) ?? 0) + depthwise.macs(height: eh, width: ew)
            + project.macs(height: oh, width: ow)
    }

    /// Input channels.
    public var inChannels: Int { expand?.inChannels ?? depthwise.channels }

    /// Output channels.
    public var outChannels: Int { project.outChannels }

    /// Output rows each task step produces for a `height x width` input: as many as keep the
    /// expanded rows they need plus their depthwise output within `scratchBudget` (at least one).
    func rowsPerStep(height: Int, width: Int) -> Int {
        let (oh, ow) = outputSize(height: height, width: width), ew = expandedSize(height: height, width: width).width
        var step = 1
        while step < oh && scratchFloats(rows: step + 1, width: ew, outWidth: ow) * 4 <= InvertedResidual.scratchBudget { step += 1 }
        return step
    }

    /// Floats of scratch for a step of `rows` output rows (`width`: the depthwise input's).
    func scratchFloats(rows: Int, width: Int, outWidth: Int) -> Int {
        let expanded = expand == nil ? 0 : ((rows - 1) * depthwise.stride + depthwise.kernelH) * width
        return (expanded + rows * outWidth) * depthwise.channels
    }

    /// GEMM rows below which a step's projection runs too few full 6-row tiles per pass over its
    /// weights (the late, narrow-map, wide-channel blocks): those blocks run layer by layer, where
    /// the GEMMs see the whole batch.
    static let minimumStepPixels = 40

    /// Bands per image: one per image when the batch alone gives every worker a few images,
    /// otherwise enough bands to keep the workers busy. Returns 0 when fusion does not pay and the
    /// layers should run one by one: when a step would cover fewer than `minimumStepPixels`
    /// output pixels, or when bands would be so thin that recomputing the expanded rows they share
    /// costs more than fusion saves.
    public func bandsPerImage(batch: Int, height: Int, width: Int, options: EngineOptions = .default) -> Int {
        let (oh, ow) = outputSize(height: height, width: width)
        if rowsPerStep(height: height, width: width) * ow < InvertedResidual.minimumStepPixels { return 0 }
        let threads = options.workers
        if threads == 1 || batch >= 2 * threads { return 1 }
        let bands = (2 * threads + batch - 1) / batch
        if InvertedResidual.runsAsWalks(batch: batch, options: options) && options.walkFusion {
            // Two walks that meet (see `forward`) recompute k - stride expanded rows once.
            return oh / 2 >= 2 * depthwise.kernelH ? bands : 0
        }
        // Each band recomputes k - stride expanded rows it shares with the one above.
        return oh / bands >= 2 * depthwise.kernelH ? bands : 0
    }

    /// Runs the block.
    /// - Parameters:
    ///   - input: NHWC `[batch][height][width][inChannels]`.
    ///   - output: NHWC `[batch][oh][ow][project.outChannels]`; must not alias `input`.
    ///   - bands: horizontal bands each image is split into (`bandsPerImage`), at least 1. A single
    ///     image with more than one band on two threads runs as two walks that meet instead
    ///     (`EngineOptions.meetingSteps`): one from the top, one from the bottom, a step at a time.
    /// - Complexity: the three layers' multiply-adds, plus `(bands - 1) * (k - stride)` expanded
    ///   rows per image recomputed at band edges (at most `k - stride` where two walks meet).
    ///   Scratch: about `scratchBudget` bytes per thread.
    public func forward(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                        output: UnsafeMutablePointer<Float>, bands: Int = 1, options: EngineOptions = .default) {
        let dw = depthwise
        let cin = inChannels, mid = dw.channels, cout = project.outChannels
        let (eh, ew) = expandedSize(height: height, width: width)
        let top = dw.padding.resolve(height: eh, width: ew, kernelH: dw.kernelH, kernelW: dw.kernelW, stride: dw.stride).top
        let (oh, ow) = outputSize(height: height, width: width)
        let s = dw.stride, k = dw.kernelH
        let step = rowsPerStep(height: height, width: width)
        let expandedRows = expand == nil ? 0 : (step - 1) * s + k
        let bands = max(1, min(bands, oh))
        let tasks = batch * bands
        let scratchCount = scratchFloats(rows: step, width: ew, outWidth: ow)

        // Output rows `oy..<oy + rows` of image `img`, with the expanded rows in `held` (a ring of
        // `expandedRows` slots, row y in slot y % expandedRows) kept from the previous step: the step
        // computes only the expanded rows it needs that are not held (above or below them), into the
        // slots of rows no longer needed, so steps may move down or up the image.
        func runStep(img: Int, oy: Int, rows: Int, buffer: UnsafeMutablePointer<Float>, held: inout Range<Int>) {
            let image = input + img * height * width * cin
            let expanded = buffer, dwOut = buffer + expandedRows * ew * mid
            let need = max(0, oy * s - top)..<min(eh, (oy + rows - 1) * s - top + k)
            let rowsView: DepthwiseRow
            if let expand = self.expand {
                // Expanded row y is rows y * ew..< of the expansion's product: the block input's own rows
                // (a 1x1 expansion), or a stem's receptive fields over it.
                let source = expand.directOperand(input: image, height: height, width: width).0
                let below = need.lowerBound..<min(need.upperBound, max(need.lowerBound, held.lowerBound))
                let above = max(need.lowerBound, min(need.upperBound, held.upperBound))..<need.upperBound
                for missing in [below, above] {
                    var fresh = missing.lowerBound
                    while fresh < missing.upperBound {
                        let slot = fresh % expandedRows, count = min(missing.upperBound - fresh, expandedRows - slot)
                        self.product(expand, source, row0: fresh * ew, rows: count * ew, c: expanded + slot * ew * mid,
                                     residual: nil, options: options)
                        fresh += count
                    }
                }
                // Output row `oy` lands at `dwOut`.
                rowsView = dw.rowKernel(input: expanded, output: dwOut - oy * ow * mid, height: eh, width: ew,
                                        ringRows: expandedRows)
            } else {
                // The input rows are read in place; output row `oy` lands at `dwOut`.
                rowsView = dw.rowKernel(input: image, output: dwOut - oy * ow * mid, height: height, width: width)
            }
            held = need
            for y in oy..<(oy + rows) { rowsView.run(row: y, channels: 0..<mid) }
            let outOffset = (img * oh + oy) * ow
            self.pointwise(self.project, a: dwOut, lda: mid, rows: rows * ow, c: output + outOffset * cout,
                           residual: self.addsInput ? input + outOffset * cin : nil, options: options)
        }

        if bands > 1 && InvertedResidual.runsAsWalks(batch: batch, options: options) {
            // One image on two threads: the caller walks down from the top and the worker up from the
            // bottom, a step at a time, until they meet (rows claimed in one word: top << 32 | bottom), so
            // neither waits for more than a step of the other, and only the meeting step recomputes
            // expanded rows. A worker that never joins leaves the caller the whole image.
            let cursor = Atomic<Int>(oh)
            TensorThreads.run(pieces: 2, threads: 2) { piece in
                KernelScratch.with(count: scratchCount) { buffer in
                    var held = 0..<0
                    while true {
                        let word = cursor.load(ordering: .relaxed)
                        let low = word >> 32, high = word & 0xFFFF_FFFF
                        guard low < high else { return }
                        // Full steps until the walks are two steps apart, then half of what is left
                        // (`taperedMeeting`): the walk that finishes first waits for a short step only.
                        let left = high - low
                        let rows = options.taperedMeeting && left < 2 * step ? max(1, (left + 1) / 2) : min(step, left)
                        let claimed = piece == 0 ? (low + rows) << 32 | high : low << 32 | (high - rows)
                        guard cursor.compareExchange(expected: word, desired: claimed, ordering: .relaxed).exchanged else { continue }
                        runStep(img: 0, oy: piece == 0 ? low : high - rows, rows: rows, buffer: buffer, held: &held)
                    }
                }
            }
            return
        }
        TensorThreads.run(pieces: tasks, threads: options.workers) { task in
            KernelScratch.with(count: scratchCount) { buffer in
                let img = task / bands, band = task - img * bands
                var held = 0..<0                                   // expanded rows now in the ring
                var oy = band * oh / bands
                let y1 = (band + 1) * oh / bands
                while oy < y1 {
                    let rows = min(step, y1 - oy)
                    runStep(img: img, oy: oy, rows: rows, buffer: buffer, held: &held)
                    oy += rows
                }
            }
        }
    }

    /// One 1x1 convolution on `rows` NHWC pixels, single-threaded (the caller's task is the unit of
    /// parallelism), with the layer's bias and activation fused. Tile-major (each six-row tile against
    /// all panels, `PackedGEMM.tileMajorBlock`) when `options.tileMajor`, like the unfused 1x1 layers.
    @inline(__always)
    private func pointwise(_ conv: Conv2D, a: UnsafePointer<Float>, lda: Int, rows: Int,
                           c: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>?, options: EngineOptions) {
        product(conv, .matrix(a, rowStride: lda), row0: 0, rows: rows, c: c, residual: residual, options: options)
    }

    /// Rows `row0..<row0 + rows` of `conv`'s direct product on `operand` into `c` (row `row0` first),
    /// single-threaded, as `pointwise` describes.
    @inline(__always)
    private func product(_ conv: Conv2D, _ operand: GEMMOperand, row0: Int, rows: Int,
                         c: UnsafeMutablePointer<Float>, residual: UnsafePointer<Float>?, options: EngineOptions) {
        PackedGEMM.block(operand, row0: row0, rows: rows, w: conv.weights,
                         panelRange: 0..<conv.weights.panelCount, c: c, ldc: conv.outChannels,
                         bias: conv.bias.map { UnsafePointer($0.baseAddress!) }, residual: residual,
                         residualStride: conv.outChannels, activation: conv.activation, includeTail: true,
                         options: options, tileMajor: options.tileMajor)
    }
}
