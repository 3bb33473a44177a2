import CCacheHints
import Foundation
import Synchronization

/// The right-hand operand of a layer's GEMM (its weights, `N` outputs by `K` inputs), packed once at
/// load time for `PackedGEMM`: columns in panels of 16 (the last one 8 wide when `N % 16 >= 8`),
/// each panel stored `[k][width]` so the micro-kernel reads it front to back; the `N % 8` columns
/// left over (none in the model zoo) stay `[col][k]` for a scalar loop.
///
/// Storage is `N * K` floats, the same as the unpacked weights.
public final class PackedWeights: @unchecked Sendable {
    /// Reduction length (input features / im2col row length).
    public let k: Int
    /// Output columns.
    public let n: Int
    /// Columns covered by panels (`n` rounded down to a multiple of 8).
    let panelColumns: Int
    let panels: UnsafeMutableBufferPointer<Float>
    let tail: UnsafeMutableBufferPointer<Float>

    /// Packs row-major `[n][k]` weights (PyTorch's `out x in` order); large ones ask for huge pages
    /// unless `hugePages` is false.
    public convenience init(rowsNK w: UnsafePointer<Float>, n: Int, k: Int, hugePages: Bool = true) {
        self.init(.rows(w, scale: nil), n: n, k: k, hugePages: hugePages, threads: 1)
    }

    /// Where the packed `[n][k]` matrix `B` (`B[j][kk]`: column `j` of the product, reduction index
    /// `kk`) is read from; `scale` (when given) multiplies the source matrix's rows.
    public enum Source {
        /// Row-major `[n][k]`: `B[j][kk] = w[j * k + kk] * scale[j]`.
        case rows(UnsafePointer<Float>, scale: UnsafePointer<Float>?)
        /// Row-major `[k][n]`, packed transposed: `B[j][kk] = w[kk * n + j] * scale[kk]`.
        case columns(UnsafePointer<Float>, scale: UnsafePointer<Float>?)
    }

    /// Packs `source` in one pass, panels spread over `threads` threads (one pass over the source per
    /// panel: contiguous reads for `.columns`, 16 interleaved row streams for `.rows`).
    /// - Complexity: `n * k` copies.
    public init(_ source: Source, n: Int, k: Int, hugePages: Bool = true, threads: Int) {
        self.n = n; self.k = k
        let panelColumns = n & ~7
        self.panelColumns = panelColumns
        panels = AlignedBuffer.allocate(max(1, panelColumns * k), hugePages: hugePages)
        tail = AlignedBuffer.allocate(max(1, (n - panelColumns) * k))
        let panelBase = panels.baseAddress!, tailBase = tail.baseAddress!
        // Panel p covers columns 16p ..< 16p + width; one more piece packs the tail columns.
        let panelCount = (panelColumns + 15) / 16
        TensorThreads.run(pieces: panelCount + 1, threads: threads) { p in
            let j0 = p < panelCount ? p * 16 : panelColumns
            let width = p < panelCount ? PackedWeights.panelWidth(at: j0, columns: panelColumns) : n - panelColumns
            // Panels interleave `width` columns per reduction step; the tail stores each column contiguously.
            let dst = p < panelCount ? panelBase + j0 * k : tailBase
            let (columnStep, reductionStep) = p < panelCount ? (1, width) : (k, 1)
            switch source {
            case let .rows(w, scale):
                for j in 0..<width {
                    let s = scale?[j0 + j] ?? 1, row = w + (j0 + j) * k, out = dst + j * columnStep
                    for kk in 0..<k { out[kk * reductionStep] = row[kk] * s }
                }
            case let .columns(w, scale):
                for kk in 0..<k {
                    let s = scale?[kk] ?? 1, row = w + kk * n + j0, out = dst + kk * reductionStep
                    for j in 0..<width { out[j * columnStep] = row[j] * s }
                }
            }
        }
    }

    deinit { AlignedBuffer.free(panels); AlignedBuffer.free(tail) }

    /// Width of the panel starting at column `j0`: 16, or 8 for a final half panel.
    @inline(__always)
    static func panelWidth(at j0: Int, columns: Int) -> Int { columns - j0 >= 16 ? 16 : 8 }

    /// Number of panels.
    package var panelCount: Int { (panelColumns + 15) / 16 }

    /// Panel `p`'s rows `k0..<k0 + kc`: where they start and how many 64-byte lines they span.
    @inline(__always)
    func panelSlice(_ p: Int, k0: Int, kc: Int) -> PanelSlice {
        let j0 = p * 16, width = PackedWeights.panelWidth(at: j0, columns: panelColumns)
        return PanelSlice(start: UnsafePointer(panels.baseAddress!) + j0 * k + k0 * width, lines: kc * width / 16)
    }
}

/// `C = act(A · Wᵀ + bias + residual)` with `A` row-major `[m][k]` (an NHWC activation or im2col
/// buffer, used in place: no packing of the large operand), `W` a `PackedWeights`, and the bias,
/// residual add and activation applied while the output tile is still in registers.
///
/// Register blocking 6 rows x 16 columns (12 AVX accumulators), `k` blocked by 256 so a weight panel
/// stays in L1 and rows blocked by 96 so the `A` block stays in L2. Work is split over
/// `TensorThreads` by row blocks, and by column panels as well when there are few rows (batch-1
/// late layers).
///
/// - Complexity: `m * n * k` multiply-adds.
public enum PackedGEMM {
    static let kBlock = 256
    static let mBlock = 96
    static let mr = 6
    /// Most panels (128 output columns) of a product whose rows split finer (`EngineOptions.narrowRowBlocks`).
    static let narrowPanels = 8
    /// Row stride of the gathered patch block: one slice plus 16 floats, so rows do not fall on
    /// 4 KiB multiples of each other (set conflicts in L1).
    static let gatherStride = kBlock + 16


    /// Runs the product. `c` (row stride `ldc`) must not alias the operand; `residual` (row stride
    /// `residualStride`) must not alias the operand but may be `c` itself with `residualStride == ldc`
    /// (every output element is written after its residual element is read). `bias` has `n` entries.
    public static func run(_ operand: GEMMOperand, m: Int, weights w: PackedWeights,
                           c: UnsafeMutablePointer<Float>, ldc: Int,
                           bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?, residualStride: Int,
                           activation: Activation, options: EngineOptions = .default) {
        if m <= 0 { return }
        let panels = w.panelCount
        let threads = options.workers
        // Row blocks of at most `mBlock` rows, evened out (196 rows: 66 + 66 + 64, not 96 + 96 + 4);
        // column groups as well when there are too few row blocks to give every worker several tasks.
        let tiles = (m + mr - 1) / mr
        var rowBlocks = (m + mBlock - 1) / mBlock
        // Narrow products (`EngineOptions.narrowRowBlocks`): row blocks of half `mBlock`, so the pieces
        // where the threads' shares meet are half as tall.
        if options.narrowRowBlocks && threads > 1 && panels <= narrowPanels && rowBlocks > 1 {
            rowBlocks = min(tiles, 2 * rowBlocks)
        }
        var groups = threads == 1 ? 1 : min(max(1, panels), max(1, (4 * threads + rowBlocks - 1) / rowBlocks))
        // A whole number of tasks per thread (`TensorThreads.wholeRounds`; the 14x14 and 28x28 layers
        // of a batch-1 pass had 3 row blocks x 3 column groups, and 9 row blocks).
        if groups > 1 {
            groups = TensorThreads.wholeRounds(groups, times: rowBlocks, limit: panels, threads: threads)
        } else {
            rowBlocks = TensorThreads.wholeRounds(rowBlocks, times: 1, limit: tiles, threads: threads)
        }
        if groups > 1 && options.sharedOperand, let stride = sharedOperandStride(operand, k: w.k, windowReads: options.windowReads) {
            // Every column group would gather (or copy) the same rows: do it once, in parallel, and
            // let the groups read the result in place.
            KernelScratch.with(count: m * stride) { shared in
                let pieces = min(m, 4 * threads)
                TensorThreads.run(pieces: pieces, threads: threads) { piece in
                    let r0 = piece * m / pieces, r1 = (piece + 1) * m / pieces
                    guard r0 < r1 else { return }
                    copyOperand(operand, rows: r0..<r1, kc: w.k, into: shared + r0 * stride, rowStride: stride)
                }
                run(.matrix(UnsafePointer(shared), rowStride: stride), m: m, weights: w, c: c, ldc: ldc, bias: bias,
                    residual: residual, residualStride: residualStride, activation: activation, options: options)
            }
            return
        }
        // Bytes the product writes (a channel slice of a wider output writes `n` of every `ldc` floats).
        let prefetchTiles = m * w.n * MemoryLayout<Float>.stride >= options.prefetchMinimumBytes ? options.prefetchTiles : 0
        // Tasks in column-group order when the weights outweigh the operand rows and overflow half of
        // L2 (batch-1 late layers): the caller, taking tasks from the front, and the workers, from the
        // back, then each read their own share of the weights from memory instead of all of them.
        // Smaller weights stay in cache anyway, and row order keeps each thread on the rows it wrote.
        let groupMajor = options.groupMajorTasks && groups > 1 && w.n > m
            && w.n * w.k * MemoryLayout<Float>.stride >= options.tileMajorWeightBytes
        // Row blocks of whole tiles, as many in each as can be (131 tiles in 10 blocks: 13 or 14).
        let tasks = ProductTasks(rows: m, granule: mr, blocks: rowBlocks, groups: groups, panels: panels, groupMajor: groupMajor,
                                 threads: threads, tapered: options.taperedPieces)
        TensorThreads.run(pieces: tasks.count, threads: threads) { task in
            let (rows, panelRange) = tasks.range(task)
            // (No check on `panelRange`: a product narrower than one panel has only its tail.)
            guard !rows.isEmpty else { return }
            block(operand, row0: rows.lowerBound, rows: rows.count, w: w, panelRange: panelRange,
                  c: c + rows.lowerBound * ldc, ldc: ldc, bias: bias,
                  residual: residual.map { $0 + rows.lowerBound * residualStride }, residualStride: residualStride,
                  activation: activation, includeTail: panelRange.upperBound == panels, options: options,
                  prefetchTiles: prefetchTiles, tileMajor: options.tileMajor)
        }
    }


    /// Row stride for a shared copy of `operand` when `block` would otherwise copy it per task (patches
    /// it gathers, or rows 4 KiB multiples apart it copies to a padded block), else nil
    /// (`paddedRowStride`).
    static func sharedOperandStride(_ operand: GEMMOperand, k: Int, windowReads: Bool) -> Int? {
        switch operand {
        case let .patches(geometry) where !geometry.readsWindowsInPlace(k: k, enabled: windowReads): break
        case let .matrix(_, stride) where rowsShareL1Set(stride): break
        default: return nil
        }
        return paddedRowStride(k)
    }

    /// A row stride for `k` floats copied to scratch: `k` rounded up to 16 floats, plus 16 when that
    /// is a multiple of 256 (rows a multiple of 1 KiB apart share L1 sets, see `gatherStride`).
    static func paddedRowStride(_ k: Int) -> Int {
        let rounded = (k + 15) / 16 * 16
        return rounded % 256 == 0 ? rounded + 16 : rounded
    }

    /// Whether a `.matrix` operand's rows, `stride` floats apart, are 4 KiB multiples apart: six rows
    /// read together would then all fall in one L1 set, so `block` copies them to a padded block.
    @inline(__always)
    static func rowsShareL1Set(_ stride: Int) -> Bool { stride % 1024 == 0 }

    /// Columns `k0..<k0 + kc` of rows `rows` of `operand` to `dst` (row stride `rowStride`): the
    /// receptive fields of patches, or a plain copy of a matrix's rows.
    static func copyOperand(_ operand: GEMMOperand, rows: Range<Int>, k0: Int = 0, kc: Int,
                            into dst: UnsafeMutablePointer<Float>, rowStride: Int) {
        switch operand {
        case let .patches(geometry):
            geometry.gather(row0: rows.lowerBound, rows: rows.count, k0: k0, kc: kc, into: dst, rowStride: rowStride)
        case let .matrix(base, stride):
            for (i, r) in rows.enumerated() { (dst + i * rowStride).update(from: base + r * stride + k0, count: kc) }
        }
    }

    /// One row block against a range of panels, all of `k`, one `kBlock` slice at a time. Patch
    /// operands are gathered per slice into a block-sized buffer that stays in L2 (no im2col matrix).
    package static func block(_ operand: GEMMOperand, row0: Int, rows: Int, w: PackedWeights, panelRange: Range<Int>,
                      c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?,
                      residual: UnsafePointer<Float>?, residualStride: Int, activation: Activation, includeTail: Bool,
                      options: EngineOptions, prefetchTiles: Int = 0, tileMajor: Bool = false) {
        if case let .patches(geometry) = operand, geometry.readsWindowsInPlace(k: w.k, enabled: options.windowReads),
           !includeTail || w.panelColumns == w.n {
            windowBlock(geometry, row0: row0, rows: rows, w: w, panelRange: panelRange, c: c, ldc: ldc, bias: bias,
                        residual: residual, residualStride: residualStride, activation: activation)
            return
        }
        if tileMajor, let source = TileMajorRows(operand, row0: row0, w: w, includeTail: includeTail) {
            tileMajorBlock(source, rows: rows, w: w, panelRange: panelRange, c: c, ldc: ldc,
                           bias: bias, residual: residual, residualStride: residualStride, activation: activation,
                           includeTail: includeTail, weightBytes: options.tileMajorWeightBytes, prefetchTiles: prefetchTiles,
                           prefetchWeights: options.prefetchWeights)
            return
        }
        let gatherCount: Int
        switch operand {
        case .patches: gatherCount = rows * gatherStride
        case let .matrix(_, stride): gatherCount = rowsShareL1Set(stride) ? rows * gatherStride : 0
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, gatherCount)) { buffer in
            let k = w.k
            var k0 = 0
            repeat {
                let kc = min(kBlock, k - k0)
                let first = k0 == 0, last = k0 + kc >= k
                let a: UnsafePointer<Float>, lda: Int
                if case let .matrix(base, stride) = operand, gatherCount == 0 {
                    a = base + row0 * stride + k0; lda = stride
                } else {
                    // Patches, or rows 4 KiB apart (K = 1024, 2048), which would all share one L1 set:
                    // the slice goes to the padded block first.
                    copyOperand(operand, rows: row0..<(row0 + rows), k0: k0, kc: kc, into: buffer.baseAddress!,
                                rowStride: gatherStride)
                    a = UnsafePointer(buffer.baseAddress!); lda = gatherStride
                }
                for p in panelRange {
                    let j0 = p * 16
                    let width = PackedWeights.panelWidth(at: j0, columns: w.panelColumns)
                    let panel = UnsafePointer(w.panels.baseAddress!) + j0 * k + k0 * width
                    // The strip after this one: the next panel of this slice, or the first of the next slice.
                    let next = !options.prefetchWeights ? nil
                        : p + 1 < panelRange.upperBound ? w.panelSlice(p + 1, k0: k0, kc: kc)
                        : last ? nil : w.panelSlice(panelRange.lowerBound, k0: k0 + kc, kc: min(kBlock, k - k0 - kc))
                    TileStrip(a: a, lda: lda, rows: rows, b: panel, kc: kc, c: c + j0, ldc: ldc,
                              bias: bias.map { $0 + j0 }, residual: residual.map { $0 + j0 }, residualStride: residualStride,
                              first: first, activation: last ? activation : Activation.none,
                              prefetchTiles: prefetchTiles, nextPanel: next).run(width: width)
                }
                if includeTail && w.panelColumns < w.n {
                    scalarTail(a: a, lda: lda, rows: rows, k0: k0, kc: kc, w: w, c: c, ldc: ldc, bias: first ? bias : nil,
                               residual: first ? residual : nil, residualStride: residualStride,
                               accumulate: !first, activation: last ? activation : .none)
                }
                k0 += kc
            } while k0 < k
        }
    }

    /// Longest `k` slice of a tile-major product: a tile's six rows of `A` (6 * k floats) stay in L1.
    /// Products with a longer `k` run tile-major only when their rows are copied (see `tileMajorBlock`).
    static let tileMajorMaximumK = 2 * kBlock

    /// `block` for a whole 1x1 convolution layer (`run` with a `TileMajorRows` source): each six-row
    /// tile runs against every panel of a group (`tileMajorWeightBytes` of panels, held in L2) before
    /// the next tile, instead of each panel against every tile. A tile's `A` rows are then read from
    /// memory once and stay in L1, and each output (and residual) row is read and written front to
    /// back. Rows `0..<rows` of `source`, panels `panelRange`, the scalar tail when `includeTail`;
    /// `c`, `residual` and `bias` as in `block`.
    ///
    /// `k` over `tileMajorMaximumK` (only where rows are copied: see `TileMajorRows.init`) runs in
    /// slices of at most that length, the partial sums kept in `c` (`KSlice`). Each pass of tiles runs
    /// against a group of panels of at most `weightBytes` (`EngineOptions.tileMajorWeightBytes`).
    /// With `prefetchTiles` > 0, while a tile runs against a panel it prefetches the next tile's skip (or output) lines for
    /// that panel and, when one slice covers a contiguous `A` block, a share of the next tile's rows.
    /// Same products in the same order as `block`, so results are identical. Why this order, these
    /// slices and these prefetches: docs/ENGINE.md, "GEMM".
    static func tileMajorBlock(_ source: TileMajorRows, rows: Int, w: PackedWeights, panelRange: Range<Int>,
                               c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?,
                               residual: UnsafePointer<Float>?, residualStride: Int, activation: Activation,
                               includeTail: Bool, weightBytes: Int, prefetchTiles: Int = 0, prefetchWeights: Bool = false) {
        let k = w.k
        // `k` in slices of at most `tileMajorMaximumK` (multiples of 16, the last taking the
        // remainder), partial sums kept in `c`.
        let sliceCount = (k + tileMajorMaximumK - 1) / tileMajorMaximumK
        func columns(ofSlice s: Int) -> Range<Int> {
            let k0 = s * (k / 16) / sliceCount * 16
            return k0..<(s == sliceCount - 1 ? k : (s + 1) * (k / 16) / sliceCount * 16)
        }
        // The copy stride and the weight groups are sized for the longest slice.
        let longest = (0..<sliceCount).reduce(0) { max($0, columns(ofSlice: $1).count) }
        let prefetches = prefetchTiles > 0
        let groupPanels = max(1, weightBytes / (longest * 16 * MemoryLayout<Float>.stride))
        let panels = UnsafePointer(w.panels.baseAddress!)
        let copyStride = source.copyStride(k: longest)
        let tiling = RowTiling(rows: rows)
        func run(copy: UnsafeMutablePointer<Float>?) {
            for s in 0..<sliceCount {
                let sliceColumns = columns(ofSlice: s), k0 = sliceColumns.lowerBound
                let slice = KSlice(k0: k0, kc: sliceColumns.count, first: s == 0, last: s == sliceCount - 1)
                @inline(__always) func windows(_ r: Int, _ n: Int) -> TileWindows {
                    source.windows(row: r, rows: n, k0: k0, kc: slice.kc, copy: copy, copyStride: copyStride)
                }
                // The next tile's output lines (skip lines in the first slice), and its `A` rows only
                // when one slice covers them.
                let ahead = !prefetches ? TileMajorPrefetch.none : sliceCount == 1 ? .outputAndRows : .output
                let act = slice.last ? activation : .none
                // The first tile against each panel reads it from memory and prefetches the one after it.
                let prefetchBelow = prefetchWeights ? panelRange.upperBound : 0
                var g0 = panelRange.lowerBound
                while g0 < panelRange.upperBound {
                    let g1 = min(panelRange.upperBound, g0 + groupPanels)
                    // Six- and five-row tiles with the activation a constant (`Tile.full`), then the last,
                    // partial one (`RowTiling`).
                    var r: Int
                    switch act {
                    case .none: r = tileMajorFullTiles(windows, source: source, ahead: ahead, tiling: tiling, w: w, slice: slice,
                                                       panels: g0..<g1, c: c, ldc: ldc, bias: bias,
                                                       residual: residual, residualStride: residualStride,
                                                       prefetchPanelsBelow: prefetchBelow, .none)
                    case .relu: r = tileMajorFullTiles(windows, source: source, ahead: ahead, tiling: tiling, w: w, slice: slice,
                                                       panels: g0..<g1, c: c, ldc: ldc, bias: bias,
                                                       residual: residual, residualStride: residualStride,
                                                       prefetchPanelsBelow: prefetchBelow, .relu)
                    case .relu6: r = tileMajorFullTiles(windows, source: source, ahead: ahead, tiling: tiling, w: w, slice: slice,
                                                        panels: g0..<g1, c: c, ldc: ldc, bias: bias,
                                                        residual: residual, residualStride: residualStride,
                                                       prefetchPanelsBelow: prefetchBelow, .relu6)
                    }
                    while r < rows {
                        let n = tiling.height(at: r), tileWindows = windows(r, n)
                        for p in g0..<g1 {
                            let j0 = p * 16
                            let width = PackedWeights.panelWidth(at: j0, columns: w.panelColumns)
                            let tile = Tile(windows: tileWindows, offsets: nil, rows: n, b: panels + j0 * k + k0 * width,
                                            kc: slice.kc, c: c + r * ldc + j0, ldc: ldc,
                                            initial: slice.first
                                                ? .fresh(bias: bias.map { $0 + j0 }, residual: residual.map { $0 + r * residualStride + j0 },
                                                         residualStride: residualStride)
                                                : .accumulate,
                                            activation: act)
                            tile.contiguousProduct(width: width)
                        }
                        r += n
                    }
                    g0 = g1
                }
            }
        }
        // Scratch only for copied rows: this runs once per row block (and per fused-block step), and
        // the scratch pool takes a lock.
        if copyStride > 0 { KernelScratch.with(count: mr * copyStride) { run(copy: $0) } } else { run(copy: nil) }
        if includeTail && w.panelColumns < w.n, case let .matrix(a, lda) = source {
            scalarTail(a: a, lda: lda, rows: rows, k0: 0, kc: k, w: w, c: c, ldc: ldc, bias: bias,
                       residual: residual, residualStride: residualStride, accumulate: false, activation: activation)
        }
    }

    /// One `k` slice of a tile-major product: columns `k0..<k0 + kc` of `A`; the first starts from bias +
    /// residual, later ones from the partial sums in the output; the last applies the activation.
    struct KSlice {
        let k0: Int, kc: Int, first: Bool, last: Bool
    }

    /// What a tile-major tile prefetches for the next tile: nothing, its output (or skip) lines, or
    /// those and its `A` rows (when they are one contiguous block).
    enum TileMajorPrefetch { case none, output, outputAndRows }

    /// The six-row tiles of `tileMajorBlock` and the five-row tiles after them (`tiling`) against panels
    /// `panels`; returns the rows covered (all but a last, partial tile). Unlike a `Tile` per tile and
    /// panel (kept for that partial tile), the activation is a constant (`act`, one copy of the loop
    /// per activation), the tile height a generic parameter, and the row pointers are built once per
    /// tile. The panel-major strips (`TileStrip`) keep one `Tile` per six rows (docs/ENGINE.md, "GEMM").
    @_transparent
    static func tileMajorFullTiles(_ windowsAt: (_ row: Int, _ rows: Int) -> TileWindows, source: TileMajorRows,
                                   ahead: TileMajorPrefetch, tiling: RowTiling, w: PackedWeights, slice: KSlice,
                                   panels: Range<Int>, c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?,
                                   residual: UnsafePointer<Float>?, residualStride: Int, prefetchPanelsBelow: Int,
                                   _ act: Activation) -> Int {
        let k = w.k, packed = UnsafePointer(w.panels.baseAddress!)
        let residual = slice.first ? residual : nil
        let sixRows = 6 * tiling.sixes, rows = sixRows + 5 * tiling.fives
        // Tile `H` at row `r` against every panel.
        @inline(__always) func tile<H: TileHeight>(_ height: H.Type, at r: Int) {
            let h = H.hasSixthRow ? 6 : 5
            // Row pointers built once per tile (`TileWindows`): written as `a + (r + i) * lda`, the
            // optimiser rebuilt them from one base inside the reduction loop (3-4 more integer ops per step).
            let windows = windowsAt(r, h)
            let out = c + r * ldc, res = residual.map { $0 + r * residualStride }
            let nextHeight = r + h < rows ? tiling.height(at: r + h) : 0
            let next = ahead != .none && nextHeight > 0
            let nextA = next && ahead == .outputAndRows ? source.contiguousRow(r + h, k: k) : nil
            let aLines = nextHeight * k / 16, groupCount = panels.count
            for p in panels {
                let j0 = p * 16
                // The first tile against each panel reads it from memory; it prefetches the next one.
                let prefetchesNext = r == 0 && p + 1 < prefetchPanelsBelow
                if next {
                    // The next tile's lines for this panel (skip or output rows), and a share of its A block.
                    if let res {
                        for i in h..<(h + nextHeight) { bottleneck_prefetch_read(res + i * residualStride + j0) }
                    } else {
                        for i in h..<(h + nextHeight) { bottleneck_prefetch_write(out + i * ldc + j0) }
                    }
                    if let nextA {
                        let q = p - panels.lowerBound
                        for line in (q * aLines / groupCount)..<((q + 1) * aLines / groupCount) {
                            bottleneck_prefetch_read(nextA + line * 16)
                        }
                    }
                }
                if prefetchesNext && PackedWeights.panelWidth(at: j0, columns: w.panelColumns) == 16 {
                    Tile.full(SIMD16<Float>.self, rows: windows, b: packed + j0 * k + slice.k0 * 16, kc: slice.kc,
                              out: out + j0, ldc: ldc, accumulating: !slice.first,
                              bias: bias.map { Tile.load($0 + j0, SIMD16<Float>.self) } ?? SIMD16(),
                              residual: res.map { $0 + j0 }, residualStride: residualStride,
                              prefetch: NextPanelLines(start: w.panelSlice(p + 1, k0: slice.k0, kc: slice.kc).start), height: H.self, act)
                } else if PackedWeights.panelWidth(at: j0, columns: w.panelColumns) == 16 {
                    Tile.full(SIMD16<Float>.self, rows: windows, b: packed + j0 * k + slice.k0 * 16, kc: slice.kc,
                              out: out + j0, ldc: ldc, accumulating: !slice.first,
                              bias: bias.map { Tile.load($0 + j0, SIMD16<Float>.self) } ?? SIMD16(),
                              residual: res.map { $0 + j0 }, residualStride: residualStride, height: H.self, act)
                } else {
                    Tile.full(SIMD8<Float>.self, rows: windows, b: packed + j0 * k + slice.k0 * 8, kc: slice.kc,
                              out: out + j0, ldc: ldc, accumulating: !slice.first,
                              bias: bias.map { Tile.load($0 + j0, SIMD8<Float>.self) } ?? SIMD8(),
                              residual: res.map { $0 + j0 }, residualStride: residualStride, height: H.self, act)
                }
            }
        }
        var r = 0
        while r < sixRows { tile(SixRows.self, at: r); r += 6 }
        while r < rows { tile(FiveRows.self, at: r); r += 5 }
        return r
    }

    /// `block` for convolutions whose receptive fields are gathered in short pieces (few input
    /// channels: the stem layers, `Cin = 3`): a micro-tile whose windows lie inside the image reads
    /// them where they are, through a table of `k` element offsets, instead of copying each kernel
    /// row (a 9-float copy per row of the stem's 27-long patches costs more than its multiply-adds).
    /// Micro-tiles touching the padding are gathered as usual. Same products in the same order as
    /// the gathered path, so the results are identical.
    static func windowBlock(_ geometry: PatchGeometry, row0: Int, rows: Int, w: PackedWeights, panelRange: Range<Int>,
                            c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?,
                            residual: UnsafePointer<Float>?, residualStride: Int, activation: Activation) {
        let k = w.k
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: k) { offsets in
            geometry.windowOffsets(into: offsets.baseAddress!)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: mr * gatherStride) { buffer in
                var r = 0
                var pixel = geometry.pixel(ofRow: row0)
                while r < rows {
                    let tileRows = min(mr, rows - r)
                    var windows: TileWindows, table: UnsafePointer<Int32>?
                    if let interior = geometry.interiorWindows(from: &pixel, rows: tileRows) {
                        windows = interior; table = UnsafePointer(offsets.baseAddress!)
                    } else {
                        geometry.gather(row0: row0 + r, rows: tileRows, k0: 0, kc: k, into: buffer.baseAddress!,
                                        rowStride: gatherStride)
                        windows = TileWindows(UnsafePointer(buffer.baseAddress!), rowStride: gatherStride, rows: tileRows)
                        table = nil
                    }
                    for p in panelRange {
                        let j0 = p * 16
                        let tile = Tile(windows: windows, offsets: table, rows: tileRows,
                                        b: UnsafePointer(w.panels.baseAddress!) + j0 * k, kc: k, c: c + r * ldc + j0, ldc: ldc,
                                        initial: .fresh(bias: bias.map { $0 + j0 },
                                                        residual: residual.map { $0 + r * residualStride + j0 },
                                                        residualStride: residualStride),
                                        activation: activation)
                        tile.run(width: PackedWeights.panelWidth(at: j0, columns: w.panelColumns))
                    }
                    r += mr
                }
            }
        }
    }

    /// Columns past the last multiple of 8, one `k` slice: plain dot products (no model in the zoo
    /// has any).
    static func scalarTail(a: UnsafePointer<Float>, lda: Int, rows: Int, k0: Int, kc: Int, w: PackedWeights,
                           c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>?,
                           residual: UnsafePointer<Float>?, residualStride: Int, accumulate: Bool, activation: Activation) {
        for r in 0..<rows {
            for j in w.panelColumns..<w.n {
                let wr = UnsafePointer(w.tail.baseAddress!) + (j - w.panelColumns) * w.k + k0
                var s: Float = accumulate ? c[r * ldc + j] : 0
                for kk in 0..<kc { s += a[r * lda + kk] * wr[kk] }
                if let bias { s += bias[j] }
                if let residual { s += residual[r * residualStride + j] }
                c[r * ldc + j] = activate(s, activation)
            }
        }
    }
}

/// The `A` rows `PackedGEMM.tileMajorBlock` reads: a row-major matrix (`lda` floats apart, from the
/// block's first row), or the input pixels of an unpadded 1x1 convolution of any stride (ResNet's
/// stride-2 projection shortcuts), each row its pixel's channels, read where they lie.
enum TileMajorRows {
    case matrix(UnsafePointer<Float>, lda: Int)
    case pixels(PatchGeometry, row0: Int)

    /// The tile-major source for rows `row0...` of `operand`, or nil when the product runs
    /// panel-major: windows of larger kernels (gathered per `k` slice), strided 1x1 layers with a
    /// scalar column tail (none in the model zoo), and `k` over `tileMajorMaximumK` with rows read in
    /// place.
    init?(_ operand: GEMMOperand, row0: Int, w: PackedWeights, includeTail: Bool) {
        switch operand {
        case let .matrix(base, stride):
            self = .matrix(base + row0 * stride, lda: stride)
        case let .patches(geometry):
            guard geometry.isPointwise, !includeTail || w.panelColumns == w.n else { return nil }
            self = .pixels(geometry, row0: row0)
        }
        guard w.k <= PackedGEMM.tileMajorMaximumK || copyStride(k: w.k) > 0 else { return nil }
    }

    /// Row stride of the scratch each tile's rows are first copied to when adjacent rows lie a
    /// multiple of 4 KiB apart (K = 1024 and 2048 matrices, stride-2 shortcuts of 512 and 1024
    /// channels): six rows in one L1 set would evict each other while the panels stream through.
    /// 0 when the rows are read in place.
    func copyStride(k: Int) -> Int {
        let distance: Int
        switch self {
        case let .matrix(_, lda): distance = lda
        case let .pixels(geometry, _): distance = geometry.stride * geometry.channels
        }
        return PackedGEMM.rowsShareL1Set(distance) ? PackedGEMM.paddedRowStride(k) : 0
    }

    /// The first element of row `row` when rows follow each other in memory (a matrix with `lda == k`):
    /// a tile's rows are then one block of `6 * k` floats.
    @inline(__always)
    func contiguousRow(_ row: Int, k: Int) -> UnsafePointer<Float>? {
        if case let .matrix(a, lda) = self, lda == k { return a + row * lda }
        return nil
    }

    /// Columns `k0..<k0 + kc` of rows `row..<row + rows` (`rows` 1...6): their first elements, in
    /// place or, when `copyStride > 0`, after copying them `copyStride` apart to `copy`.
    @inline(__always)
    func windows(row: Int, rows: Int, k0: Int, kc: Int, copy: UnsafeMutablePointer<Float>?, copyStride: Int) -> TileWindows {
        var windows: TileWindows
        switch self {
        case let .matrix(a, lda):
            windows = TileWindows(a + row * lda + k0, rowStride: lda, rows: rows)
        case let .pixels(geometry, row0):
            windows = TileWindows(geometry.input, rowStride: 0, rows: 1)
            for i in 0..<PackedGEMM.mr { windows[i] = geometry.pointwiseRow(row0 + row + min(i, rows - 1)) + k0 }
        }
        guard copyStride > 0, let copy else { return windows }
        for i in 0..<rows { (copy + i * copyStride).update(from: windows[i], count: kc) }
        return TileWindows(UnsafePointer(copy), rowStride: copyStride, rows: rows)
    }
}

/// The left operand of `PackedGEMM`.
public enum GEMMOperand {
    /// A row-major `[m][k]` matrix (an NHWC activation for a 1x1 convolution), read in place.
    case matrix(UnsafePointer<Float>, rowStride: Int)
    /// The receptive fields of a convolution's output pixels (the im2col matrix, never materialised).
    case patches(PatchGeometry)
}

/// Where the im2col rows of a convolution come from: row `r` is output pixel `r` (batch-major,
/// then y, x) and holds its receptive field `[kh][kw][Cin]` with zeros for padding.
public struct PatchGeometry {
    let input: UnsafePointer<Float>
    let height: Int, width: Int, channels: Int
    let kernelH: Int, kernelW: Int, stride: Int, padTop: Int, padLeft: Int
    let outHeight: Int, outWidth: Int

    /// Whether `PackedGEMM` reads this convolution's windows in place (`windowBlock`): the pieces a
    /// gather would copy (one kernel row of pixels, `kernelW * channels` floats) are short, and the
    /// whole patch fits one `kBlock` slice.
    func readsWindowsInPlace(k: Int, enabled: Bool) -> Bool {
        enabled && kernelW * channels <= 32 && k <= PackedGEMM.kBlock
    }

    /// Element offsets, from a window's top-left input element, of the patch's `k` entries
    /// (`[kh][kw][Cin]` order, rows `width * channels` apart).
    func windowOffsets(into offsets: UnsafeMutablePointer<Int32>) {
        var i = 0
        for ky in 0..<kernelH {
            for x in 0..<(kernelW * channels) { offsets[i] = Int32(ky * width * channels + x); i += 1 }
        }
    }

    /// Whether this is a 1x1 convolution (any stride) whose every window lies inside the image: each
    /// row is one input pixel's channels.
    var isPointwise: Bool {
        kernelH == 1 && kernelW == 1 && padTop == 0 && padLeft == 0
            && (outHeight - 1) * stride < height && (outWidth - 1) * stride < width
    }

    /// Row `row`'s channels in the input, for a pointwise geometry (`isPointwise`).
    @inline(__always)
    func pointwiseRow(_ row: Int) -> UnsafePointer<Float> {
        let (img, oy, ox) = pixel(ofRow: row)
        return input + ((img * height + oy * stride) * width + ox * stride) * channels
    }

    /// Output pixel `(image, y, x)` of GEMM row `row`.
    func pixel(ofRow row: Int) -> (image: Int, y: Int, x: Int) {
        let plane = outHeight * outWidth
        let img = row / plane, rem = row - img * plane
        let oy = rem / outWidth
        return (img, oy, rem - oy * outWidth)
    }

    /// The top-left input elements of the next `rows` output pixels (at most 6) from `pixel`, if all
    /// their windows lie inside the image (no padding), else nil; `pixel` moves past them either way.
    func interiorWindows(from pixel: inout (image: Int, y: Int, x: Int), rows: Int) -> TileWindows? {
        var windows = TileWindows(input, rowStride: 0, rows: 1)
        var interior = true
        for r in 0..<rows {
            let iy = pixel.y * stride - padTop, ix = pixel.x * stride - padLeft
            if iy < 0 || ix < 0 || iy + kernelH > height || ix + kernelW > width { interior = false }
            windows[r] = input + ((pixel.image * height + iy) * width + ix) * channels
            pixel.x += 1
            if pixel.x == outWidth {
                pixel.x = 0; pixel.y += 1
                if pixel.y == outHeight { pixel.y = 0; pixel.image += 1 }
            }
        }
        for r in rows..<PackedGEMM.mr { windows[r] = windows[rows - 1] }
        return interior ? windows : nil
    }

    /// Writes the `kc` columns from `k0` of rows `row0..<row0+rows` into `dst` (row stride `rowStride`).
    /// Within one kernel row the in-bounds pixels are adjacent in NHWC, so each piece is one copy.
    func gather(row0: Int, rows: Int, k0: Int, kc: Int, into dst: UnsafeMutablePointer<Float>, rowStride: Int) {
        let cin = channels, rowLength = kernelW * cin
        let kEnd = k0 + kc
        for r in 0..<rows {
            let (img, oy, ox) = pixel(ofRow: row0 + r)
            let x0 = ox * stride - padLeft, yBase = oy * stride - padTop
            let xLo = max(0, -x0), xHi = min(kernelW, width - x0)   // in-bounds kernel columns
            let image = input + img * height * width * cin
            var out = dst + r * rowStride
            var kpos = k0
            while kpos < kEnd {
                let ky = kpos / rowLength, within = kpos - ky * rowLength
                let kx = within / cin
                let iy = yBase + ky
                let length: Int
                if iy < 0 || iy >= height || kx < xLo || kx >= xHi {
                    // Padding: up to the end of this kernel row (row out of bounds) or of this pixel.
                    let span = (iy < 0 || iy >= height) ? rowLength - within
                        : (kx < xLo ? min(xLo, kernelW) * cin - within : rowLength - within)
                    length = min(span, kEnd - kpos)
                    out.update(repeating: 0, count: length)
                } else {
                    length = min(xHi * cin - within, kEnd - kpos)
                    out.update(from: image + (iy * width + x0) * cin + within, count: length)
                }
                out += length
                kpos += length
            }
        }
    }
}

/// How a run of `rows` rows splits into micro-tiles: `sixes` six-row tiles, then `fives` five-row
/// tiles, then one tile of the rows left (none, or 1-4 rows when no split fits).
///
/// A five-row tile (10 multiply-adds per step, `Tile.fiveRowProduct`) runs at the rate of a six-row
/// one, while a tile of fewer rows takes a six-row tile's time: 49 rows (a 7x7 map) as 4 x 6 + 5 x 5
/// cost 49 row-steps instead of 54 as 8 x 6 + 1. Every row's sums are the same either way.
package struct RowTiling {
    let rows: Int, sixes: Int, fives: Int

    /// Process-wide switch: when false, runs split into six-row tiles and one short tile only (the
    /// same sums; `bottleneck-microbench network-ab` compares the two). Read once per `RowTiling`.
    package static let usesFiveRowTiles = Atomic<Bool>(true)

    init(rows: Int) {
        self.rows = rows
        // 5 * fives ≡ rows (mod 6): five is its own inverse mod 6.
        let fives = 5 * (rows % 6) % 6
        if fives > 0 && 5 * fives <= rows && RowTiling.usesFiveRowTiles.load(ordering: .relaxed) {
            (self.sixes, self.fives) = ((rows - 5 * fives) / 6, fives)
        } else {
            (self.sixes, self.fives) = (rows / 6, 0)
        }
    }

    /// Rows of the tile starting at row `r` of the run (`r` a tile boundary), at most `rows - r`.
    @inline(__always)
    func height(at r: Int) -> Int {
        r < 6 * sixes ? 6 : r < 6 * sixes + 5 * fives ? 5 : min(6, rows - r)
    }

    /// Number of tiles.
    var count: Int {
        sixes + fives + (rows > 6 * sixes + 5 * fives ? 1 : 0)
    }
}

/// The first elements of a micro-tile's six `A` rows; a tile of fewer rows repeats its last one (no
/// out-of-bounds reads; the extra rows are not stored).
struct TileWindows {
    var a0, a1, a2, a3, a4, a5: UnsafePointer<Float>
    /// `rows` (1...6) rows `rowStride` apart from `a`.
    init(_ a: UnsafePointer<Float>, rowStride: Int, rows: Int) {
        let last = rows - 1
        (a0, a1, a2) = (a, a + min(1, last) * rowStride, a + min(2, last) * rowStride)
        (a3, a4, a5) = (a + min(3, last) * rowStride, a + min(4, last) * rowStride, a + min(5, last) * rowStride)
    }
    subscript(row: Int) -> UnsafePointer<Float> {
        get { switch row { case 0: a0; case 1: a1; case 2: a2; case 3: a3; case 4: a4; default: a5 } }
        set { switch row { case 0: a0 = newValue; case 1: a1 = newValue; case 2: a2 = newValue
                           case 3: a3 = newValue; case 4: a4 = newValue; default: a5 = newValue } }
    }
}

/// A `k` slice of one weight panel: contiguous, `lines` 64-byte lines from `start`.
struct PanelSlice {
    let start: UnsafePointer<Float>
    let lines: Int

    /// Prefetches share `index` of `count` equal shares of the lines into L2.
    @inline(__always)
    func prefetch(share index: Int, of count: Int) {
        for line in (index * lines / count)..<((index + 1) * lines / count) {
            bottleneck_prefetch_l2(start + line * 16)
        }
    }
}

/// Rows `0..<rows` (any count) of one 16- or 8-wide weight panel, six at a time in one call.
///
/// One call per strip rather than per six rows: a `Tile` built and called for every six rows is a
/// large share of the work on K = 64 layers, which do little work per tile.
struct TileStrip {
    let a: UnsafePointer<Float>
    let lda: Int
    let rows: Int
    let b: UnsafePointer<Float>
    let kc: Int
    let c: UnsafeMutablePointer<Float>
    let ldc: Int
    let bias: UnsafePointer<Float>?
    let residual: UnsafePointer<Float>?
    let residualStride: Int
    /// First `k` slice: start from bias + residual; else continue from the partial sums in `c`.
    let first: Bool
    let activation: Activation
    /// Micro-tiles ahead whose output and residual lines are prefetched (0: none).
    let prefetchTiles: Int
    /// The weights the next strip reads, prefetched into L2 (nil: none): one line per reduction step of
    /// the first micro-tile when the slices are equally long and 16 wide, else a share per micro-tile.
    var nextPanel: PanelSlice? = nil

    @inline(__always)
    func run(width: Int) {
        if width == 16 { run(SIMD16<Float>.self) } else { run(SIMD8<Float>.self) }
    }

    @inline(never)
    private func run<V: KernelVector>(_: V.Type) {
        var r = 0, t = 0
        let ahead = prefetchTiles * PackedGEMM.mr
        let tiling = RowTiling(rows: rows), tiles = tiling.count
        // The first tile prefetches the next strip's panel line by line (one line per step, when it is
        // as long as this strip's); otherwise each tile prefetches its share at its start.
        let spread = nextPanel.map { $0.lines == kc && V.scalarCount == 16 && tiling.height(at: 0) == 6 } ?? false
        while r < rows {
            if !spread { nextPanel?.prefetch(share: t, of: tiles) }
            if ahead > 0 && r + ahead < rows {
                let p = r + ahead
                for i in 0..<min(PackedGEMM.mr, rows - p) {
                    bottleneck_prefetch_write(c + (p + i) * ldc)
                    if first, let residual { bottleneck_prefetch_read(residual + (p + i) * residualStride) }
                }
            }
            let height = tiling.height(at: r)
            let tile = Tile(a: a + r * lda, lda: lda, rows: height, b: b, kc: kc, c: c + r * ldc, ldc: ldc,
                            initial: first ? .fresh(bias: bias, residual: residual.map { $0 + r * residualStride }, residualStride: residualStride)
                                           : .accumulate,
                            activation: activation)
            if height == 5 {
                tile.fiveRowProduct(V.self)
            } else if spread && t == 0, let nextPanel {
                tile.contiguousProduct(V.self, prefetch: NextPanelLines(start: nextPanel.start))
            } else {
                tile.contiguousProduct(V.self)
            }
            r += height
            t += 1
        }
    }
}

/// How many accumulator rows a micro-kernel updates: six, or five (`Tile.fiveRowProduct`).
/// Generic, so each kernel is compiled for its row count with no test in the loop.
protocol TileHeight {
    static var hasSixthRow: Bool { get }
}
enum SixRows: TileHeight { static var hasSixthRow: Bool { true } }
enum FiveRows: TileHeight { static var hasSixthRow: Bool { false } }

/// What a micro-kernel prefetches at each reduction step. Generic (not a closure), so the kernel
/// without prefetches compiles to the same loop as before.
protocol StepPrefetch {
    func at(_ kk: Int)
}

/// No prefetch.
struct NoStepPrefetch: StepPrefetch {
    @inline(__always) func at(_ kk: Int) {}
}

/// Step `kk` prefetches line `kk` of the next 16-wide weight panel into L2: one line per step, the
/// rate the kernel reads the current panel, so the next panel arrives as the current one ends.
struct NextPanelLines: StepPrefetch {
    let start: UnsafePointer<Float>
    @inline(__always) func at(_ kk: Int) { bottleneck_prefetch_l2(start + kk * 16) }
}

/// Which element of a tile's rows reduction step `kk` reads. Generic parameters (not closures), so
/// each kernel is specialised with the mapping inlined.
protocol ReductionSteps {
    subscript(_ kk: Int) -> Int { get }
}

/// Rows hold the reduction contiguously: step `kk` reads element `kk`.
struct ContiguousSteps: ReductionSteps {
    @inline(__always) subscript(_ kk: Int) -> Int { kk }
}

/// Rows are image windows: step `kk` reads element `offsets[kk]`.
struct WindowSteps: ReductionSteps {
    let offsets: UnsafePointer<Int32>
    @inline(__always) subscript(_ kk: Int) -> Int { Int(offsets[kk]) }
}

/// One micro-tile: up to 6 rows of `A` against one weight panel over a `kc` slice of `k`.
struct Tile {
    enum Initial {
        /// First `k` slice: start from bias + residual (or zero).
        case fresh(bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?, residualStride: Int)
        /// Later slices: continue from what `c` holds.
        case accumulate
    }
    /// Row `r`'s reduction step `kk` reads `windows[r][kk]`, or `windows[r][offsets[kk]]` with a
    /// table of `kc` element offsets (convolution windows read in place).
    let windows: TileWindows
    let offsets: UnsafePointer<Int32>?
    /// Rows stored (1...6).
    let rows: Int
    let b: UnsafePointer<Float>
    let kc: Int
    let c: UnsafeMutablePointer<Float>
    let ldc: Int
    let initial: Initial
    let activation: Activation

    /// Rows `lda` apart, read contiguously.
    init(a: UnsafePointer<Float>, lda: Int, rows: Int, b: UnsafePointer<Float>, kc: Int,
         c: UnsafeMutablePointer<Float>, ldc: Int, initial: Initial, activation: Activation) {
        self.init(windows: TileWindows(a, rowStride: lda, rows: rows), offsets: nil, rows: rows, b: b, kc: kc,
                  c: c, ldc: ldc, initial: initial, activation: activation)
    }

    init(windows: TileWindows, offsets: UnsafePointer<Int32>?, rows: Int, b: UnsafePointer<Float>, kc: Int,
         c: UnsafeMutablePointer<Float>, ldc: Int, initial: Initial, activation: Activation) {
        self.windows = windows; self.offsets = offsets
        self.rows = rows; self.b = b; self.kc = kc; self.c = c; self.ldc = ldc
        self.initial = initial; self.activation = activation
    }

    /// Runs the tile on a panel `width` (16 or 8) columns wide.
    @inline(__always)
    func run(width: Int) {
        if width == 16 { run(SIMD16<Float>.self) } else { run(SIMD8<Float>.self) }
    }

    /// `contiguousProduct` on a panel `width` (16 or 8) columns wide.
    @inline(__always)
    func contiguousProduct(width: Int) {
        if width == 16 { contiguousProduct(SIMD16<Float>.self) } else { contiguousProduct(SIMD8<Float>.self) }
    }

    /// `contiguousProduct` for a tile of exactly five rows, with five accumulator rows: 10 multiply-adds
    /// per step at width 16, where the six-row kernel would spend 12 on five rows. Out of line, so the
    /// callers' six-row kernels keep their inlining (see the note above `runContiguous`).
    @inline(never)
    func fiveRowProduct<V: KernelVector>(_: V.Type) {
        var acc = initialAccumulators(V.self)
        Tile.accumulate(&acc, rows: (windows.a0, windows.a1, windows.a2, windows.a3, windows.a4, windows.a5), b: b, kc: kc,
                        index: ContiguousSteps(), height: FiveRows.self)
        store(acc.0, acc.1, acc.2, acc.3, acc.4, acc.5)
    }

    /// `V` is the panel width as a SIMD type (16 or 8 floats).
    @inline(__always)
    func run<V: KernelVector>(_: V.Type) {
        if let offsets { runReadingWindows(V.self, offsets: offsets) } else { runContiguous(V.self) }
    }

    // Two reduction functions on purpose, each kept small and sharing `accumulate` specialised per
    // index mapping: in one larger function (a loop choosing the mapping at run time, or both loops
    // side by side) the optimiser stops inlining the 64-byte loads and stores, and every tile pays up
    // to a dozen calls with the accumulators spilled around each.

    @inline(never)
    private func runContiguous<V: KernelVector>(_: V.Type) { contiguousProduct(V.self) }

    /// The tile with rows read contiguously from `windows`.
    @inline(__always)
    fileprivate func contiguousProduct<V: KernelVector, P: StepPrefetch>(_: V.Type, prefetch: P = NoStepPrefetch()) {
        var acc = initialAccumulators(V.self)
        Tile.accumulate(&acc, rows: (windows.a0, windows.a1, windows.a2, windows.a3, windows.a4, windows.a5), b: b, kc: kc,
                        index: ContiguousSteps(), prefetch: prefetch)
        store(acc.0, acc.1, acc.2, acc.3, acc.4, acc.5)
    }

    /// A whole six-row (or with `FiveRows`, five-row) tile over `kc` steps: `out` row `i` = `act(bias + residual row i + Σ_kk rows[i][kk] * b[kk])`,
    /// or with `accumulating`, `act(out row i + Σ ...)` (a later `k` slice; `bias` and `residual` unused).
    /// Without the per-row and per-activation branches of a `Tile` (the caller passes a constant
    /// `act`); the same sums in the same order.
    @_transparent
    static func full<V: KernelVector, P: StepPrefetch, H: TileHeight>(_: V.Type, rows w: TileWindows, b: UnsafePointer<Float>, kc: Int,
                                      out: UnsafeMutablePointer<Float>, ldc: Int, accumulating: Bool, bias: V,
                                      residual: UnsafePointer<Float>?, residualStride rs: Int, prefetch: P = NoStepPrefetch(),
                                      height: H.Type = SixRows.self, _ act: Activation) {
        var acc = (bias, bias, bias, bias, bias, bias)
        if accumulating {
            acc.0 = load(out, V.self); acc.1 = load(out + ldc, V.self); acc.2 = load(out + 2 * ldc, V.self)
            acc.3 = load(out + 3 * ldc, V.self); acc.4 = load(out + 4 * ldc, V.self)
            if H.hasSixthRow { acc.5 = load(out + 5 * ldc, V.self) }
        } else if let residual {
            acc.0 += load(residual, V.self); acc.1 += load(residual + rs, V.self); acc.2 += load(residual + 2 * rs, V.self)
            acc.3 += load(residual + 3 * rs, V.self); acc.4 += load(residual + 4 * rs, V.self)
            if H.hasSixthRow { acc.5 += load(residual + 5 * rs, V.self) }
        }
        accumulate(&acc, rows: (w.a0, w.a1, w.a2, w.a3, w.a4, w.a5), b: b, kc: kc, index: ContiguousSteps(), prefetch: prefetch,
                   height: H.self)
        store(acc.0.activated(act), out); store(acc.1.activated(act), out + ldc)
        store(acc.2.activated(act), out + 2 * ldc); store(acc.3.activated(act), out + 3 * ldc)
        store(acc.4.activated(act), out + 4 * ldc)
        if H.hasSixthRow { store(acc.5.activated(act), out + 5 * ldc) }
    }

    /// `acc.i += Σ_kk rows.i[index(kk)] * b[kk]` over `kc` steps of a panel `V.scalarCount` wide: the
    /// micro-kernel (6 broadcasts and one panel row per 12 fused multiply-adds at width 16). `index`
    /// maps a reduction step to the element the rows hold for it (`ContiguousSteps` or `WindowSteps`);
    /// `prefetch` runs at every step; with `FiveRows` the sixth accumulator is left as it is.
    @inline(__always)
    static func accumulate<V: KernelVector, I: ReductionSteps, P: StepPrefetch, H: TileHeight>(_ acc: inout (V, V, V, V, V, V),
                                                               rows: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>,
                                                                      UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>),
                                                               b: UnsafePointer<Float>, kc: Int, index: I,
                                                               prefetch: P = NoStepPrefetch(), height: H.Type = SixRows.self) {
        var (c0, c1, c2, c3, c4, c5) = acc
        let (a0, a1, a2, a3, a4, a5) = rows
        var bp = b
        for kk in 0..<kc {
            prefetch.at(kk)
            let o = index[kk]
            let bv = V.load(UnsafeRawPointer(bp))
            c0 = c0.addingProduct(V(repeating: a0[o]), bv)
            c1 = c1.addingProduct(V(repeating: a1[o]), bv)
            c2 = c2.addingProduct(V(repeating: a2[o]), bv)
            c3 = c3.addingProduct(V(repeating: a3[o]), bv)
            c4 = c4.addingProduct(V(repeating: a4[o]), bv)
            if H.hasSixthRow { c5 = c5.addingProduct(V(repeating: a5[o]), bv) }
            bp += V.scalarCount
        }
        acc = (c0, c1, c2, c3, c4, c5)
    }

    @inline(__always)
    static func load<V: KernelVector>(_ p: UnsafePointer<Float>, _: V.Type) -> V {
        V.load(UnsafeRawPointer(p))
    }

    @inline(__always)
    static func store<V: KernelVector>(_ v: V, _ p: UnsafeMutablePointer<Float>) {
        V.store(v, to: UnsafeMutableRawPointer(p))
    }

    @inline(never)
    private func runReadingWindows<V: KernelVector>(_: V.Type, offsets: UnsafePointer<Int32>) {
        var acc = initialAccumulators(V.self)
        Tile.accumulate(&acc, rows: (windows.a0, windows.a1, windows.a2, windows.a3, windows.a4, windows.a5), b: b, kc: kc,
                        index: WindowSteps(offsets: offsets))
        store(acc.0, acc.1, acc.2, acc.3, acc.4, acc.5)
    }

    /// Bias + residual (first `k` slice) or the partial sums in `c` (later slices), per row.
    @inline(__always)
    private func initialAccumulators<V: KernelVector>(_: V.Type) -> (V, V, V, V, V, V) {
        var c0 = V(), c1 = V(), c2 = V(), c3 = V(), c4 = V(), c5 = V()
        switch initial {
        case let .fresh(bias, residual, rs):
            if let bias {
                let v = V.load(UnsafeRawPointer(bias))
                c0 = v; c1 = v; c2 = v; c3 = v; c4 = v; c5 = v
            }
            if let residual {
                c0 += load(residual, 0, rs, V.self)
                if rows > 1 { c1 += load(residual, 1, rs, V.self) }
                if rows > 2 { c2 += load(residual, 2, rs, V.self) }
                if rows > 3 { c3 += load(residual, 3, rs, V.self) }
                if rows > 4 { c4 += load(residual, 4, rs, V.self) }
                if rows > 5 { c5 += load(residual, 5, rs, V.self) }
            }
        case .accumulate:
            let partial = UnsafePointer(c)
            c0 = load(partial, 0, ldc, V.self)
            if rows > 1 { c1 = load(partial, 1, ldc, V.self) }
            if rows > 2 { c2 = load(partial, 2, ldc, V.self) }
            if rows > 3 { c3 = load(partial, 3, ldc, V.self) }
            if rows > 4 { c4 = load(partial, 4, ldc, V.self) }
            if rows > 5 { c5 = load(partial, 5, ldc, V.self) }
        }
        return (c0, c1, c2, c3, c4, c5)
    }

    /// Stores the first `rows` accumulators, activated.
    @inline(__always)
    private func store<V: KernelVector>(_ c0: V, _ c1: V, _ c2: V, _ c3: V, _ c4: V, _ c5: V) {
        store(c0, 0); if rows > 1 { store(c1, 1) }; if rows > 2 { store(c2, 2) }
        if rows > 3 { store(c3, 3) }; if rows > 4 { store(c4, 4) }; if rows > 5 { store(c5, 5) }
    }

    @inline(__always)
    private func load<V: KernelVector>(_ p: UnsafePointer<Float>, _ row: Int, _ stride: Int, _: V.Type) -> V {
        Tile.load(p + row * stride, V.self)
    }

    @inline(__always)
    private func store<V: KernelVector>(_ v: V, _ row: Int) {
        Tile.store(v.activated(activation), c + row * ldc)
    }
}
