import Foundation

/// How `Conv2D` computes its output.
public enum ConvolutionAlgorithm: String, Sendable, CaseIterable {
    /// Winograd for the shapes where it wins (see `Conv2D.prefersWinograd`), direct
    /// otherwise; `BOTTLENECK_WINOGRAD=0` in the environment turns Winograd off process-wide.
    case automatic
    /// Always the direct GEMM (im2col rows gathered block by block).
    case direct
    /// Winograd F(4x4, 3x3); the layer must be 3x3, stride 1, padding 0 or 1 on each side (or SAME)
    /// with channel counts that are multiples of 8, else the initialiser traps.
    case winograd
}

/// A 3x3, stride-1 convolution (zero padding 0 or 1 on each side) computed with Winograd's minimal filtering algorithm
/// F(4x4, 3x3) (Lavin & Gray 2015, interpolation points 0, ±1, ±2, ∞) on NHWC activations.
///
/// Each 4x4 block of output pixels ("tile") is computed from the 6x6 input patch that covers its
/// windows (from `padTop` rows above and `padLeft` columns left of the tile, zero outside the image):
/// `Y = Aᵀ [ Σ_cin (G g Gᵀ) ⊙ (Bᵀ d B) ] A`. The element-wise products over the 36 transform
/// positions ξ, summed over input channels, are 36 independent GEMMs
/// `M[ξ] (tiles x Cout) = V[ξ] (tiles x Cin) · U[ξ]ᵀ`, run by `PackedGEMM.block`. That is 36
/// multiply-adds per tile per channel pair instead of 16 * 9 = 144: a 4x reduction (about 3x on
/// 7x7 maps, whose 2x2 tiles overhang to 8x8), paid for with the input and output transforms
/// (O(tiles * 36 * C) adds, vectorised over channels) and with 4x the weight storage.
///
/// Rounding: the transforms have entries up to 8 (Aᵀ) and 5 (Bᵀ), so the result carries errors of
/// up to about 1e-5 relative to the output's magnitude instead of the direct path's ~1e-6
/// (`KernelParityTests.winogradTolerance`).
///
/// Tiles are processed in blocks of up to `blockTiles` (whole 6-row micro-tiles of the GEMM): the
/// block's input is transformed into `V[36][tiles][Cin]`, the 36 GEMMs for a group of
/// output-channel panels write `M[36][tiles][cols]`, and `M` is transformed back with bias, residual
/// and activation fused, writing only the in-bounds pixels. Tasks are blocks x column groups, so
/// the few-tile maps of batch 1 still keep every worker busy (`plan(tiles:threads:)`).
///
/// The planner's constants below assume a 512 KiB L2 per core and a shared L3 (docs/ENGINE.md,
/// "Winograd"); they are variables only so that `WinogradTimingTests` can sweep them.
package final class WinogradConvolution: @unchecked Sendable {
    /// Input channels (a multiple of 8).
    let inChannels: Int
    /// Output channels (a multiple of 8).
    let outChannels: Int
    /// `U[ξ]` packed as `[Cout][Cin]` GEMM weights, ξ = 6 * row + column of the 6x6 transform.
    let transformed: [PackedWeights]


    /// Whether a layer of this geometry can run here: 3x3 kernel, stride 1, zero or one pixel of zero
    /// padding on each side (a tile's 6x6 patch then starts at most one pixel outside the image),
    /// channel counts multiples of 8 (the transforms run 16 or 8 channels at a time and the weights
    /// then have no scalar GEMM tail).
    static func supports(inChannels: Int, outChannels: Int, kernelH: Int, kernelW: Int, stride: Int,
                         padding: Padding) -> Bool {
        guard kernelH == 3, kernelW == 3, stride == 1, inChannels % 8 == 0, outChannels % 8 == 0,
              inChannels > 0, outChannels > 0 else { return false }
        // `.same` with k = 3, s = 1 always resolves to one pixel per side; explicit padding is size-independent.
        let p = padding.resolve(height: 8, width: 8, kernelH: 3, kernelW: 3, stride: 1)
        return [p.top, p.left, p.bottom, p.right].allSatisfy { (0...1).contains($0) }
    }

    /// Transforms PyTorch-layout weights `[Cout][Cin][3][3]`, each output channel's filters scaled by
    /// `channelScale[o]` first (folded BN). Computed in Double, rounded once; output channels spread
    /// over `threads` threads.
    /// - Complexity: O(Cout * Cin * 36) at init; 36 * Cout * Cin floats kept.
    init(weightOIHW w: UnsafePointer<Float>, outChannels: Int, inChannels: Int, channelScale: [Float]?, threads: Int = 1) {
        self.inChannels = inChannels; self.outChannels = outChannels
        let plane = outChannels * inChannels
        let u = AlignedBuffer.allocate(36 * plane)
        defer { AlignedBuffer.free(u) }
        let base = u.baseAddress!
        // G (6x3) of F(4x4, 3x3).
        let g: [Double] = [1.0 / 4, 0, 0,
                           -1.0 / 6, -1.0 / 6, -1.0 / 6,
                           -1.0 / 6, 1.0 / 6, -1.0 / 6,
                           1.0 / 24, 1.0 / 12, 1.0 / 6,
                           1.0 / 24, -1.0 / 12, 1.0 / 6,
                           0, 0, 1]
        // Each task owns output channel o's entries of every plane.
        TensorThreads.run(pieces: outChannels, threads: threads) { o in
            withUnsafeTemporaryAllocation(of: Double.self, capacity: 18) { tb in
                let t = tb.baseAddress!   // G g, 6x3
                let s = Double(channelScale?[o] ?? 1)
                for i in 0..<inChannels {
                    let k = w + (o * inChannels + i) * 9
                    for a in 0..<6 {
                        for x in 0..<3 {
                            t[a * 3 + x] = g[a * 3] * Double(k[x]) + g[a * 3 + 1] * Double(k[3 + x])
                                + g[a * 3 + 2] * Double(k[6 + x])
                        }
                    }
                    for a in 0..<6 {
                        for b in 0..<6 {
                            let v = t[a * 3] * g[b * 3] + t[a * 3 + 1] * g[b * 3 + 1] + t[a * 3 + 2] * g[b * 3 + 2]
                            base[(a * 6 + b) * plane + o * inChannels + i] = Float(v * s)
                        }
                    }
                }
            }
        }
        transformed = (0..<36).map { xi in
            PackedWeights(.rows(base + xi * plane, scale: nil), n: outChannels, k: inChannels, threads: threads)
        }
    }

    /// How `forward` splits the work: `blocks` tile blocks by `groups` column groups (`tasks`).
    package struct Plan: Equatable {
        /// Most tiles in a block (a multiple of 6).
        package let blockTiles: Int
        /// Number of tile blocks.
        package let blocks: Int
        /// Output-channel panel groups per block.
        package let groups: Int

        /// The tasks `forward` runs on `tiles` tiles and `panels` column panels (`ProductTasks`: blocks
        /// of whole six-tile groups evened out, by column groups; tapered with `tapered`).
        func tasks(tiles: Int, panels: Int, threads: Int, tapered: Bool) -> ProductTasks {
            ProductTasks(rows: tiles, granule: 6, blocks: blocks, groups: groups, panels: panels, groupMajor: false,
                         threads: threads, tapered: tapered)
        }
    }

    /// The split for `tiles` tiles on `threads` workers, with `options`' Winograd budgets. Small
    /// weights (`winogradCachedWeights`): blocks as large as `winogradBlockBudget` allows, cut
    /// smaller (down to `winogradMinimumBlockTiles`) until every worker has
    /// `winogradTasksPerThread`. Large weights: the fewest blocks `winogradStreamedBlockBudget` allows
    /// (each block streams all of `U` once). Either way, when there are still too few blocks, column
    /// groups (twice as many tasks then: they cost no repeated work, see `forward`).
    package func plan(tiles: Int, threads: Int, options: EngineOptions) -> Plan {
        let panels = transformed[0].panelCount
        let streamed = 36 * inChannels * outChannels > options.winogradCachedWeights
        let budget = streamed ? options.winogradStreamedBlockBudget : options.winogradBlockBudget
        let largest = max(6, budget / (36 * inChannels) / 6 * 6)
        var blocks = (tiles + largest - 1) / largest
        let wanted = options.winogradTasksPerThread * threads
        if threads > 1 && blocks < wanted && !streamed {
            let smallest = max(6, options.winogradMinimumBlockTiles)
            blocks = max(blocks, min(wanted, (tiles + smallest - 1) / smallest))
        }
        let blockTiles = ((tiles + blocks - 1) / blocks + 5) / 6 * 6
        blocks = (tiles + blockTiles - 1) / blockTiles
        var groups = threads == 1 || blocks >= wanted ? 1 : min(panels, (2 * wanted + blocks - 1) / blocks)
        if groups > 1 { groups = TensorThreads.wholeRounds(groups, times: blocks, limit: panels, threads: threads) }
        return Plan(blockTiles: blockTiles, blocks: blocks, groups: groups)
    }

    /// Runs the convolution (same contract as `Conv2D.forward`): NHWC `input` `[batch][height][width][Cin]`
    /// with `padding` (resolved; each side 0 or 1, see `supports`) to NHWC `output` `[batch][oh][ow][Cout]`
    /// whose pixels lie `outputStride` floats apart (>= Cout: a channel slice of a wider tensor),
    /// `act(conv + bias + residual)`; `residual` is dense (`Cout` floats per pixel).
    ///
    /// With one column group, each task transforms its own block's input into private scratch (it
    /// stays in L2 for the GEMMs). With several, the input transform of all tiles runs first as its
    /// own parallel pass into a shared `V` (so groups do not repeat it), then the (block, group) tasks.
    /// - Complexity: 36 * ceil(h/4) * ceil(w/4) * batch * Cin * Cout multiply-adds plus O(tiles * 36 *
    ///   (Cin + Cout)) for the transforms; scratch of `36 * blockTiles * (Cin + cols)` floats per
    ///   concurrent task (or `36 * tiles * Cin` shared), reused across calls.
    func forward(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                 padding: (top: Int, left: Int, bottom: Int, right: Int),
                 output: UnsafeMutablePointer<Float>, outputStride: Int, bias: UnsafePointer<Float>?,
                 residual: UnsafePointer<Float>?, activation: Activation, options: EngineOptions) {
        let outHeight = height + padding.top + padding.bottom - 2, outWidth = width + padding.left + padding.right - 2
        guard outHeight > 0, outWidth > 0 else { return }
        let tilesX = (outWidth + 3) / 4, tilesY = (outHeight + 3) / 4
        let tiles = batch * tilesY * tilesX
        if tiles == 0 { return }
        let threads = options.workers
        let plan = self.plan(tiles: tiles, threads: threads, options: options)
        let panels = transformed[0].panelCount
        let cin = inChannels
        let geometry = WinogradGeometry(input: input, output: output, outputStride: outputStride, residual: residual, bias: bias,
                                        height: height, width: width, outHeight: outHeight, outWidth: outWidth,
                                        padTop: padding.top, padLeft: padding.left, tilesX: tilesX,
                                        tilesPerImage: tilesY * tilesX, inChannels: inChannels, outChannels: outChannels,
                                        activation: activation)
        let tasks = plan.tasks(tiles: tiles, panels: panels, threads: threads, tapered: options.taperedPieces)
        if plan.groups == 1 {
            TensorThreads.run(pieces: tasks.count, threads: threads) { task in
                let block = tasks.range(task).rows
                guard !block.isEmpty else { return }
                let tile0 = block.lowerBound, count = block.count
                let vSlice = count * cin
                KernelScratch.with(count: 36 * vSlice) { v in
                    withUnsafeTemporaryAllocation(byteCount: 36 * 64, alignment: 64) { tmp in
                        geometry.transformInput(tile0: tile0, count: count, channels: 0..<cin, into: v, slice: vSlice,
                                                scratch: tmp.baseAddress!)
                    }
                    self.multiply(geometry, v: UnsafePointer(v), slice: vSlice, tile0: tile0, count: count,
                                  panels: 0..<panels, lastGroup: true, options: options)
                }
            }
            return
        }
        let vSlice = tiles * cin
        KernelScratch.with(count: 36 * vSlice) { v in
            // Pass 1: pieces of tiles, and of channels too when there are only a few tiles.
            let tilePieces = min(tiles, 4 * threads)
            let chunks = tiles >= 2 * threads ? 1 : min(cin / 8, (4 * threads + tiles - 1) / tiles)
            TensorThreads.run(pieces: tilePieces * chunks, threads: threads) { piece in
                let p = piece / chunks, q = piece - p * chunks
                let t0 = p * tiles / tilePieces, t1 = (p + 1) * tiles / tilePieces
                let c0 = q * (cin / 8) / chunks * 8, c1 = (q + 1) * (cin / 8) / chunks * 8
                guard t0 < t1, c0 < c1 else { return }
                withUnsafeTemporaryAllocation(byteCount: 36 * 64, alignment: 64) { tmp in
                    geometry.transformInput(tile0: t0, count: t1 - t0, channels: c0..<c1, into: v + t0 * cin,
                                            slice: vSlice, scratch: tmp.baseAddress!)
                }
            }
            // Pass 2: (block, column group) tasks.
            TensorThreads.run(pieces: tasks.count, threads: threads) { task in
                let (block, panelRange) = tasks.range(task)
                guard !block.isEmpty, !panelRange.isEmpty else { return }
                self.multiply(geometry, v: UnsafePointer(v + block.lowerBound * cin), slice: vSlice, tile0: block.lowerBound,
                              count: block.count, panels: panelRange, lastGroup: panelRange.upperBound == panels,
                              options: options)
            }
        }
    }

    /// The 36 GEMMs and the output transform for tiles `tile0..<tile0+count` and the output columns
    /// of `panels`. `v` holds those tiles' transformed input (row stride Cin, ξ planes `slice` apart).
    private func multiply(_ geo: WinogradGeometry, v: UnsafePointer<Float>, slice: Int, tile0: Int, count: Int,
                          panels: Range<Int>, lastGroup: Bool, options: EngineOptions) {
        let colLo = panels.lowerBound * 16
        let colHi = lastGroup ? outChannels : panels.upperBound * 16
        let cols = colHi - colLo
        // M's row stride is the group's width (a multiple of 8, so every vector starts 32-byte
        // aligned), one plane of `count` rows per ξ.
        let mSlice = count * cols
        KernelScratch.with(count: 36 * mSlice + 36 * 16) { m in
            for xi in 0..<36 {
                // `c` is offset so the GEMM's absolute column j lands at M column j - colLo.
                PackedGEMM.block(.matrix(v + xi * slice, rowStride: inChannels), row0: 0, rows: count,
                                 w: transformed[xi], panelRange: panels, c: m + xi * mSlice - colLo, ldc: cols,
                                 bias: nil, residual: nil, residualStride: 0, activation: .none, includeTail: lastGroup,
                                 options: options)
            }
            geo.transformOutput(tile0: tile0, count: count, from: UnsafePointer(m), slice: mSlice,
                                columns: colLo..<colHi, scratch: UnsafeMutableRawPointer(m + 36 * mSlice))
        }
    }
}

/// The tensors and shape of one Winograd forward call, with the two transforms.
struct WinogradGeometry {
    let input: UnsafePointer<Float>
    /// Output pixels lie `outputStride` floats apart; residual pixels `outChannels` apart.
    let output: UnsafeMutablePointer<Float>, outputStride: Int
    let residual: UnsafePointer<Float>?
    let bias: UnsafePointer<Float>?
    /// Input and output map sizes; the patch of the tile at output pixel (oy, ox) starts at input
    /// pixel (oy - padTop, ox - padLeft).
    let height: Int, width: Int, outHeight: Int, outWidth: Int, padTop: Int, padLeft: Int
    let tilesX: Int, tilesPerImage: Int
    let inChannels: Int, outChannels: Int
    let activation: Activation

    /// `V[ξ][t][c] = (Bᵀ d B)[ξ]` for tiles `tile0..<tile0+count` (row `t` = tile `tile0 + t`, row
    /// stride Cin) and channels `channels` (multiples of 8), where
    /// `d` is the 6x6 input patch starting `padTop` pixels above and `padLeft` left of the tile, zero
    /// outside the image (the padding, and the overhang of the last tiles when a side is not a multiple of 4).
    /// `slice` is the distance between ξ planes; `scratch` holds 36 vectors.
    func transformInput(tile0: Int, count: Int, channels: Range<Int>, into v: UnsafeMutablePointer<Float>, slice: Int,
                        scratch: UnsafeMutableRawPointer) {
        let c = inChannels, rowStride = width * c, end = channels.upperBound
        for t in 0..<count {
            let tile = tile0 + t
            let img = tile / tilesPerImage, rem = tile - img * tilesPerImage
            let ty = rem / tilesX, tx = rem - ty * tilesX
            let y0 = ty * 4 - padTop, x0 = tx * 4 - padLeft
            let rows = max(0, -y0)..<min(6, height - y0), cols = max(0, -x0)..<min(6, width - x0)
            // May point before the image for the first row/column of tiles; only in-bounds offsets are read.
            let src = input + img * height * rowStride + y0 * rowStride + x0 * c
            let dst = v + t * c
            let full = rows == 0..<6 && cols == 0..<6
            var ch = channels.lowerBound
            if full {
                while ch + 16 <= end {
                    inputTile(src + ch, rowStride, rows, cols, true, dst + ch, slice, scratch, SIMD16<Float>.self); ch += 16
                }
                if ch < end { inputTile(src + ch, rowStride, rows, cols, true, dst + ch, slice, scratch, SIMD8<Float>.self) }
            } else {
                while ch + 16 <= end {
                    inputTile(src + ch, rowStride, rows, cols, false, dst + ch, slice, scratch, SIMD16<Float>.self); ch += 16
                }
                if ch < end { inputTile(src + ch, rowStride, rows, cols, false, dst + ch, slice, scratch, SIMD8<Float>.self) }
            }
        }
    }

    /// `Bᵀ z` for one column (or row) `z` of the patch: the six rows of Bᵀ,
    /// `[4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]`,
    /// with the shared sums factored out (15 vector ops instead of 20).
    @inline(__always)
    private func bt<V: KernelVector>(_ z0: V, _ z1: V, _ z2: V, _ z3: V, _ z4: V, _ z5: V)
        -> (V, V, V, V, V, V) {
        let p = z4 - z2, q = (z3 - z1) * 2
        return (z4.addingProduct(z0, 4).addingProduct(z2, -5),
                (z3 + z4).addingProduct(z1 + z2, -4),
                (z4 - z3).addingProduct(z1 - z2, 4),
                p + q,
                p - q,
                z5.addingProduct(z1, 4).addingProduct(z3, -5))
    }

    @inline(__always)
    private func inputTile<V: KernelVector>(_ src: UnsafePointer<Float>, _ rowStride: Int, _ rows: Range<Int>,
                                          _ cols: Range<Int>, _ full: Bool, _ dst: UnsafeMutablePointer<Float>,
                                          _ slice: Int, _ scratch: UnsafeMutableRawPointer, _: V.Type) {
        let c = inChannels, size = MemoryLayout<V>.stride
        @inline(__always) func load(_ i: Int, _ j: Int) -> V {
            if full || (rows.contains(i) && cols.contains(j)) {
                return V.load(UnsafeRawPointer(src + i * rowStride + j * c))
            }
            return V()
        }
        // Columns: t[.][j] = Bᵀ d[.][j].
        for j in 0..<6 {
            let r = bt(load(0, j), load(1, j), load(2, j), load(3, j), load(4, j), load(5, j))
            V.store(r.0, to: scratch + (0 * 6 + j) * size)
            V.store(r.1, to: scratch + (1 * 6 + j) * size)
            V.store(r.2, to: scratch + (2 * 6 + j) * size)
            V.store(r.3, to: scratch + (3 * 6 + j) * size)
            V.store(r.4, to: scratch + (4 * 6 + j) * size)
            V.store(r.5, to: scratch + (5 * 6 + j) * size)
        }
        // Rows: V[i][.] = t[i][.] B.
        for i in 0..<6 {
            @inline(__always) func t(_ j: Int) -> V { V.load(UnsafeRawPointer(scratch + (i * 6 + j) * size)) }
            let r = bt(t(0), t(1), t(2), t(3), t(4), t(5))
            let row = dst + i * 6 * slice
            V.store(r.0, to: UnsafeMutableRawPointer(row))
            V.store(r.1, to: UnsafeMutableRawPointer(row + slice))
            V.store(r.2, to: UnsafeMutableRawPointer(row + 2 * slice))
            V.store(r.3, to: UnsafeMutableRawPointer(row + 3 * slice))
            V.store(r.4, to: UnsafeMutableRawPointer(row + 4 * slice))
            V.store(r.5, to: UnsafeMutableRawPointer(row + 5 * slice))
        }
    }

    /// `Y = act(Aᵀ m A + bias + residual)` for output columns `columns` of tiles `tile0..<tile0+count`,
    /// `m` holding `M[ξ][t][columns]` (row stride `columns.count`, ξ planes `slice` apart). Pixels
    /// of the tile past the image's bottom or right edge are not written.
    func transformOutput(tile0: Int, count: Int, from m: UnsafePointer<Float>, slice: Int, columns: Range<Int>,
                         scratch: UnsafeMutableRawPointer) {
        let ld = columns.count
        let vec16 = columns.lowerBound + (ld & ~15)
        for t in 0..<count {
            let tile = tile0 + t
            let img = tile / tilesPerImage, rem = tile - img * tilesPerImage
            let ty = rem / tilesX, tx = rem - ty * tilesX
            let oy = ty * 4, ox = tx * 4
            let rows = min(4, outHeight - oy), cols = min(4, outWidth - ox)
            let pixel = (img * outHeight + oy) * outWidth + ox
            let src = m + t * ld - columns.lowerBound
            var ch = columns.lowerBound
            while ch < vec16 { outputTile(src + ch, slice, pixel, ch, rows, cols, scratch, SIMD16<Float>.self); ch += 16 }
            if ch < columns.upperBound { outputTile(src + ch, slice, pixel, ch, rows, cols, scratch, SIMD8<Float>.self) }
        }
    }

    // The two halves of a tile's output transform are separate functions on purpose: as one (or
    // inlined into `transformOutput`) the optimiser left several 64-byte loads and stores as calls,
    // each with the vector registers spilled around it. Split, the column half has none; the row
    // half still keeps four at width 16.

    @inline(__always)
    private func outputTile<V: KernelVector>(_ src: UnsafePointer<Float>, _ slice: Int, _ pixel: Int, _ ch: Int,
                                           _ rows: Int, _ cols: Int, _ scratch: UnsafeMutableRawPointer, _: V.Type) {
        outputColumns(src, slice, scratch, V.self)
        outputRows(pixel, ch, rows, cols, scratch, V.self)
    }

    /// Columns: `s[.][j] = Aᵀ m[.][j]`, `Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]`,
    /// into `scratch` (4 x 6 vectors).
    @inline(never)
    private func outputColumns<V: KernelVector>(_ src: UnsafePointer<Float>, _ slice: Int, _ scratch: UnsafeMutableRawPointer,
                                              _: V.Type) {
        let size = MemoryLayout<V>.stride
        for j in 0..<6 {
            @inline(__always) func ld(_ i: Int) -> V { V.load(UnsafeRawPointer(src + (i * 6 + j) * slice)) }
            let r = at(ld(0), ld(1), ld(2), ld(3), ld(4), ld(5))
            V.store(r.0, to: scratch + (0 * 6 + j) * size)
            V.store(r.1, to: scratch + (1 * 6 + j) * size)
            V.store(r.2, to: scratch + (2 * 6 + j) * size)
            V.store(r.3, to: scratch + (3 * 6 + j) * size)
        }
    }

    /// Rows: `y[i][.] = Aᵀ s[i][.]` + bias (+ residual), activated, for the tile's `rows x cols`
    /// output pixels that lie inside the map.
    @inline(never)
    private func outputRows<V: KernelVector>(_ pixel: Int, _ ch: Int, _ rows: Int, _ cols: Int,
                                           _ scratch: UnsafeMutableRawPointer, _: V.Type) {
        let size = MemoryLayout<V>.stride
        let b = bias.map { V.load(UnsafeRawPointer($0 + ch)) } ?? V()
        let c = outChannels, oc = outputStride
        for i in 0..<rows {
            @inline(__always) func s(_ j: Int) -> V { V.load(UnsafeRawPointer(scratch + (i * 6 + j) * size)) }
            let r = at(s(0), s(1), s(2), s(3), s(4), s(5))
            let dst = output + (pixel + i * outWidth) * oc + ch
            var y0 = r.0 + b, y1 = r.1 + b, y2 = r.2 + b, y3 = r.3 + b
            if let residual {
                let res = residual + (pixel + i * outWidth) * c + ch
                y0 += V.load(UnsafeRawPointer(res))
                if cols > 1 { y1 += V.load(UnsafeRawPointer(res + c)) }
                if cols > 2 { y2 += V.load(UnsafeRawPointer(res + 2 * c)) }
                if cols > 3 { y3 += V.load(UnsafeRawPointer(res + 3 * c)) }
            }
            V.store(y0.activated(activation), to: UnsafeMutableRawPointer(dst))
            if cols > 1 { V.store(y1.activated(activation), to: UnsafeMutableRawPointer(dst + oc)) }
            if cols > 2 { V.store(y2.activated(activation), to: UnsafeMutableRawPointer(dst + 2 * oc)) }
            if cols > 3 { V.store(y3.activated(activation), to: UnsafeMutableRawPointer(dst + 3 * oc)) }
        }
    }

    /// `Aᵀ z` for one column (or row) of the 6x6 product, with the shared sums factored out.
    @inline(__always)
    private func at<V: KernelVector>(_ z0: V, _ z1: V, _ z2: V, _ z3: V, _ z4: V, _ z5: V) -> (V, V, V, V) {
        let a = z1 + z2, b = z1 - z2, c = z3 + z4, d = z3 - z4
        return (z0 + a + c, b.addingProduct(d, 2), a.addingProduct(c, 4), (b + z5).addingProduct(d, 8))
    }
}

/// A stride-1 convolution computed with the one-dimensional Winograd algorithm F(m, r) along one
/// axis, on NHWC activations: an r x 1 kernel (no padding across it) along the columns' axis, any
/// other kh x r kernel (r >= 3) along the rows' axis with its kh kernel rows folded into the GEMMs'
/// reduction. Inception's factorised 1x7/7x1 and 1x3/3x1 layers and its 5x5 layers.
///
/// A tile is `m` adjacent output pixels of one row (kh x r) or one column (r x 1), computed from the
/// `α = m + r - 1` input pixels that cover their windows in each of the kh input rows:
/// `y = Aᵀ [ Σ_{cin, row} (G g) ⊙ (Bᵀ d) ]`. The products at the α transform positions ξ, summed over
/// input channels and kernel rows, are α independent GEMMs `M[ξ] (tiles x Cout) = V[ξ] (tiles x kh·Cin)
/// · U[ξ]ᵀ` on `PackedGEMM.block`: α multiply-adds per tile per channel pair and kernel row instead of
/// m * r (F(4, 7): 10 against 28; F(4, 5): 8 against 20; F(4, 3): 6 against 12).
///
/// The matrices come from Toom-Cook interpolation at the points `interpolationPoints` (0, ±1, ±2,
/// ±1/2, ±3, then ∞): `Aᵀ[i][k] = p_k^i`, `G[k][j] = p_k^j / Π_{l≠k}(p_k - p_l)`, `Bᵀ[k]` the
/// coefficients of `Π_{l≠k}(x - p_l)`, and for ∞ the last output, the last tap and the coefficients
/// of `Π_l(x - p_l)`. They are built in Double at init; the transforms run them as dense α x α and
/// m x α products over channel vectors (a few percent of the GEMMs' multiply-adds at 128 or more
/// channels). Rounding: F(4, 7)'s points reach ±3, so results carry errors about 1e-5 relative to
/// the output's magnitude (`KernelParityTests.testLineWinogradMatchesDirect` measures them).
package final class WinogradLineConvolution: @unchecked Sendable {
    /// Input and output channels (multiples of 8).
    let inChannels: Int, outChannels: Int
    /// Kernel taps `r` along the axis, outputs per tile `m`, transform positions `α = m + r - 1`.
    let taps: Int, outputs: Int, alpha: Int
    /// Kernel rows folded into the reduction (kh of a kh x r kernel; 1 for r x 1).
    let foldedRows: Int
    /// Whether the axis is the columns' (an r x 1 kernel) rather than the rows'.
    let alongRows: Bool
    /// `Bᵀ` (α x α) and `Aᵀ` (m x α), row-major.
    let inputTransform: [Float], outputTransform: [Float]
    /// `U[ξ]` packed as `[Cout][foldedRows * Cin]` GEMM weights (kernel row major, channels minor).
    let transformed: [PackedWeights]

    /// Finite interpolation points in the order they are taken (α - 1 of them, then ∞).
    static let interpolationPoints: [Double] = [0, 1, -1, 2, -2, 0.5, -0.5, 3, -3, 1.0 / 3, -1.0 / 3]

    /// Outputs per tile: 4 (F(4, 7) needs 9 finite points, the most `interpolationPoints` keeps
    /// accurate to about 1e-5).
    static let outputsPerTile = 4

    /// Whether a layer of this geometry can run here: stride 1, explicit padding, channel counts
    /// multiples of 8 (at least 8), and either an r x 1 kernel (r from 3 to 7, no padding left or
    /// right) or a kh x r kernel (r from 3 to 7, kh at most 7, padding above and below less than kh)
    /// other than 3x3, which runs the 2-D `WinogradConvolution`.
    static func supports(inChannels: Int, outChannels: Int, kernelH: Int, kernelW: Int, stride: Int,
                         padding: Padding) -> Bool {
        guard stride == 1, inChannels % 8 == 0, outChannels % 8 == 0, inChannels > 0, outChannels > 0,
              case let .explicit(top, left, bottom, right) = padding else { return false }
        if kernelW == 1 { return (3...7).contains(kernelH) && left == 0 && right == 0 }
        return (3...7).contains(kernelW) && (1...7).contains(kernelH) && !(kernelH == 3 && kernelW == 3)
            && top < kernelH && bottom < kernelH
    }

    /// Transforms PyTorch-layout weights `[Cout][Cin][kh][kw]`, each output channel's filters scaled
    /// by `channelScale[o]` first (folded BN). Computed in Double, rounded once.
    init(weightOIHW w: UnsafePointer<Float>, outChannels: Int, inChannels: Int, kernelH: Int, kernelW: Int,
         channelScale: [Float]?, hugePages: Bool, threads: Int = 1) {
        self.inChannels = inChannels; self.outChannels = outChannels
        alongRows = kernelW == 1
        taps = alongRows ? kernelH : kernelW
        foldedRows = alongRows ? 1 : kernelH
        outputs = WinogradLineConvolution.outputsPerTile
        alpha = outputs + taps - 1
        let (at, g, bt) = WinogradLineConvolution.matrices(outputs: outputs, taps: taps)
        inputTransform = bt.map(Float.init); outputTransform = at.map(Float.init)
        let k = foldedRows * inChannels, plane = outChannels * k, alpha = self.alpha, r = taps
        let u = AlignedBuffer.allocate(alpha * plane)
        defer { AlignedBuffer.free(u) }
        let base = u.baseAddress!, foldedRows = foldedRows
        // Each task owns output channel o's entries of every plane.
        TensorThreads.run(pieces: outChannels, threads: threads) { o in
            let s = Double(channelScale?[o] ?? 1)
            for i in 0..<inChannels {
                for f in 0..<foldedRows {
                    // Taps of kernel row f (the whole kernel of an r x 1 layer) are r consecutive floats.
                    let tapsAt = w + ((o * inChannels + i) * foldedRows + f) * r
                    for xi in 0..<alpha {
                        var v = 0.0
                        for j in 0..<r { v += g[xi * r + j] * Double(tapsAt[j]) }
                        base[xi * plane + o * k + f * inChannels + i] = Float(v * s)
                    }
                }
            }
        }
        transformed = (0..<alpha).map { xi in
            PackedWeights(.rows(base + xi * plane, scale: nil), n: outChannels, k: k, hugePages: hugePages, threads: threads)
        }
    }

    /// `Aᵀ` (m x α), `G` (α x r) and `Bᵀ` (α x α) of F(m, r), row-major, from the first α - 1
    /// `interpolationPoints` and ∞ (see the type's documentation).
    package static func matrices(outputs m: Int, taps r: Int) -> (at: [Double], g: [Double], bt: [Double]) {
        let alpha = m + r - 1
        precondition(alpha - 1 <= interpolationPoints.count, "WinogradLineConvolution: too few interpolation points")
        let p = Array(interpolationPoints[0..<(alpha - 1)])
        /// Coefficients (lowest first) of Π (x - q) over `roots`.
        func polynomial(_ roots: [Double]) -> [Double] {
            var c = [1.0]
            for q in roots {
                var next = [Double](repeating: 0, count: c.count + 1)
                for (d, v) in c.enumerated() { next[d + 1] += v; next[d] -= q * v }
                c = next
            }
            return c
        }
        var at = [Double](repeating: 0, count: m * alpha), g = [Double](repeating: 0, count: alpha * r)
        var bt = [Double](repeating: 0, count: alpha * alpha)
        for k in 0..<(alpha - 1) {
            var others = p; others.remove(at: k)
            let norm = others.reduce(1.0) { $0 * (p[k] - $1) }
            for i in 0..<m { at[i * alpha + k] = pow(p[k], Double(i)) }
            for j in 0..<r { g[k * r + j] = pow(p[k], Double(j)) / norm }
            for (t, c) in polynomial(others).enumerated() { bt[k * alpha + t] = c }
        }
        at[(m - 1) * alpha + alpha - 1] = 1
        g[(alpha - 1) * r + r - 1] = 1
        for (t, c) in polynomial(p).enumerated() { bt[(alpha - 1) * alpha + t] = c }
        return (at, g, bt)
    }

    /// Runs the convolution (the contract of `Conv2D.forward`): NHWC `input` `[batch][height][width][Cin]`
    /// padded by `padding` along the kernel's axis to NHWC `output` whose pixels lie `outputStride`
    /// floats apart, `act(conv + bias + residual)` (`residual` dense, `Cout` floats per pixel).
    /// - Complexity: α * tiles * Cin * Cout multiply-adds (tiles = ceil(outputs along the axis / m) per
    ///   line), plus O(tiles * α * (α * Cin + m * Cout)) in the transforms.
    func forward(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                 padding: (top: Int, left: Int, bottom: Int, right: Int),
                 output: UnsafeMutablePointer<Float>, outputStride: Int, bias: UnsafePointer<Float>?,
                 residual: UnsafePointer<Float>?, activation: Activation, options: EngineOptions) {
        let axisLength = alongRows ? height : width
        let padBefore = alongRows ? padding.top : padding.left
        let outLength = axisLength + padBefore + (alongRows ? padding.bottom : padding.right) - taps + 1
        // Output rows of a layer along the rows' axis (its kernel rows folded).
        let outHeight = alongRows ? outLength : height + padding.top + padding.bottom - foldedRows + 1
        guard outLength > 0, outHeight > 0, batch > 0, height > 0, width > 0 else { return }
        let tilesPerLine = (outLength + outputs - 1) / outputs
        let tiles = batch * (alongRows ? width : outHeight) * tilesPerLine
        let geometry = LineGeometry(
            input: input, output: output, outputStride: outputStride, residual: residual, bias: bias, height: height,
            width: width, outHeight: outHeight, axisLength: axisLength, outLength: outLength, padBefore: padBefore,
            padTop: alongRows ? 0 : padding.top, foldedRows: foldedRows, tilesPerLine: tilesPerLine,
            alongRows: alongRows, m: outputs, alpha: alpha, inChannels: inChannels, outChannels: outChannels,
            inputTransform: inputTransform, outputTransform: outputTransform, activation: activation)
        let k = foldedRows * inChannels
        let threads = options.workers
        // Blocks of whole 6-row tiles whose V fits the Winograd block budget, cut smaller (to 12
        // tiles) until every worker has two.
        let largest = max(6, options.winogradBlockBudget / (alpha * k) / 6 * 6)
        var blocks = (tiles + largest - 1) / largest
        if threads > 1 { blocks = max(blocks, min(2 * threads, (tiles + 11) / 12)) }
        blocks = TensorThreads.wholeRounds(blocks, times: 1, limit: max(1, (tiles + 5) / 6), threads: threads)
        let panels = transformed[0].panelCount
        TensorThreads.run(pieces: blocks, threads: threads) { b in
            let block = evenBlock(b, of: blocks, count: tiles, granule: 6)
            guard !block.isEmpty else { return }
            let tile0 = block.lowerBound, count = block.count
            let vSlice = count * k, mSlice = count * self.outChannels
            KernelScratch.with(count: self.alpha * (vSlice + mSlice)) { v in
                let m = v + self.alpha * vSlice
                geometry.transformInput(tile0: tile0, count: count, into: v, slice: vSlice)
                for xi in 0..<self.alpha {
                    PackedGEMM.block(.matrix(UnsafePointer(v + xi * vSlice), rowStride: k), row0: 0, rows: count,
                                     w: self.transformed[xi], panelRange: 0..<panels, c: m + xi * mSlice,
                                     ldc: self.outChannels, bias: nil, residual: nil, residualStride: 0, activation: .none,
                                     includeTail: true, options: options)
                }
                geometry.transformOutput(tile0: tile0, count: count, from: UnsafePointer(m), slice: mSlice)
            }
        }
    }
}

/// The tensors and shape of one `WinogradLineConvolution` call, with the two transforms.
struct LineGeometry {
    let input: UnsafePointer<Float>
    /// Output pixels lie `outputStride` floats apart; residual pixels `outChannels` apart.
    let output: UnsafeMutablePointer<Float>, outputStride: Int
    let residual: UnsafePointer<Float>?
    let bias: UnsafePointer<Float>?
    /// Input map size and output rows; pixels along the kernel's axis in the input and output; padding
    /// before the first input pixel on that axis; rows of padding above and kernel rows folded into the
    /// reduction (along the rows' axis; 0 and 1 otherwise); tiles per output row or column.
    let height: Int, width: Int, outHeight: Int, axisLength: Int, outLength: Int, padBefore: Int
    let padTop: Int, foldedRows: Int, tilesPerLine: Int
    let alongRows: Bool
    let m: Int, alpha: Int, inChannels: Int, outChannels: Int
    let inputTransform: [Float], outputTransform: [Float]
    let activation: Activation

    /// Where tile `t` reads and writes: `inBase` is the pixel index of axis position 0 in the input
    /// line of its first folded kernel row, which is input row `inRow` (rows outside the map read
    /// zeros; the next folded row is one input row further); `outBase` the output pixel index of axis
    /// position 0 of its line; `step` the pixel distance along the axis (input and output); `first`
    /// the axis position of its first output. Tiles along rows run along each output row; those of
    /// an r x 1 layer run across the columns of one band of `m` rows, so neighbouring tiles read
    /// adjacent pixels.
    @inline(__always)
    func tile(_ t: Int) -> (inBase: Int, inRow: Int, outBase: Int, step: Int, first: Int) {
        if alongRows {
            let perImage = tilesPerLine * width
            let img = t / perImage, rem = t - img * perImage
            let k = rem / width, x = rem - k * width
            return (img * height * width + x, 0, img * outHeight * width + x, width, k * m)
        }
        let line = t / tilesPerLine, k = t - line * tilesPerLine
        let img = line / outHeight, oy = line - img * outHeight
        let inRow = oy - padTop
        return ((img * height + inRow) * width, inRow, line * outLength, 1, k * m)
    }

    /// `V[ξ][t][f·Cin + c] = Σ_j Bᵀ[ξ][j] d_f[j]` for tiles `tile0..<tile0+count` (row `t` = tile `tile0 + t`,
    /// row stride `foldedRows * Cin`, ξ planes `slice` apart), `d_f` the tile's α input pixels in folded
    /// kernel row `f`, zero outside the map.
    func transformInput(tile0: Int, count: Int, into v: UnsafeMutablePointer<Float>, slice: Int) {
        inputTransform.withUnsafeBufferPointer { btBuffer in
            let bt = btBuffer.baseAddress!
            withUnsafeTemporaryAllocation(of: SIMD16<Float>.self, capacity: alpha) { dBuffer in
                let d = dBuffer.baseAddress!
                for t in 0..<count {
                    let g = tile(tile0 + t)
                    let a0 = g.first - padBefore
                    let lo = max(0, -a0), hi = min(alpha, axisLength - a0)
                    for f in 0..<foldedRows {
                        let rowInside = g.inRow + f >= 0 && g.inRow + f < height
                        let inBase = g.inBase + f * width
                        let dst = v + (t * foldedRows + f) * inChannels
                        var ch = 0
                        while ch < inChannels {
                            let wide = ch + 16 <= inChannels
                            for j in 0..<alpha {
                                if rowInside && j >= lo && j < hi {
                                    let src = input + (inBase + (a0 + j) * g.step) * inChannels + ch
                                    d[j] = wide ? SIMD16<Float>.load(UnsafeRawPointer(src))
                                        : SIMD16(lowHalf: SIMD8<Float>.load(UnsafeRawPointer(src)), highHalf: SIMD8())
                                } else {
                                    d[j] = SIMD16()
                                }
                            }
                            for xi in 0..<alpha {
                                let row = bt + xi * alpha
                                var acc = SIMD16<Float>()
                                for j in 0..<alpha where row[j] != 0 { acc = acc.addingProduct(d[j], row[j]) }
                                let out = dst + xi * slice + ch
                                if wide { SIMD16<Float>.store(acc, to: UnsafeMutableRawPointer(out)) }
                                else { SIMD8<Float>.store(acc.lowHalf, to: UnsafeMutableRawPointer(out)) }
                            }
                            ch += wide ? 16 : 8
                        }
                    }
                }
            }
        }
    }

    /// `y[i] = act(Σ_ξ Aᵀ[i][ξ] M[ξ] + bias + residual)` for tiles `tile0..<tile0+count`, `m` holding
    /// `M[ξ][t][Cout]` (ξ planes `slice` apart); outputs past the end of the axis are not written.
    func transformOutput(tile0: Int, count: Int, from mm: UnsafePointer<Float>, slice: Int) {
        outputTransform.withUnsafeBufferPointer { atBuffer in
            let at = atBuffer.baseAddress!
            for t in 0..<count {
                let g = tile(tile0 + t)
                let valid = min(m, outLength - g.first)
                let src = mm + t * outChannels
                var ch = 0
                while ch < outChannels {
                    let wide = ch + 16 <= outChannels
                    @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
                        wide ? SIMD16<Float>.load(UnsafeRawPointer(p))
                            : SIMD16(lowHalf: SIMD8<Float>.load(UnsafeRawPointer(p)), highHalf: SIMD8())
                    }
                    let b = bias.map { load($0 + ch) } ?? SIMD16()
                    for i in 0..<valid {
                        let row = at + i * alpha
                        var acc = b
                        for xi in 0..<alpha where row[xi] != 0 { acc = acc.addingProduct(load(src + xi * slice + ch), row[xi]) }
                        let pixel = g.outBase + (g.first + i) * g.step
                        if let residual { acc += load(residual + pixel * outChannels + ch) }
                        acc = acc.activated(activation)
                        let out = output + pixel * outputStride + ch
                        if wide { SIMD16<Float>.store(acc, to: UnsafeMutableRawPointer(out)) }
                        else { SIMD8<Float>.store(acc.lowHalf, to: UnsafeMutableRawPointer(out)) }
                    }
                    ch += wide ? 16 : 8
                }
            }
        }
    }
}
