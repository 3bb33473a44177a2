import BottleneckTensor

extension Network {
    /// Consecutive stages that run on the same number of images at a time (`slice`).
    public struct Segment: Equatable, Sendable {
        /// Stage indices.
        public let stages: Range<Int>
        /// Images per pass through these stages.
        public let slice: Int

        /// Stages `stages`, `slice` images at a time.
        public init(stages: Range<Int>, slice: Int) { self.stages = stages; self.slice = slice }
    }
}

/// Scheduling a batch into slices: decides whether a batch runs image-parallel and how many images
/// each pass through the stages takes, from the activation sizes the architecture gives and the
/// budgets in `EngineOptions`. Pure: it computes plans and runs nothing (`NetworkExecutor` runs them).
///
/// Images are independent, so no plan changes any output.
struct SliceSchedule {
    let architecture: Architecture
    /// Index of the last stage that runs.
    let stageIndex: Int
    let options: EngineOptions
    /// Whether the network supports image-parallel batches at all (`Network.splitsBatchesIntoConcurrentSlices`).
    let allowsImageParallel: Bool

    /// Whether a batch of `batch` runs image-parallel: at least two images per kernel thread for a
    /// network that supports it.
    func runsImageParallel(batch: Int) -> Bool {
        allowsImageParallel && options.workers > 1 && batch >= 2 * options.workers
    }

    /// Images per slice of an image-parallel batch: as many as keep the largest activation the
    /// network materialises (`Architecture.largestActivations`, fused MBConv blocks' expanded tensors
    /// left out when blocks fuse) under `options.sliceBudget`, at least 1. (Counting EfficientNet-Lite0's
    /// expanded tensors too would cut its slices to 2-3 images, each pass over the weights serving
    /// fewer images.)
    func microBatch(height: Int, width: Int, batch: Int) -> Int {
        let largest = architecture.largestActivation(height: height, width: width, throughStage: stageIndex,
                                                     fusedBlocks: options.fusedBlocks)
        return max(1, min(batch, options.sliceBudget / max(1, largest)))
    }

    /// Image ranges of an image-parallel batch, in order: `microBatch`-sized slices evened out to a
    /// multiple of the thread count, so that no thread is left with the last slice alone.
    func imageParallelSlices(height: Int, width: Int, batch: Int) -> [Range<Int>] {
        let threads = options.workers, slice = microBatch(height: height, width: width, batch: batch)
        let count = min(batch, ((batch + slice - 1) / slice + threads - 1) / threads * threads)
        return (0..<count).map { piece in (piece * batch / count)..<((piece + 1) * batch / count) }
    }

    /// How a layer-parallel batch is sliced. Each stage's slice is as many images as keep its
    /// largest materialised activation (its input included; see `microBatch`) within
    /// `options.layerParallelSliceBudget` (`options.sliceBudget` when kernels run single-threaded here:
    /// one thread alone wants its activations in cache), lowered to the smallest slice of any later
    /// stage, so that a segment's slice is made of whole slices of the segments before it; equal
    /// neighbours form one segment.
    ///
    /// Why not one slice for all: the early stages' large maps want few images at a time (their
    /// activations then stay in the last-level cache), but the late stages' small maps with large
    /// weights want many, so that each pass over weights that no cache holds serves more GEMM rows
    /// (VGG-16's classifier reads 400 MB of weights per pass). A later segment's input is staged per
    /// slice, in buffers beside the activation ones (`NetworkExecutor.activationSlots`).
    func segments(height: Int, width: Int, batch: Int) -> [Network.Segment] {
        let budget = options.workers > 1 ? options.layerParallelSliceBudget : options.sliceBudget
        let largestPerStage = architecture.largestActivations(height: height, width: width, fusedBlocks: options.fusedBlocks)
        var slices = largestPerStage[0...stageIndex].map { largest in
            max(1, min(batch, budget / max(1, largest)))
        }
        for i in stride(from: slices.count - 2, through: 0, by: -1) { slices[i] = min(slices[i], slices[i + 1]) }
        var result: [Network.Segment] = []
        var start = 0
        for i in 1...slices.count where i == slices.count || slices[i] != slices[start] {
            result.append(Network.Segment(stages: start..<i, slice: slices[start]))
            start = i
        }
        return result
    }

    /// `batch` images cut into equal slices of at most `maximum` (32 images at 20: two of 16, not 20 + 12).
    static func evenSlices(batch: Int, maximum: Int) -> [Range<Int>] {
        let pieces = (batch + maximum - 1) / maximum
        let slice = (batch + pieces - 1) / pieces
        return stride(from: 0, to: batch, by: slice).map { $0..<min(batch, $0 + slice) }
    }
}
