import BottleneckImage
import BottleneckTensor
import Foundation

/// A runnable network: an architecture truncated at a chosen stage, with weights loaded, batch norms
/// folded into the convolutions and the kernels' weight layouts prepared.
///
/// The public face of three parts: `LayerCompiler` turns the specification into layers,
/// `SliceSchedule` plans how a batch is sliced, `NetworkExecutor` runs the plan in its buffers.
///
/// Activations run in NHWC inside preallocated buffers that are reused across calls (they only grow
/// when a larger batch or image arrives), so steady-state inference allocates nothing. Inputs and
/// outputs use PyTorch's layout. Not thread-safe (use one `Network` per concurrent caller), except as
/// `splitsBatchesIntoConcurrentSlices` describes.
///
/// Threads: a batch of at least two images per kernel thread runs image-parallel when the weights
/// fit in cache (`concurrentImagesMaximumWeightBytes`): each thread takes slices of the batch through
/// every layer with single-threaded kernels, in its own activation buffers, so threads never wait for
/// each other between layers; slices are claimed as threads come free and shrink to single images at
/// the end of the batch. Otherwise each layer's work is split over the threads, which spin between
/// layers for the whole pass (`EngineOptions.passSpinSeconds`).
public final class Network: @unchecked Sendable {
    /// The (full) architecture this network was built from.
    public let architecture: Architecture
    /// Index of the last stage that runs.
    public let stageIndex: Int
    /// Reduction applied to a spatial output (`.none` leaves the map; ignored for vector outputs).
    public let pooling: Pooling
    /// Name of the input preprocessing preset (`imagenet` or `lite`).
    public var presetName: String { architecture.presetName }
    /// The input preprocessing the weights were trained with (`.imagenet` for ResNet/VGG, `.lite` for
    /// EfficientNet-Lite).
    public var preset: PreprocessPreset { PreprocessPreset.named(architecture.presetName) ?? .imagenet }
    /// Name of the last stage that runs.
    public var stageName: String { architecture.stages[stageIndex].name }

    /// When true, `forward` adds each stage's wall time to `stageSeconds` (for `bench --profile`).
    public var recordStageTimes: Bool {
        get { executor.isProfiling }
        set { executor.isProfiling = newValue }
    }
    /// The engine settings every layer of this network runs with (threads, fast paths, budgets). Fixed
    /// at init: some (Winograd) decide how weights are stored.
    public let options: EngineOptions
    /// Accumulated wall seconds per stage (index = stage index) while `recordStageTimes` is on.
    public var stageSeconds: [Double] { executor.profile.stageSeconds }
    /// Accumulated wall seconds per kind of layer while `recordStageTimes` is on: convolutions,
    /// depthwise convolutions, fused MBConv blocks and linear layers of the same shape share a row
    /// (pooling is not listed); rows in the
    /// order their layers first ran. For finding which layers fall short of the GEMM's speed.
    public var layerTimes: [LayerTiming] { executor.profile.layerTimes }

    /// Runs the compiled stages and owns their activation buffers.
    private let executor: NetworkExecutor
    /// Plans how batches are sliced.
    private let schedule: SliceSchedule
    /// Whether a stage that runs has fully connected layers (their OpenBLAS GEMMs want the whole
    /// batch at once and their own threads, so such networks do not run image-parallel).
    private let hasLinearLayers: Bool
    /// Bytes of convolution weights in the stages that run, as the kernels store them.
    public let convolutionWeightBytes: Int

    /// Largest `convolutionWeightBytes` for which batches run image-parallel. Threads working on
    /// different layers each stream their own layer's weights: free while all weights stay in the
    /// last-level cache (32 MB on the reference machine), a loss once they do not. EfficientNet-Lite0
    /// holds 13 MB, ResNet-50 over 130 MB with its Winograd weights (docs/ENGINE.md, "Threading and
    /// slices").
    public static let concurrentImagesMaximumWeightBytes = 24 << 20

    /// Loads `weights` for the stages up to `cut`.
    /// - Throws: `ModelLoadingError` for an invalid cut/layer, a missing key, a shape mismatch, or
    ///   keys in `weights` that the architecture does not have (`num_batches_tracked` is ignored).
    ///   Errors name `sourceName`.
    /// - Complexity: reads each needed tensor once; the raw tensor is released as soon as it has been
    ///   repacked, so peak memory is the packed network plus the largest single tensor.
    public init(architecture: Architecture, weights: WeightSource, cut: StageSelection = .cut(0),
                pool: Pooling = .none, sourceName: String = "weights", options: EngineOptions = .default) throws {
        self.architecture = architecture
        self.options = options
        stageIndex = try architecture.stageIndex(for: cut)
        pooling = pool
        let known = Set(architecture.parameters.map(\.name))
        let unexpected = weights.keys.filter { !known.contains($0) && !$0.hasSuffix("num_batches_tracked") }.sorted()
        if !unexpected.isEmpty { throw ModelLoadingError.unexpectedKeys(unexpected, source: sourceName) }
        let compiled = try LayerCompiler(source: weights, sourceName: sourceName, options: options)
            .compileStages(of: architecture, through: stageIndex)
        hasLinearLayers = compiled.joined().contains { $0.containsLinear }
        convolutionWeightBytes = compiled.joined().reduce(0) { $0 + $1.convolutionWeightBytes }
        executor = NetworkExecutor(stages: compiled, architecture: architecture, pooling: pool, options: options)
        schedule = SliceSchedule(architecture: architecture, stageIndex: stageIndex, options: options,
                                 allowsImageParallel: options.concurrentImages && !hasLinearLayers
                                     && convolutionWeightBytes <= Network.concurrentImagesMaximumWeightBytes)
    }

    /// Convenience: the model called `name` with deterministic synthetic weights.
    public convenience init(syntheticModel name: String, cut: StageSelection = .cut(0), pool: Pooling = .none,
                            options: EngineOptions = .default) throws {
        let arch = try ModelZoo.architecture(name)
        try self.init(architecture: arch, weights: SyntheticWeights(architecture: arch), cut: cut, pool: pool,
                      sourceName: "synthetic weights", options: options)
    }

    /// Output shape per image for a `height x width` input, after pooling.
    public func outputShape(height: Int, width: Int) -> ActivationShape {
        executor.outputShape(height: height, width: width)
    }

    /// Output shape per image at the architecture's native resolution.
    public var outputShape: ActivationShape { outputShape(height: architecture.inputSize, width: architecture.inputSize) }

    /// FLOPs per image (2 per multiply-accumulate) for a `height x width` input.
    public func flops(height: Int, width: Int) -> Int {
        architecture.flops(height: height, width: width, throughStage: stageIndex)
    }

    /// Runs the network.
    /// - Parameters:
    ///   - input: `[batch][3][height][width]` float32, already normalised (PyTorch NCHW).
    ///   - output: room for `batch * outputShape(height:width:).count` floats, written in PyTorch's
    ///     layout (`[N][D]` or `[N][C][H][W]`).
    ///
    /// Large batches run in slices small enough that a layer's activations stay in the last-level
    /// cache (`SliceSchedule`); images are independent, so slicing does not change results.
    public func forward(_ input: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                        into output: UnsafeMutablePointer<Float>) {
        let executor = executor
        if runsImageParallel(batch: batch) {
            // Units claimed as threads come free, shrinking towards the end of the batch
            // (`SliceSchedule.guidedUnit`); each thread runs its units in its own arena.
            let slice = schedule.microBatch(height: height, width: width, batch: batch)
            let threads = options.workers, shares = options.imageUnitShares
            let inCount = 3 * height * width, outCount = outputShape(height: height, width: width).count
            TensorThreads.concurrentImages(count: batch, threads: threads, unit: { remaining in
                SliceSchedule.guidedUnit(remaining: remaining, slice: slice, threads: threads, shares: shares)
            }) { images in
                executor.withArena { arena in
                    executor.run(input + images.lowerBound * inCount, batch: images.count, height: height, width: width,
                                 stages: 0..<executor.stages.count, output: output + images.lowerBound * outCount,
                                 emits: true, arena: arena, collect: nil)
                }
            }
            return
        }
        TensorThreads.duringPass(threads: options.workers, spinSeconds: options.passSpinSeconds) {
            executor.withArena { arena in
                executor.runSegments(segments(height: height, width: width, batch: batch)[...], input: input, batch: batch,
                                     height: height, width: width, output: output, arena: arena)
            }
        }
    }

    /// How `forward` slices a layer-parallel batch (see `SliceSchedule.segments`).
    public func segments(height: Int, width: Int, batch: Int) -> [Segment] {
        schedule.segments(height: height, width: width, batch: batch)
    }

    /// Whether `forward` runs large batches image-parallel (see the type's discussion): enabled
    /// (`options.concurrentImages`), no stage times being recorded, no Linear layers, and convolution
    /// weights within `concurrentImagesMaximumWeightBytes`.
    ///
    /// When true, `forward` may also be called from several threads at once provided each call runs
    /// inside `TensorThreads.withSingleThreadedKernels`: every call takes its own activation buffers
    /// and the layers are read-only, and the outputs are bitwise those of one call on the whole batch.
    public var splitsBatchesIntoConcurrentSlices: Bool { schedule.allowsImageParallel && !recordStageTimes }

    /// Images per slice of an image-parallel batch (see `SliceSchedule.microBatch`).
    public func microBatch(height: Int, width: Int, batch: Int) -> Int {
        schedule.microBatch(height: height, width: width, batch: batch)
    }

    /// The most images per slice of the first stages for a batch of `batch`: `microBatch` when the
    /// batch runs image-parallel, else the first segment's slice (layer-parallel runs may even the
    /// slices out below it: 32 images at 20 run as 2 x 16).
    public func firstSlice(height: Int, width: Int, batch: Int) -> Int {
        runsImageParallel(batch: batch) ? microBatch(height: height, width: width, batch: batch)
            : segments(height: height, width: width, batch: batch)[0].slice
    }

    /// Whether `forward` runs a batch of `batch` image-parallel here: at least two images per kernel
    /// thread for a network that supports it, while not profiling.
    func runsImageParallel(batch: Int) -> Bool {
        !recordStageTimes && schedule.runsImageParallel(batch: batch)
    }

    /// Runs the network and returns the output (see `forward(_:batch:height:width:into:)`).
    public func forward(_ input: [Float], batch: Int, height: Int, width: Int) -> [Float] {
        precondition(input.count == batch * 3 * height * width, "Network.forward: \(input.count) floats for \(batch)x3x\(height)x\(width)")
        var out = [Float](repeating: 0, count: batch * outputShape(height: height, width: width).count)
        input.withUnsafeBufferPointer { i in
            out.withUnsafeMutableBufferPointer { forward(i.baseAddress!, batch: batch, height: height, width: width, into: $0.baseAddress!) }
        }
        return out
    }

    /// Runs the network and returns every stage's output up to the selected one (unpooled, PyTorch
    /// layout), for inspection and parity tests.
    public func stageOutputs(_ input: [Float], batch: Int, height: Int, width: Int) -> [(name: String, values: [Float])] {
        var result: [(String, [Float])] = []
        input.withUnsafeBufferPointer { i in
            executor.withArena { arena in
                executor.run(i.baseAddress!, batch: batch, height: height, width: width, stages: 0..<executor.stages.count,
                             output: nil, emits: true, arena: arena) { index, values in
                    result.append((self.architecture.stages[index].name, values))
                }
            }
        }
        return result
    }

    /// Frees the activation buffers (they are reallocated by the next call).
    public func releaseBuffers() { executor.releaseBuffers() }
}
