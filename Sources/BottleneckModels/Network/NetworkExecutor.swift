import BottleneckTensor
import Foundation

/// Executing compiled stages: runs layers on NHWC activations held in reusable buffer sets
/// ("arenas", one per slice in flight, growing only when a larger slice arrives), converts the
/// PyTorch-layout input and output, and records stage and layer times while profiling. Owns the
/// arenas and the profile; the layers are read-only.
///
/// Thread safety: `withArena` and `run` may be called from several threads at once (each call works
/// in its own arena) while `isProfiling` is off; profiled passes run on one thread.
final class NetworkExecutor: @unchecked Sendable {
    /// Compiled layers per stage, stage 0 first.
    let stages: [[CompiledLayer]]
    /// The architecture the stages were compiled from (for stage shapes).
    let architecture: Architecture
    /// Reduction applied to the last stage's spatial output when a pass emits it.
    let pooling: Pooling
    /// Engine settings every layer runs with.
    let options: EngineOptions
    /// Fused blocks spanning two stages, by the first stage's index: that stage's last layer (a
    /// stem convolution) as the expansion of the next stage's first layer (a block without one), so
    /// that the stem's output lives only in the block's ring of rows (`stemFusions`).
    let crossStageBlocks: [Int: InvertedResidual]
    /// Whether passes add their wall times to `profile`.
    var isProfiling = false
    /// Accumulated times of profiled passes.
    private(set) var profile = ExecutionProfile()

    /// Activation buffer sets not in use, one per slice in flight at most.
    private var arenas: [[Workspace]] = []
    private let arenaLock = NSLock()

    /// Buffers of an arena that hold activations while layers run (the few alive at once); the
    /// ones after them stage the input of each segment (`SliceSchedule.segments`) but the first.
    static let activationSlots = 5

    init(stages: [[CompiledLayer]], architecture: Architecture, pooling: Pooling, options: EngineOptions) {
        self.stages = stages
        self.architecture = architecture
        self.pooling = pooling
        self.options = options
        crossStageBlocks = options.fusedBlocks && options.stemFusion ? NetworkExecutor.stemFusions(stages) : [:]
    }

    /// For each stage ending in a direct k x k convolution followed by a stage that starts with an
    /// MBConv block without expansion or skip (EfficientNet-Lite's and MobileNetV2's stem and first
    /// block), the two fused: `InvertedResidual` with the convolution as its expansion.
    static func stemFusions(_ stages: [[CompiledLayer]]) -> [Int: InvertedResidual] {
        var fused: [Int: InvertedResidual] = [:]
        for i in stages.indices.dropLast() {
            guard case let .conv(stem) = stages[i].last, stem.runsDirectOnly, !InvertedResidual.isPointwise(stem),
                  case let .invertedResidual(block, _) = stages[i + 1].first, block.expand == nil, !block.addsInput,
                  stem.outChannels == block.depthwise.channels else { continue }
            fused[i] = InvertedResidual(expand: stem, depthwise: block.depthwise, project: block.project, addsInput: false)
        }
        return fused
    }

    /// Output shape per image of the last stage for a `height x width` input, after pooling.
    func outputShape(height: Int, width: Int) -> ActivationShape {
        let raw = architecture.stageShapes(height: height, width: width)[stages.count - 1]
        if case let .map(c, _, _) = raw, pooling != .none { return .vector(c) }
        return raw
    }

    /// Runs `body` with a set of activation buffers no other caller is using.
    func withArena(_ body: ([Workspace]) -> Void) {
        arenaLock.lock()
        let arena = arenas.popLast()
            ?? (0..<(NetworkExecutor.activationSlots + stages.count)).map { _ in Workspace(hugePages: options.hugePages) }
        arenaLock.unlock()
        body(arena)
        arenaLock.lock()
        arenas.append(arena)
        arenaLock.unlock()
    }

    /// Frees the activation buffers (they are reallocated by the next pass).
    func releaseBuffers() {
        arenaLock.lock(); defer { arenaLock.unlock() }
        for set in arenas { for w in set { w.release() } }
    }

    /// Runs `segments` (the last of them ends the network) on `batch` images: the last segment's
    /// slices one after another (`SliceSchedule.evenSlices`), each staged by running the segments
    /// before it on that slice.
    func runSegments(_ segments: ArraySlice<Network.Segment>, input: UnsafePointer<Float>, batch: Int, height: Int,
                     width: Int, output: UnsafeMutablePointer<Float>, arena: [Workspace]) {
        let last = segments.last!
        let shapes = architecture.stageShapes(height: height, width: width)
        let first = last.stages.lowerBound
        let inCount = first == 0 ? 3 * height * width : shapes[first - 1].count
        let final = last.stages.upperBound == stages.count
        let outCount = final ? outputShape(height: height, width: width).count : shapes[last.stages.upperBound - 1].count
        for images in SliceSchedule.evenSlices(batch: batch, maximum: last.slice) {
            let b0 = images.lowerBound, n = images.count
            let source: UnsafePointer<Float>
            if segments.count == 1 {
                source = input + b0 * inCount
            } else {
                let staged = arena[NetworkExecutor.activationSlots + segments.count - 2].pointer(minimumCount: n * inCount)
                runSegments(segments.dropLast(), input: input + b0 * (3 * height * width), batch: n, height: height,
                            width: width, output: staged, arena: arena)
                source = UnsafePointer(staged)
            }
            run(source, batch: n, height: height, width: width, stages: last.stages, output: output + b0 * outCount,
                emits: final, arena: arena, collect: nil)
        }
    }

    /// An activation: which arena slot holds it and its per-image NHWC shape.
    private struct Act {
        var slot: Int, h: Int, w: Int, c: Int
        var isVector: Bool
    }

    private func pointer(_ act: Act, batch: Int, _ arena: [Workspace]) -> UnsafeMutablePointer<Float> {
        arena[act.slot].pointer(minimumCount: batch * act.h * act.w * act.c)
    }

    private func acquire(excluding used: [Int], _ arena: [Workspace]) -> Int {
        (0..<NetworkExecutor.activationSlots).first { !used.contains($0) }!
    }

    /// Runs `stages` on `batch` images. `input` is the PyTorch-layout images when the range starts at
    /// stage 0, else the NHWC output of the stage before it. `output` receives the last stage's
    /// output in PyTorch layout (pooled with `pooling`) when `emits`, else raw NHWC; `collect`, when
    /// given, receives every stage's unpooled output in PyTorch layout.
    func run(_ input: UnsafePointer<Float>, batch: Int, height: Int, width: Int, stages range: Range<Int>,
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
        if isProfiling && profile.stageSeconds.count != stages.count { profile.stageSeconds = [Double](repeating: 0, count: stages.count) }
        // A stage whose first layer ran fused with the stage before (`crossStageBlocks`) skips it.
        var firstLayerDone = false
        for i in range {
            let t0 = isProfiling ? DispatchTime.now().uptimeNanoseconds : 0
            let layers = firstLayerDone ? stages[i].dropFirst() : stages[i][...]
            firstLayerDone = false
            // The next stage's input is needed only inside the fused block unless stages are collected
            // (profiles count the fused block in this stage's time).
            if collect == nil, i + 1 < range.upperBound, let fused = crossStageBlocks[i], let stem = layers.last {
                for layer in layers.dropLast() { act = execute(layer, act, batch: batch, protected: [], arena) }
                act = execute(.invertedResidual(fused, unfused: [stem, stages[i + 1][0]]), act, batch: batch, protected: [], arena)
                firstLayerDone = true
            } else {
                for layer in layers { act = execute(layer, act, batch: batch, protected: [], arena) }
            }
            if isProfiling { profile.stageSeconds[i] += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 }
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

    /// Runs `body`, adding its wall time to the profile's row `name` when `isProfiling` (such passes
    /// run on the calling thread only, so the profile needs no lock).
    private func timed(_ name: @autoclosure () -> String, flops: @autoclosure () -> Int, _ body: () -> Void) {
        guard isProfiling else { body(); return }
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        profile.add(layer: name(), seconds: Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9, flops: flops())
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
            timed(convolutionRow(conv, act, batch: batch), flops: 2 * batch * conv.macs(height: act.h, width: act.w)) {
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
        case .maxPool, .avgPool:
            let (oh, ow, c) = sliceOutput(of: layer, act)!
            let out = Act(slot: acquire(excluding: protected + [act.slot], arena), h: oh, w: ow, c: c, isVector: false)
            executeIntoSlice(layer, act, batch: batch, arena, destination: out, channel: 0)
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
            timed(blockRow(block, act), flops: 2 * batch * block.macs(height: act.h, width: act.w)) {
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

    /// Runs every branch on `act` and places their outputs side by side on channels, in branch order
    /// (`torch.cat(dim=1)`): from channel `offset` of `destination` when given (a branch that ends in a
    /// nested concatenation writes straight into its parent's output), else into a new activation of
    /// `channels` channels, which is returned. A branch whose last layer is a convolution or a window
    /// pool has it write straight into its channel slice (output pixels `channels` floats apart, the
    /// same arithmetic as a dense output); any other last layer writes a buffer of its own, which is
    /// then copied into the slice. Buffers alive at once: `protected`, the input, the destination and
    /// two per branch depth.
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
            for layer in branch.dropLast() { x = execute(layer, x, batch: batch, protected: keep, arena) }
            let last = branch.last!
            let slice = sliceOutput(of: last, x)
            if slice == nil { x = execute(last, x, batch: batch, protected: keep, arena) }
            let (h, w, c) = slice ?? (x.h, x.w, x.c)
            if dest == nil {
                dest = Act(slot: acquire(excluding: keep + [x.slot], arena), h: h, w: w, c: channels, isVector: false)
            }
            let d = dest!
            precondition(h == d.h && w == d.w && channel + c <= d.c, "concatenated branches disagree on their output size")
            if slice != nil {
                executeIntoSlice(last, x, batch: batch, arena, destination: d, channel: channel)
            } else {
                timed("concat copy \(c) of \(d.c) @\(h)x\(w)", flops: 0) {
                    Layout.copyPixels(UnsafePointer(pointer(x, batch: batch, arena)), pixels: batch * h * w, channels: c,
                                      into: pointer(d, batch: batch, arena) + channel, dstStride: d.c, options: options)
                }
            }
            channel += c
        }
        return dest!
    }

    /// Output size and channels of `layer` on `act` when it can write into a channel slice of a wider
    /// tensor (a convolution or a max/average window pool), else nil.
    private func sliceOutput(of layer: CompiledLayer, _ act: Act) -> (h: Int, w: Int, c: Int)? {
        switch layer {
        case let .conv(conv):
            let (oh, ow) = conv.outputSize(height: act.h, width: act.w)
            return (oh, ow, conv.outChannels)
        case let .maxPool(k, s, p), let .avgPool(k, s, p, _):
            let (oh, ow) = Pooling2D.outputSize(height: act.h, width: act.w, kernel: k, stride: s, padding: p)
            return (oh, ow, act.c)
        default: return nil
        }
    }

    /// Runs `layer` (one `sliceOutput` accepts) on `act`, writing its output into channels
    /// `channel...` of `destination` (channel 0 of an output exactly as wide: the dense case).
    private func executeIntoSlice(_ layer: CompiledLayer, _ act: Act, batch: Int, _ arena: [Workspace],
                                  destination d: Act, channel: Int) {
        let src = UnsafePointer(pointer(act, batch: batch, arena))
        let out = pointer(d, batch: batch, arena) + channel
        switch layer {
        case let .conv(conv):
            timed(convolutionRow(conv, act, batch: batch), flops: 2 * batch * conv.macs(height: act.h, width: act.w)) {
                conv.forward(input: src, batch: batch, height: act.h, width: act.w, output: out, outputStride: d.c,
                             options: options)
            }
        case let .maxPool(k, s, p):
            timed(poolRow("max", k, s, act), flops: 0) {
                Pooling2D.maxPool(input: src, batch: batch, height: act.h, width: act.w, channels: act.c, kernel: k, stride: s,
                                  padding: p, output: out, outputStride: d.c, options: options)
            }
        case let .avgPool(k, s, p, countIncludePad):
            timed(poolRow("avg", k, s, act), flops: 0) {
                Pooling2D.avgPool(input: src, batch: batch, height: act.h, width: act.w, channels: act.c, kernel: k, stride: s,
                                  padding: p, countIncludePad: countIncludePad, output: out, outputStride: d.c, options: options)
            }
        default:
            preconditionFailure("executeIntoSlice: \(layer) cannot write a channel slice")
        }
    }

    /// The profile row of a `kind` ("max"/"avg") window pool on `act`.
    private func poolRow(_ kind: String, _ kernel: Int, _ stride: Int, _ act: Act) -> String {
        "\(kind) pool \(kernel)x\(kernel)/\(stride) \(act.c) @\(act.h)x\(act.w)"
    }

    /// A fused MBConv block's profile row; a fused stem (`crossStageBlocks`) names its convolution first.
    private func blockRow(_ block: InvertedResidual, _ act: Act) -> String {
        let dw = block.depthwise
        let stem = block.expandsInPlace ? ""
            : block.expand.map { "conv \($0.kernelH)x\($0.kernelW)/\($0.stride) \($0.inChannels)->\($0.outChannels) + " } ?? ""
        let mbconvIn = block.expandsInPlace ? block.inChannels : dw.channels
        return stem + "mbconv \(mbconvIn)->\(dw.channels)->\(block.outChannels) \(dw.kernelH)x\(dw.kernelW)/\(dw.stride) @\(act.h)x\(act.w)"
    }

    /// The profile row of a convolution on `act`.
    private func convolutionRow(_ conv: Conv2D, _ act: Act, batch: Int) -> String {
        "conv \(conv.kernelH)x\(conv.kernelW)/\(conv.stride) \(conv.inChannels)->\(conv.outChannels) @\(act.h)x\(act.w)"
            + (conv.runsWinograd(batch: batch, height: act.h, width: act.w) ? " winograd" : "")
    }
}

/// Accumulated wall times of profiled passes (`Network.recordStageTimes`).
struct ExecutionProfile {
    /// Seconds per stage (index = stage index); empty until a profiled pass runs.
    var stageSeconds: [Double] = []
    /// Seconds per kind and shape of layer, rows in the order their layers first ran.
    private(set) var layerTimes: [LayerTiming] = []
    private var rows: [String: Int] = [:]

    /// Adds one timed call of the layer row `key`.
    mutating func add(layer key: String, seconds: Double, flops: Int) {
        if let row = rows[key] {
            layerTimes[row].seconds += seconds
            layerTimes[row].flops += flops
            layerTimes[row].calls += 1
        } else {
            rows[key] = layerTimes.count
            layerTimes.append(LayerTiming(layer: key, seconds: seconds, flops: flops, calls: 1))
        }
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
