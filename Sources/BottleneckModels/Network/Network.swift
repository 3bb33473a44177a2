import BottleneckImage
import BottleneckTensor
import Foundation

/// A runnable network: an architecture truncated at a chosen stage, with weights loaded, batch norms
/// folded into the convolutions and the kernels' weight layouts prepared.
///
/// Activations run in NHWC inside preallocated buffers that are reused across calls (they only grow
/// when a larger batch or image arrives), so steady-state inference allocates nothing. Inputs and
/// outputs use PyTorch's layout. Not thread-safe (use one `Network` per concurrent caller), except as
/// `splitsBatchesIntoConcurrentSlices` describes.
///
/// Threads: a batch of at least two images per kernel thread runs image-parallel when the weights
/// fit in cache (`concurrentImagesMaximumWeightBytes`): each thread takes whole slices of the batch
/// through every layer with single-threaded kernels, in its own activation buffers, so threads
/// never wait for each other between layers. Otherwise each layer's work is split over the threads.
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
    public var recordStageTimes = false
    /// The engine settings every layer of this network runs with (threads, fast paths, budgets). Fixed
    /// at init: some (Winograd) decide how weights are stored.
    public let options: EngineOptions
    /// Accumulated wall seconds per stage (index = stage index) while `recordStageTimes` is on.
    public private(set) var stageSeconds: [Double] = []
    /// Accumulated wall seconds per kind of layer while `recordStageTimes` is on: convolutions,
    /// depthwise convolutions, fused MBConv blocks and linear layers of the same shape share a row
    /// (pooling is not listed); rows in the
    /// order their layers first ran. For finding which layers fall short of the GEMM's speed.
    public private(set) var layerTimes: [LayerTiming] = []
    private var layerTimeRows: [String: Int] = [:]

    private let stages: [[CompiledLayer]]
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
    /// Activation buffer sets, one per slice in flight; a set holds the few tensors alive at once.
    private var arenas: [[Workspace]] = []
    private let arenaLock = NSLock()

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
        let loader = Loader(source: weights, sourceName: sourceName, options: options)
        var compiled: [[CompiledLayer]] = []
        var shape = ActivationShape.map(channels: 3, height: architecture.inputSize, width: architecture.inputSize)
        for stage in architecture.stages[0...stageIndex] {
            var layers: [CompiledLayer] = []
            for spec in stage.layers {
                layers.append(try loader.compile(spec, input: shape, fusedActivation: nil))
                shape = Architecture.infer(spec, shape).shape
            }
            compiled.append(Network.fusingInvertedResiduals(layers))
        }
        stages = compiled
        hasLinearLayers = compiled.joined().contains { $0.containsLinear }
        convolutionWeightBytes = compiled.joined().reduce(0) { $0 + $1.convolutionWeightBytes }
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
        let raw = architecture.stageShapes(height: height, width: width)[stageIndex]
        if case let .map(c, _, _) = raw, pooling != .none { return .vector(c) }
        return raw
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
    public func forward(_ input: UnsafePointer<Float>, batch: Int, height: Int, width: Int,
                        into output: UnsafeMutablePointer<Float>) {
        // Run the batch in slices small enough that a layer's activations stay in the last-level
        // cache: large batches otherwise stream every layer through DRAM (and the arena grows with
        // the batch). Images are independent, so slicing does not change results.
        if runsImageParallel(batch: batch) {
            let threads = options.workers, slice = microBatch(height: height, width: width, batch: batch)
            let inCount = 3 * height * width, outCount = outputShape(height: height, width: width).count
            // Equal slices, a multiple of the thread count, so that no thread is left with the last one alone.
            let slices = min(batch, ((batch + slice - 1) / slice + threads - 1) / threads * threads)
            TensorThreads.concurrentImages(pieces: slices, threads: threads) { piece in
                let b0 = piece * batch / slices, b1 = (piece + 1) * batch / slices
                self.withArena { arena in
                    self.run(input + b0 * inCount, batch: b1 - b0, height: height, width: width, stages: 0..<self.stages.count,
                             output: output + b0 * outCount, emits: true, arena: arena, collect: nil)
                }
            }
            return
        }
        withArena { arena in
            runSegments(segments(height: height, width: width, batch: batch)[...], input: input, batch: batch,
                        height: height, width: width, output: output, arena: arena)
        }
    }

    /// Consecutive stages that run on the same number of images at a time (`slice`).
    public struct Segment: Equatable, Sendable {
        /// Stage indices.
        public let stages: Range<Int>
        /// Images per pass through these stages.
        public let slice: Int

        /// Stages `stages`, `slice` images at a time.
        public init(stages: Range<Int>, slice: Int) { self.stages = stages; self.slice = slice }
    }

    /// How `forward` slices a layer-parallel batch. Each stage's slice is as many images as keep its
    /// largest materialised activation (its input included; see `microBatch`) within
    /// `options.layerParallelSliceBudget` (`options.sliceBudget` when kernels run single-threaded here: one thread
    /// alone wants its activations in cache), lowered to the smallest slice of any later stage, so
    /// that a segment's slice is made of whole slices of the segments before it; equal neighbours
    /// form one segment.
    ///
    /// Why not one slice for all: the early stages' large maps want few images at a time (their
    /// activations then stay in the last-level cache), but the late stages' small maps with large
    /// weights want many, so that each pass over weights that no cache holds serves more GEMM rows
    /// (VGG-16's classifier reads 400 MB of weights per pass). A later segment's input is staged per
    /// slice, in buffers beside the activation ones (`activationSlots`).
    public func segments(height: Int, width: Int, batch: Int) -> [Segment] {
        let budget = options.workers > 1 ? options.layerParallelSliceBudget : options.sliceBudget
        let largestPerStage = architecture.largestActivations(height: height, width: width, fusedBlocks: options.fusedBlocks)
        var slices = largestPerStage[0...stageIndex].map { largest in
            max(1, min(batch, budget / max(1, largest)))
        }
        for i in stride(from: slices.count - 2, through: 0, by: -1) { slices[i] = min(slices[i], slices[i + 1]) }
        var result: [Segment] = []
        var start = 0
        for i in 1...slices.count where i == slices.count || slices[i] != slices[start] {
            result.append(Segment(stages: start..<i, slice: slices[start]))
            start = i
        }
        return result
    }

    /// Runs `segments` (the last of them ends the network) on `batch` images: the last segment's
    /// slices one after another, each staged by running the segments before it on that slice.
    /// Slices are evened out (32 images at 20: two of 16, not 20 + 12).
    private func runSegments(_ segments: ArraySlice<Segment>, input: UnsafePointer<Float>, batch: Int, height: Int,
                             width: Int, output: UnsafeMutablePointer<Float>, arena: [Workspace]) {
        let last = segments.last!
        let shapes = architecture.stageShapes(height: height, width: width)
        let first = last.stages.lowerBound
        let inCount = first == 0 ? 3 * height * width : shapes[first - 1].count
        let final = last.stages.upperBound == stageIndex + 1
        let outCount = final ? outputShape(height: height, width: width).count : shapes[last.stages.upperBound - 1].count
        let pieces = (batch + last.slice - 1) / last.slice
        let slice = (batch + pieces - 1) / pieces
        var b0 = 0
        while b0 < batch {
            let n = min(slice, batch - b0)
            let source: UnsafePointer<Float>
            if segments.count == 1 {
                source = input + b0 * inCount
            } else {
                let staged = arena[Network.activationSlots + segments.count - 2].pointer(minimumCount: n * inCount)
                runSegments(segments.dropLast(), input: input + b0 * (3 * height * width), batch: n, height: height,
                            width: width, output: staged, arena: arena)
                source = UnsafePointer(staged)
            }
            run(source, batch: n, height: height, width: width, stages: last.stages, output: output + b0 * outCount,
                emits: final, arena: arena, collect: nil)
            b0 += n
        }
    }

    /// Whether `forward` runs large batches image-parallel (see the type's discussion): enabled
    /// (`options.concurrentImages`), no stage times being recorded, no Linear layers, and convolution
    /// weights within `concurrentImagesMaximumWeightBytes`.
    ///
    /// When true, `forward` may also be called from several threads at once provided each call runs
    /// inside `TensorThreads.withSingleThreadedKernels`: every call takes its own activation buffers
    /// and the layers are read-only, and the outputs are bitwise those of one call on the whole batch.
    public var splitsBatchesIntoConcurrentSlices: Bool {
        options.concurrentImages && !recordStageTimes && !hasLinearLayers
            && convolutionWeightBytes <= Network.concurrentImagesMaximumWeightBytes
    }

    /// Runs `body` with a set of activation buffers no other slice is using.
    private func withArena(_ body: ([Workspace]) -> Void) {
        arenaLock.lock()
        let arena = arenas.popLast()
            ?? (0..<(Network.activationSlots + stages.count)).map { _ in Workspace(hugePages: options.hugePages) }
        arenaLock.unlock()
        body(arena)
        arenaLock.lock()
        arenas.append(arena)
        arenaLock.unlock()
    }

    /// Images per slice of an image-parallel batch: as many as keep the largest activation the
    /// network materialises (`Architecture.largestActivations`, fused MBConv blocks' expanded tensors
    /// left out when blocks fuse) under `options.sliceBudget`, at least 1. (Counting EfficientNet-Lite0's
    /// expanded tensors too would cut its slices to 2-3 images, each pass over the weights serving
    /// fewer images.)
    public func microBatch(height: Int, width: Int, batch: Int) -> Int {
        let largest = architecture.largestActivation(height: height, width: width, throughStage: stageIndex,
                                                     fusedBlocks: options.fusedBlocks)
        return max(1, min(batch, options.sliceBudget / max(1, largest)))
    }

    /// The most images per slice of the first stages for a batch of `batch`: `microBatch` when the
    /// batch runs image-parallel, else the first segment's slice (`runSegments` may even the slices
    /// out below it: 32 images at 20 run as 2 x 16).
    public func firstSlice(height: Int, width: Int, batch: Int) -> Int {
        runsImageParallel(batch: batch) ? microBatch(height: height, width: width, batch: batch)
            : segments(height: height, width: width, batch: batch)[0].slice
    }

    /// Whether `forward` runs a batch of `batch` image-parallel here (see the type's discussion):
    /// at least two images per kernel thread for a network that supports it.
    private func runsImageParallel(batch: Int) -> Bool {
        splitsBatchesIntoConcurrentSlices && options.workers > 1 && batch >= 2 * options.workers
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
            withArena { arena in
                run(i.baseAddress!, batch: batch, height: height, width: width, stages: 0..<stages.count, output: nil,
                    emits: true, arena: arena) { index, values in
                    result.append((self.architecture.stages[index].name, values))
                }
            }
        }
        return result
    }

    /// Frees the activation buffers (they are reallocated by the next call).
    public func releaseBuffers() {
        arenaLock.lock(); defer { arenaLock.unlock() }
        for set in arenas { for w in set { w.release() } }
    }

    // MARK: - Execution

    private struct Act {
        var slot: Int, h: Int, w: Int, c: Int
        var isVector: Bool
    }

    private func pointer(_ act: Act, batch: Int, _ arena: [Workspace]) -> UnsafeMutablePointer<Float> {
        arena[act.slot].pointer(minimumCount: batch * act.h * act.w * act.c)
    }

    private func acquire(excluding used: [Int], _ arena: [Workspace]) -> Int {
        (0..<Network.activationSlots).first { !used.contains($0) }!
    }

    /// Buffers of an arena that hold activations while layers run (the few alive at once); the
    /// ones after them stage the input of each segment (`segments`) but the first.
    static let activationSlots = 5

    /// Runs `stages` on `batch` images. `input` is the PyTorch-layout images when the range starts at
    /// stage 0, else the NHWC output of the stage before it. `output` receives the last stage's
    /// output in PyTorch layout (pooled as the network says) when `emits`, else raw NHWC.
    private func run(_ input: UnsafePointer<Float>, batch: Int, height: Int, width: Int, stages range: Range<Int>,
                     output: UnsafeMutablePointer<Float>?, emits: Bool, arena: [Workspace],
                     collect: ((Int, [Float]) -> Void)?) {
        var act: Act
        if range.lowerBound == 0 {
            act = Act(slot: 0, h: height, w: width, c: 3, isVector: false)
            Layout.nchwToNhwc(input, batch: batch, channels: 3, height: height, width: width, into: pointer(act, batch: batch, arena),
                              options: options)
        } else {
            switch architecture.stageShapes(height: height, width: width)[range.lowerBound - 1] {
            case let .map(c, h, w): act = Act(slot: 0, h: h, w: w, c: c, isVector: false)
            case let .vector(d): act = Act(slot: 0, h: 1, w: 1, c: d, isVector: true)
            }
            pointer(act, batch: batch, arena).update(from: input, count: batch * act.h * act.w * act.c)
        }
        if recordStageTimes && stageSeconds.count != stages.count { stageSeconds = [Double](repeating: 0, count: stages.count) }
        for i in range {
            let t0 = recordStageTimes ? DispatchTime.now().uptimeNanoseconds : 0
            for layer in stages[i] { act = execute(layer, act, batch: batch, protected: [], arena) }
            if recordStageTimes { stageSeconds[i] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 }
            if let collect {
                var values = [Float](repeating: 0, count: batch * act.h * act.w * act.c)
                values.withUnsafeMutableBufferPointer { emit(act, batch: batch, pool: .none, into: $0.baseAddress!, arena) }
                collect(i, values)
            }
        }
        guard let output else { return }
        if emits {
            emit(act, batch: batch, pool: pooling, into: output, arena)
        } else {
            output.update(from: pointer(act, batch: batch, arena), count: batch * act.h * act.w * act.c)
        }
    }

    /// Writes an activation in PyTorch layout, optionally globally pooled.
    private func emit(_ act: Act, batch: Int, pool: Pooling, into out: UnsafeMutablePointer<Float>, _ arena: [Workspace]) {
        let src = pointer(act, batch: batch, arena)
        if act.isVector {
            out.update(from: src, count: batch * act.c)
        } else if pool != .none {
            Pooling2D.global(input: src, batch: batch, height: act.h, width: act.w, channels: act.c, max: pool == .max, output: out,
                             options: options)
        } else {
            Layout.nhwcToNchw(src, batch: batch, height: act.h, width: act.w, channels: act.c, into: out, options: options)
        }
    }

    /// Replaces each [expand →] depthwise → project run of layers (with or without a skip connection)
    /// by a fused `InvertedResidual`, keeping the layers for when fusion does not pay.
    static func fusingInvertedResiduals(_ layers: [CompiledLayer]) -> [CompiledLayer] {
        /// The fused block for `run` if it is [expand,] depthwise, project.
        func block(_ run: ArraySlice<CompiledLayer>, addsInput: Bool) -> InvertedResidual? {
            let layers = Array(run)
            guard layers.count == 2 || layers.count == 3, case let .conv(p) = layers.last!, InvertedResidual.isPointwise(p),
                  case let .depthwise(d) = layers[layers.count - 2] else { return nil }
            if layers.count == 2 { return InvertedResidual(expand: nil, depthwise: d, project: p, addsInput: addsInput) }
            guard case let .conv(e) = layers[0], InvertedResidual.isPointwise(e) else { return nil }
            return InvertedResidual(expand: e, depthwise: d, project: p, addsInput: addsInput)
        }
        var result: [CompiledLayer] = []
        var i = 0
        while i < layers.count {
            if case let .residual(body, nil) = layers[i], let fused = block(body[...], addsInput: true) {
                result.append(.invertedResidual(fused, unfused: [layers[i]]))
                i += 1
            } else if let (fused, n) = [3, 2].lazy.compactMap({ n in
                          i + n <= layers.count ? block(layers[i..<(i + n)], addsInput: false).map { ($0, n) } : nil }).first {
                result.append(.invertedResidual(fused, unfused: Array(layers[i..<(i + n)])))
                i += n
            } else {
                result.append(layers[i])
                i += 1
            }
        }
        return result
    }

    /// Runs `body`, adding its wall time to the `layerTimes` row `name` when `recordStageTimes` is on
    /// (such passes run on the calling thread only, so the table needs no lock).
    private func timed(_ name: @autoclosure () -> String, flops: @autoclosure () -> Int, _ body: () -> Void) {
        guard recordStageTimes else { body(); return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let key = name()
        if let row = layerTimeRows[key] {
            layerTimes[row].seconds += seconds
            layerTimes[row].flops += flops()
            layerTimes[row].calls += 1
        } else {
            layerTimeRows[key] = layerTimes.count
            layerTimes.append(LayerTiming(layer: key, seconds: seconds, flops: flops(), calls: 1))
        }
    }

    /// Runs one layer on `act`. A convolution that adds `residual` may be told to write its output over it
    /// (`outputSlot`, the skip tensor's slot): see the `.residual` case.
    private func execute(_ layer: CompiledLayer, _ act: Act, batch: Int, protected: [Int], _ arena: [Workspace],
                         residual: UnsafePointer<Float>? = nil, outputSlot: Int? = nil) -> Act {
        let src = UnsafePointer(pointer(act, batch: batch, arena))
        switch layer {
        case let .conv(conv):
            let (oh, ow) = conv.outputSize(height: act.h, width: act.w)
            let out = Act(slot: outputSlot ?? acquire(excluding: protected + [act.slot], arena), h: oh, w: ow,
                          c: conv.outChannels, isVector: false)
            timed("conv \(conv.kernelH)x\(conv.kernelW)/\(conv.stride) \(conv.inChannels)->\(conv.outChannels) @\(act.h)x\(act.w)"
                  + (conv.runsWinograd(batch: batch, height: act.h, width: act.w) ? " winograd" : ""), flops: 2 * batch * conv.macs(height: act.h, width: act.w)) {
                conv.forward(input: src, batch: batch, height: act.h, width: act.w, output: pointer(out, batch: batch, arena),
                             residual: residual, options: options)
            }
            return out
        case let .depthwise(conv):
            let (oh, ow) = conv.outputSize(height: act.h, width: act.w)
            let out = Act(slot: acquire(excluding: protected + [act.slot], arena), h: oh, w: ow, c: conv.channels, isVector: false)
            timed("depthwise \(conv.kernelH)x\(conv.kernelW)/\(conv.stride) \(conv.channels) @\(act.h)x\(act.w)",
                  flops: 2 * batch * conv.macs(height: act.h, width: act.w)) {
                conv.forward(input: src, batch: batch, height: act.h, width: act.w, output: pointer(out, batch: batch, arena),
                             options: options)
            }
            return out
        case let .maxPool(k, s, p):
            let (oh, ow) = Pooling2D.outputSize(height: act.h, width: act.w, kernel: k, stride: s, padding: p)
            let out = Act(slot: acquire(excluding: protected + [act.slot], arena), h: oh, w: ow, c: act.c, isVector: false)
            Pooling2D.maxPool(input: src, batch: batch, height: act.h, width: act.w, channels: act.c, kernel: k, stride: s,
                              padding: p, output: pointer(out, batch: batch, arena), options: options)
            return out
        case let .avgPool(k, s, p, countIncludePad):
            let (oh, ow) = Pooling2D.outputSize(height: act.h, width: act.w, kernel: k, stride: s, padding: p)
            let out = Act(slot: acquire(excluding: protected + [act.slot], arena), h: oh, w: ow, c: act.c, isVector: false)
            Pooling2D.avgPool(input: src, batch: batch, height: act.h, width: act.w, channels: act.c, kernel: k, stride: s,
                              padding: p, countIncludePad: countIncludePad, output: pointer(out, batch: batch, arena),
                              options: options)
            return out
        case let .concat(branches, channels):
            return concatenate(branches, channels: channels, act, batch: batch, protected: protected, arena, into: nil, at: 0)
        case let .adaptiveAvgPool(oh, ow):
            let out = Act(slot: acquire(excluding: protected + [act.slot], arena), h: oh, w: ow, c: act.c, isVector: false)
            Pooling2D.adaptiveAvgPool(input: src, batch: batch, height: act.h, width: act.w, channels: act.c,
                                      outHeight: oh, outWidth: ow, output: pointer(out, batch: batch, arena), options: options)
            return out
        case .globalAvgPool:
            let out = Act(slot: acquire(excluding: protected + [act.slot], arena), h: 1, w: 1, c: act.c, isVector: true)
            Pooling2D.global(input: src, batch: batch, height: act.h, width: act.w, channels: act.c, max: false,
                             output: pointer(out, batch: batch, arena), options: options)
            return out
        case let .linear(linear):
            // An NHWC map flattens in (h, w, c) order; the weights were permuted at load to match.
            let out = Act(slot: acquire(excluding: protected + [act.slot], arena), h: 1, w: 1, c: linear.outFeatures, isVector: true)
            timed("linear \(linear.inFeatures)->\(linear.outFeatures)", flops: 2 * batch * linear.macs) {
                linear.forward(input: src, batch: batch, output: pointer(out, batch: batch, arena), options: options)
            }
            return out
        case let .invertedResidual(block, unfused):
            let bands = options.fusedBlocks ? block.bandsPerImage(batch: batch, height: act.h, width: act.w, options: options) : 0
            if bands == 0 {
                var x = act
                for l in unfused { x = execute(l, x, batch: batch, protected: protected, arena) }
                return x
            }
            let (oh, ow) = block.outputSize(height: act.h, width: act.w)
            let out = Act(slot: acquire(excluding: protected + [act.slot], arena), h: oh, w: ow, c: block.outChannels, isVector: false)
            let dw = block.depthwise
            timed("mbconv \(block.inChannels)->\(dw.channels)->\(block.outChannels) \(dw.kernelH)x\(dw.kernelW)/\(dw.stride) @\(act.h)x\(act.w)",
                  flops: 2 * batch * block.macs(height: act.h, width: act.w)) {
                block.forward(input: src, batch: batch, height: act.h, width: act.w, output: pointer(out, batch: batch, arena),
                              bands: bands, options: options)
            }
            return out
        case let .residual(body, shortcut):
            var keep = protected + [act.slot]
            var skip = act
            if let shortcut {
                for l in shortcut { skip = execute(l, skip, batch: batch, protected: keep, arena) }
                keep.append(skip.slot)
            }
            var x = act
            for l in body.dropLast() { x = execute(l, x, batch: batch, protected: keep, arena) }
            // The block's output goes over the skip tensor, which dies with the block: each output element
            // is written after its own skip element is read (every kernel's output pass does so), and a
            // store to a line just read needs no fetch from memory (docs/ENGINE.md, "Convolutions").
            let inPlace = options.residualInPlace && !protected.contains(skip.slot) && skip.slot != x.slot
            return execute(body.last!, x, batch: batch, protected: keep, arena,
                           residual: UnsafePointer(pointer(skip, batch: batch, arena)), outputSlot: inPlace ? skip.slot : nil)
        }
    }
}

extension Network {
    /// Runs every branch on `act` and places their outputs side by side on channels, in branch order
    /// (`torch.cat(dim=1)`): from channel `offset` of `destination` when given (a branch that ends in a
    /// nested concatenation writes straight into its parent's output), else into a new activation of
    /// `channels` channels, which is returned. Each branch's last layer writes into a buffer of its
    /// own, which is then copied into its channel slice: one extra pass over the block's output, small
    /// next to its convolutions, and the kernels keep their dense output layout.
    /// Buffers alive at once: `protected`, the input, the destination and two per branch depth.
    private func concatenate(_ branches: [[CompiledLayer]], channels: Int, _ act: Act, batch: Int, protected: [Int],
                             _ arena: [Workspace], into destination: Act?, at offset: Int) -> Act {
        var dest = destination
        var channel = offset
        for branch in branches {
            let keep = protected + [act.slot] + (dest.map { [$0.slot] } ?? [])
            var x = act
            if let d = dest, case let .concat(inner, innerChannels)? = branch.last {
                for layer in branch.dropLast() { x = execute(layer, x, batch: batch, protected: keep, arena) }
                _ = concatenate(inner, channels: innerChannels, x, batch: batch, protected: keep + [x.slot], arena, into: d, at: channel)
                channel += innerChannels
                continue
            }
            for layer in branch { x = execute(layer, x, batch: batch, protected: keep, arena) }
            if dest == nil {
                dest = Act(slot: acquire(excluding: keep + [x.slot], arena), h: x.h, w: x.w, c: channels, isVector: false)
            }
            let d = dest!
            precondition(x.h == d.h && x.w == d.w && channel + x.c <= d.c, "concatenated branches disagree on their output size")
            let src = UnsafePointer(pointer(x, batch: batch, arena)), dst = pointer(d, batch: batch, arena)
            for p in 0..<(batch * x.h * x.w) { (dst + p * d.c + channel).update(from: src + p * x.c, count: x.c) }
            channel += x.c
        }
        return dest!
    }
}

/// Time spent in the layers of one kind and shape (`Network.layerTimes`).
public struct LayerTiming: Sendable {
    /// Kind, kernel/stride, channels and input size, e.g. `conv 1x1/1 64->256 @56x56`.
    public let layer: String
    /// Accumulated wall seconds.
    public var seconds: Double
    /// Accumulated floating-point operations (2 per multiply-add).
    public var flops: Int
    /// Calls timed (layers of this shape times passes times slices).
    public var calls: Int
}

/// A layer with its weights prepared for the kernels.
enum CompiledLayer {
    case conv(Conv2D)
    case depthwise(DepthwiseConv2D)
    case maxPool(kernel: Int, stride: Int, padding: Int)
    case avgPool(kernel: Int, stride: Int, padding: Int, countIncludePad: Bool)
    case adaptiveAvgPool(height: Int, width: Int)
    case globalAvgPool
    case linear(Linear)
    /// The body's last layer is a convolution compiled with the block's activation; the skip tensor
    /// is added in its output pass.
    indirect case residual(body: [CompiledLayer], shortcut: [CompiledLayer]?)
    /// An MBConv block run as one fused kernel; `unfused` is the same block as separate layers, run
    /// instead when fusion does not pay (thin bands at small batch) or is switched off.
    indirect case invertedResidual(InvertedResidual, unfused: [CompiledLayer])
    /// Branches run on the same input, outputs concatenated on channels (`channels` in total).
    indirect case concat(branches: [[CompiledLayer]], channels: Int)

    /// The layers this one is made of (a residual block's body and shortcut; an MBConv block's
    /// unfused form, which shares the fused kernel's weights).
    var children: [CompiledLayer] {
        switch self {
        case let .residual(body, shortcut): body + (shortcut ?? [])
        case let .invertedResidual(_, unfused): unfused
        case let .concat(branches, _): Array(branches.joined())
        default: []
        }
    }

    /// Bytes of convolution weights this layer holds (Winograd layers count their transformed weights,
    /// and layers holding both kinds count both).
    var convolutionWeightBytes: Int {
        switch self {
        case let .conv(c):
            ((c.usesWinograd ? 36 : 0) + (c.usesDirect ? c.kernelH * c.kernelW : 0)) * c.inChannels * c.outChannels
                * MemoryLayout<Float>.size
        case let .depthwise(d): d.kernelH * d.kernelW * d.channels * MemoryLayout<Float>.size
        default: children.reduce(0) { $0 + $1.convolutionWeightBytes }
        }
    }

    /// Whether this layer is, or contains, a fully connected layer.
    var containsLinear: Bool {
        if case .linear = self { return true }
        return children.contains { $0.containsLinear }
    }
}

/// Reads tensors one at a time from a `WeightSource`, validates shapes and builds kernels.
struct Loader {
    let source: WeightSource
    let sourceName: String
    /// Engine settings the layers are built for (Winograd or not, huge pages).
    let options: EngineOptions

    func tensor(_ key: String, _ shape: [Int]) throws -> [Float] {
        guard let found = source.shape(of: key) else { throw ModelLoadingError.missingKey(key, source: sourceName) }
        // PyTorch accepts a 0-d/1-element mismatch nowhere here; compare exactly.
        guard found == shape else { throw ModelLoadingError.shapeMismatch(key: key, expected: shape, found: found, source: sourceName) }
        let values = try source.load(key)
        guard values.count == shape.reduce(1, *) else {
            throw ModelLoadingError.shapeMismatch(key: key, expected: shape, found: [values.count], source: sourceName)
        }
        try WeightValidation.check(values, key: key, source: sourceName)
        return values
    }

    /// Folded (scale, shift) of a BN, with an optional preceding conv bias merged into the shift.
    func fold(_ bn: BatchNormSpec?, channels c: Int, convBias: [Float]?) throws -> (scale: [Float]?, shift: [Float]?) {
        guard let bn else { return (nil, convBias) }
        let keys: (beta: String, mean: String, variance: String) =
            bn.keys == .torch ? (".bias", ".running_mean", ".running_var") : (".beta", ".mean", ".var")
        let gamma = bn.keys == .torch ? try tensor(bn.name + ".weight", [c]) : [Float](repeating: 1, count: c)
        var (scale, shift) = foldBatchNorm(gamma: gamma, beta: try tensor(bn.name + keys.beta, [c]),
                                           mean: try tensor(bn.name + keys.mean, [c]),
                                           variance: try tensor(bn.name + keys.variance, [c]), eps: bn.eps)
        if let convBias { for i in 0..<c { shift[i] += convBias[i] * scale[i] } }
        return (scale, shift)
    }

    func compile(_ spec: LayerSpec, input: ActivationShape, fusedActivation: Activation?) throws -> CompiledLayer {
        switch spec {
        case let .conv(name, cin, cout, k, stride, padding, hasBias, bn, activation, kernelWidth):
            let kw = kernelWidth ?? k
            let w = try tensor(name + ".weight", [cout, cin, k, kw])
            let bias = hasBias ? try tensor(name + ".bias", [cout]) : nil
            let (scale, shift) = try fold(bn, channels: cout, convBias: bias)
            var expected: (height: Int, width: Int)? = nil
            if case let .map(_, h, wd) = input { expected = (h, wd) }
            return .conv(w.withUnsafeBufferPointer {
                Conv2D(weightOIHW: $0.baseAddress!, outChannels: cout, inChannels: cin, kernelH: k, kernelW: kw, stride: stride,
                       padding: padding, channelScale: scale, bias: shift, activation: fusedActivation ?? activation,
                       expectedInput: expected, options: options)
            })
        case let .depthwise(name, c, k, stride, padding, bn, activation):
            let w = try tensor(name + ".weight", [c, 1, k, k])
            let (scale, shift) = try fold(bn, channels: c, convBias: nil)
            return .depthwise(w.withUnsafeBufferPointer {
                DepthwiseConv2D(weightC1HW: $0.baseAddress!, channels: c, kernelH: k, kernelW: k, stride: stride,
                                padding: padding, channelScale: scale, bias: shift, activation: fusedActivation ?? activation)
            })
        case let .maxPool(k, s, p):
            return .maxPool(kernel: k, stride: s, padding: p)
        case let .avgPool(k, s, p, countIncludePad):
            return .avgPool(kernel: k, stride: s, padding: p, countIncludePad: countIncludePad)
        case let .concat(branches):
            let compiled = try branches.map { branch in
                var shape = input
                return try branch.map { l in
                    defer { shape = Architecture.infer(l, shape).shape }
                    return try compile(l, input: shape, fusedActivation: nil)
                }
            }
            guard case let .map(channels, _, _) = Architecture.infer(spec, input).shape else {
                preconditionFailure("a concatenation outputs a map")
            }
            return .concat(branches: compiled, channels: channels)
        case let .adaptiveAvgPool(h, w):
            return .adaptiveAvgPool(height: h, width: w)
        case .globalAvgPool:
            return .globalAvgPool
        case let .linear(name, inF, outF, activation):
            let w = try tensor(name + ".weight", [outF, inF])
            let b = try tensor(name + ".bias", [outF])
            var permutation: [Int]? = nil
            if case let .map(c, h, wd) = input, h * wd > 1 {
                // Our flatten order is (y, x, c); torch's is (c, y, x).
                var perm = [Int](repeating: 0, count: inF)
                for y in 0..<h { for x in 0..<wd { for ch in 0..<c { perm[(y * wd + x) * c + ch] = ch * h * wd + y * wd + x } } }
                permutation = perm
            }
            return .linear(w.withUnsafeBufferPointer {
                Linear(weight: $0.baseAddress!, outFeatures: outF, inFeatures: inF, bias: b, activation: activation,
                       columnPermutation: permutation)
            })
        case let .residual(body, shortcut, activation):
            var shape = input
            var compiledBody: [CompiledLayer] = []
            for (i, l) in body.enumerated() {
                let last = i == body.count - 1
                if last, case .conv = l {} else if last {
                    preconditionFailure("residual body must end with a convolution")
                }
                compiledBody.append(try compile(l, input: shape, fusedActivation: last ? activation : nil))
                shape = Architecture.infer(l, shape).shape
            }
            var compiledShortcut: [CompiledLayer]? = nil
            if let shortcut {
                var s = input
                compiledShortcut = try shortcut.map { l in
                    defer { s = Architecture.infer(l, s).shape }
                    return try compile(l, input: s, fusedActivation: nil)
                }
            }
            return .residual(body: compiledBody, shortcut: compiledShortcut)
        }
    }
}
