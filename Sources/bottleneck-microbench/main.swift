import BottleneckModels
import BottleneckTensor
import Foundation
import Synchronization

// Kernel and network timings for tuning the engine (not tests: they print numbers and assert
// nothing). `swift run -c release bottleneck-microbench <gemm|conv|depthwise|winograd|network-ab>`;
// Benchmarks/README.md lists each one's environment variables. Numbers depend on the machine and on
// what else runs: compare only runs made side by side.

/// Shapes from environment variable `name` (`a:b:c,d:e:f`: one shape per comma, sizes split by colons).
func shapes(_ name: String) -> [[Int]]? {
    ProcessInfo.processInfo.environment[name].map { list in
        list.split(separator: ",").map { item in item.split(separator: ":").compactMap { Int($0) } }
    }
}

/// An integer setting from the environment.
func setting(_ name: String) -> Int? { ProcessInfo.processInfo.environment[name].flatMap(Int.init) }

/// Seconds on the calling thread's CPU-time clock (steadier for single-threaded timings on a shared
/// host) or on the monotonic wall clock.
func clock(cpuTime: Bool) -> Double {
    var ts = timespec()
    clock_gettime(cpuTime ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// `PackedGEMM` on EfficientNet-Lite0's 1x1 shapes (rows, K, N) and a few of ResNet-50's.
/// `BOTTLENECK_GEMM_SHAPES=m:k:n,...`, `BOTTLENECK_GEMM_THREADS` (1: one `block` call, thread CPU time),
/// `BOTTLENECK_GEMM_REPS` (calls per timing; default about 20 M multiply-adds' worth),
/// `BOTTLENECK_GEMM_COPIES` (weight copies used in turn, default 1: enough copies to overflow the
/// caches time the weights read from memory, as in a batch-1 network pass). With copies and
/// `BOTTLENECK_GEMM_PAIRED=1`, calls alternate between copy 0 and the others (`_REPS` pairs, default
/// 400, wall time); prints each side's median and the median of the per-pair time ratios.
func gemm(_ base: EngineOptions) {
    var list: [[Int]] = [[336, 16, 96], [336, 24, 144], [336, 40, 240], [196, 80, 480], [196, 112, 672], [49, 192, 1152],
                         [336, 96, 24], [336, 144, 24], [336, 144, 40], [336, 240, 40], [196, 240, 80], [196, 480, 80],
                         [196, 480, 112], [196, 672, 112], [49, 672, 192], [49, 1152, 192], [49, 1152, 320], [49, 320, 1280],
                         [1536, 64, 256], [1536, 256, 64], [1536, 2048, 512]]
    if let parsed = shapes("BOTTLENECK_GEMM_SHAPES") { list = parsed }
    var options = base
    options.threads = setting("BOTTLENECK_GEMM_THREADS") ?? 1
    for shape in list where shape.count == 3 {
        let (m, k, n) = (shape[0], shape[1], shape[2])
        let a = AlignedBuffer.copy(of: SyntheticFill.input(name: "gemm.a", shape: [m, k]))
        let c = AlignedBuffer.allocate(m * n)
        defer { AlignedBuffer.free(a); AlignedBuffer.free(c) }
        let wv = SyntheticFill.values(name: "gemm.w", kind: .weight, shape: [n, k])
        let bias = SyntheticFill.values(name: "gemm.b", kind: .bias, shape: [n])
        let copies = (0..<max(1, setting("BOTTLENECK_GEMM_COPIES") ?? 1)).map { _ in
            wv.withUnsafeBufferPointer { PackedWeights(rowsNK: $0.baseAddress!, n: n, k: k) }
        }
        // One product with weights `w`: a single `block` call on one thread, else `run`.
        func product(_ w: PackedWeights) {
            bias.withUnsafeBufferPointer { bp in
                if options.threads == 1 {
                    PackedGEMM.block(.matrix(a.baseAddress!, rowStride: k), row0: 0, rows: m, w: w,
                                     panelRange: 0..<w.panelCount, c: c.baseAddress!, ldc: n, bias: bp.baseAddress!,
                                     residual: nil, residualStride: 0, activation: .relu6, includeTail: true,
                                     options: options, tileMajor: options.tileMajor)
                } else {
                    PackedGEMM.run(.matrix(a.baseAddress!, rowStride: k), m: m, weights: w, c: c.baseAddress!, ldc: n,
                                   bias: bp.baseAddress!, residual: nil, residualStride: 0, activation: .relu6, options: options)
                }
            }
        }
        if copies.count > 1, setting("BOTTLENECK_GEMM_PAIRED") == 1 {
            // Copy 0 stays cached; the others are used in turn (read from memory once they outgrow
            // the caches).
            var resident: [Double] = [], streamed: [Double] = []
            // Untimed calls first: the first shape of a run otherwise also times the threads' start.
            for _ in 0..<20 { product(copies[0]) }
            for call in 0..<(setting("BOTTLENECK_GEMM_REPS") ?? 400) {
                var t0 = clock(cpuTime: false); product(copies[0]); resident.append(clock(cpuTime: false) - t0)
                t0 = clock(cpuTime: false); product(copies[1 + call % (copies.count - 1)]); streamed.append(clock(cpuTime: false) - t0)
            }
            let ratios = zip(streamed, resident).map { $0 / $1 }.sorted()
            let r = resident.sorted()[resident.count / 2], s = streamed.sorted()[streamed.count / 2]
            print(String(format: "gemm m %5d k %5d n %5d  resident %8.1f us %6.1f GFLOP/s  streamed %8.1f us %6.1f GFLOP/s  ratio %.3f",
                         m, k, n, r * 1e6, Double(2 * m * n * k) / r / 1e9, s * 1e6, Double(2 * m * n * k) / s / 1e9,
                         ratios[ratios.count / 2]))
            continue
        }
        var call = 0
        let reps = setting("BOTTLENECK_GEMM_REPS") ?? max(1, 20_000_000 / (m * n * k))
        var best = Double.infinity
        for _ in 0..<7 {
            let t0 = clock(cpuTime: options.threads == 1)
            for _ in 0..<reps {
                product(copies[call % copies.count])
                call += 1
            }
            best = min(best, (clock(cpuTime: options.threads == 1) - t0) / Double(reps))
        }
        print(String(format: "gemm m %5d k %5d n %5d  %8.1f us  %6.1f GFLOP/s", m, k, n, best * 1e6, Double(2 * m * n * k) / best / 1e9))
    }
}

/// Whole `Conv2D` layers on ResNet-50's shapes at a slice of 5 images (wall time, median of 9), or
/// with `BOTTLENECK_CONV_SINGLE=1` on one thread (thread CPU time, best of 9).
/// `BOTTLENECK_CONV_SHAPES=n:cin:cout:k:stride:hw,...`.
func conv(_ options: EngineOptions) {
    var list: [[Int]] = [[5, 256, 128, 1, 1, 56], [5, 128, 128, 3, 2, 56], [5, 128, 512, 1, 1, 28], [5, 256, 512, 1, 2, 56],
                         [5, 512, 128, 1, 1, 28], [5, 128, 128, 3, 1, 28], [5, 512, 256, 1, 1, 28], [5, 256, 256, 3, 2, 28],
                         [5, 256, 1024, 1, 1, 14], [5, 512, 1024, 1, 2, 28], [5, 1024, 256, 1, 1, 14], [5, 256, 256, 3, 1, 14],
                         [5, 1024, 512, 1, 1, 14], [5, 512, 512, 3, 2, 14], [5, 512, 2048, 1, 1, 7], [5, 1024, 2048, 1, 2, 14],
                         [5, 2048, 512, 1, 1, 7], [5, 512, 512, 3, 1, 7]]
    if let parsed = shapes("BOTTLENECK_CONV_SHAPES") { list = parsed }
    let single = ProcessInfo.processInfo.environment["BOTTLENECK_CONV_SINGLE"] == "1"
    var total = 0.0
    for shape in list where shape.count == 6 {
        let (n, cin, cout, k, s, hw) = (shape[0], shape[1], shape[2], shape[3], shape[4], shape[5])
        let x = SyntheticFill.input(name: "conv.x", shape: [n, hw, hw, cin])
        let w = SyntheticFill.values(name: "conv.w", kind: .weight, shape: [cout, cin, k, k])
        let b = SyntheticFill.values(name: "conv.b", kind: .bias, shape: [cout])
        let layer = w.withUnsafeBufferPointer {
            Conv2D(weightOIHW: $0.baseAddress!, outChannels: cout, inChannels: cin, kernelH: k, kernelW: k, stride: s,
                   padding: .symmetric(k / 2), bias: b, activation: .relu, expectedInput: (hw, hw), options: options)
        }
        let oh = (hw + 2 * (k / 2) - k) / s + 1
        var out = [Float](repeating: 0, count: n * oh * oh * cout)
        func pass() {
            x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
                layer.forward(input: xp.baseAddress!, batch: n, height: hw, width: hw, output: op.baseAddress!, options: options)
            } }
        }
        func measure() -> [Double] {
            pass()
            return (0..<9).map { _ in
                let t0 = clock(cpuTime: single)
                pass()
                return clock(cpuTime: single) - t0
            }
        }
        let times = single ? TensorThreads.withSingleThreadedKernels(measure) : measure()
        let t = single ? times.min()! : times.sorted()[times.count / 2]
        total += t
        let flops = Double(2 * n * oh * oh * cout * cin * k * k)
        let path = layer.usesWinograd ? (layer.usesDirect ? "both    " : "winograd") : "direct  "
        print(String(format: "conv n %d %4d->%4d k%d s%d %3dx%-3d %@  %8.3f ms  %6.1f GFLOP/s (direct-equivalent)",
                     n, cin, cout, k, s, hw, hw, path, t * 1e3, flops / t / 1e9))
    }
    print(String(format: "conv total %.3f ms", total * 1e3))
}

/// `DepthwiseConv2D` on EfficientNet-Lite0's shapes, single-threaded (a slice of 3 images, thread CPU
/// time, best of 7). `BOTTLENECK_DEPTHWISE_SHAPES=n:channels:k:stride:hw,...`.
func depthwise(_ options: EngineOptions) {
    var list: [[Int]] = [[3, 32, 3, 1, 112], [3, 96, 3, 2, 112], [3, 144, 3, 1, 56], [3, 144, 5, 2, 56], [3, 240, 5, 1, 28],
                         [3, 240, 3, 2, 28], [3, 480, 3, 1, 14], [3, 480, 5, 1, 14], [3, 672, 5, 1, 14], [3, 672, 5, 2, 14],
                         [3, 1152, 5, 1, 7], [3, 1152, 3, 1, 7]]
    if let parsed = shapes("BOTTLENECK_DEPTHWISE_SHAPES") { list = parsed }
    TensorThreads.withSingleThreadedKernels {
        var total = 0.0
        for shape in list where shape.count == 5 {
            let (n, c, k, s, hw) = (shape[0], shape[1], shape[2], shape[3], shape[4])
            let x = SyntheticFill.input(name: "dw.x", shape: [n, hw, hw, c])
            let w = SyntheticFill.values(name: "dw.w", kind: .weight, shape: [c, 1, k, k])
            let b = SyntheticFill.values(name: "dw.b", kind: .bias, shape: [c])
            let layer = w.withUnsafeBufferPointer {
                DepthwiseConv2D(weightC1HW: $0.baseAddress!, channels: c, kernelH: k, kernelW: k, stride: s,
                                padding: .same, bias: b, activation: .relu6)
            }
            let (oh, ow) = layer.outputSize(height: hw, width: hw)
            var out = [Float](repeating: 0, count: n * oh * ow * c)
            let reps = max(1, 20_000_000 / (n * layer.macs(height: hw, width: hw)))
            var best = Double.infinity
            for _ in 0..<7 {
                let t0 = clock(cpuTime: true)
                x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
                    for _ in 0..<reps {
                        layer.forward(input: xp.baseAddress!, batch: n, height: hw, width: hw, output: op.baseAddress!, options: options)
                    }
                } }
                best = min(best, (clock(cpuTime: true) - t0) / Double(reps))
            }
            total += best
            print(String(format: "depthwise n %d c %4d k%d s%d %3dx%-3d  %8.1f us  %6.1f GFLOP/s", n, c, k, s, hw, hw,
                         best * 1e6, Double(2 * layer.macs(height: hw, width: hw) * n) / best / 1e9))
        }
        print(String(format: "depthwise total %.1f us", total * 1e6))
    }
}

/// Winograd against the direct GEMM on ResNet's 3x3 stride-1 shapes, alternating single passes
/// (best of each). `BOTTLENECK_WINOGRAD_SHAPES=n:c:hw,...`, `..._THREADS`, `..._ROUNDS` (15), and the
/// planner's `..._BUDGET`, `..._STREAMED_BUDGET`, `..._CACHED`, `..._MIN_TILES`, `..._TASKS` (floats / tiles / tasks).
func winograd(_ base: EngineOptions) {
    var options = base
    if let t = setting("BOTTLENECK_WINOGRAD_THREADS") { options.threads = t }
    if let v = setting("BOTTLENECK_WINOGRAD_BUDGET") { options.winogradBlockBudget = v }
    if let v = setting("BOTTLENECK_WINOGRAD_STREAMED_BUDGET") { options.winogradStreamedBlockBudget = v }
    if let v = setting("BOTTLENECK_WINOGRAD_CACHED") { options.winogradCachedWeights = v }
    if let v = setting("BOTTLENECK_WINOGRAD_MIN_TILES") { options.winogradMinimumBlockTiles = v }
    if let v = setting("BOTTLENECK_WINOGRAD_TASKS") { options.winogradTasksPerThread = v }
    var list: [[Int]] = []
    for n in [5, 1] { for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] { list.append([n, c, hw]) } }
    if let parsed = shapes("BOTTLENECK_WINOGRAD_SHAPES") { list = parsed }
    let cpuTime = options.threads == 1
    for shape in list where shape.count == 3 {
        let (n, c, hw) = (shape[0], shape[1], shape[2])
        let x = SyntheticFill.input(name: "timing.x", shape: [n, hw, hw, c])
        let w = SyntheticFill.values(name: "timing.w", kind: .weight, shape: [c, c, 3, 3])
        let b = SyntheticFill.values(name: "timing.b", kind: .bias, shape: [c])
        let r = SyntheticFill.input(name: "timing.r", shape: [n, hw, hw, c])
        var out = [Float](repeating: 0, count: n * hw * hw * c)
        let layers = [ConvolutionAlgorithm.direct, .winograd].map { algorithm in
            w.withUnsafeBufferPointer {
                Conv2D(weightOIHW: $0.baseAddress!, outChannels: c, inChannels: c, kernelH: 3, kernelW: 3,
                       padding: .symmetric(1), bias: b, activation: .relu, algorithm: algorithm, options: options)
            }
        }
        var best = [Double.infinity, .infinity]
        for _ in 0..<(setting("BOTTLENECK_WINOGRAD_ROUNDS") ?? 15) {
            for (i, layer) in layers.enumerated() {
                let t0 = clock(cpuTime: cpuTime)
                x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in r.withUnsafeBufferPointer { rp in
                    layer.forward(input: xp.baseAddress!, batch: n, height: hw, width: hw, output: op.baseAddress!,
                                  residual: rp.baseAddress!, options: options)
                } } }
                best[i] = min(best[i], clock(cpuTime: cpuTime) - t0)
            }
        }
        let flops = Double(n * hw * hw * c * c * 9 * 2)
        let plan = layers[1].winograd!.plan(tiles: n * ((hw + 3) / 4) * ((hw + 3) / 4), threads: options.threads, options: options)
        print(String(format: "n %d c %3d %2dx%-2d  direct %7.3f ms (%5.1f GFLOP/s)  winograd %7.3f ms (%5.1f eff.)  x%.2f  plan %d tiles x %d blocks x %d groups",
                     n, c, hw, hw, best[0] * 1e3, flops / best[0] / 1e9, best[1] * 1e3, flops / best[1] / 1e9,
                     best[0] / best[1], plan.blockTiles, plan.blocks, plan.groups))
    }
}

/// A/B of a whole network inside one process: passes alternate between two networks built with a
/// switch off (A) and on (B); each B pass is compared with the A passes either side of it (the host's
/// speed drifts between processes, far less between neighbouring passes), and the two networks' first
/// outputs are compared bit for bit. Switch in `BOTTLENECK_NETWORK_AB` (the names in the `switch`
/// below, listed in Benchmarks/README.md); `..._MODEL` (efficientnet-lite0, synthetic weights,
/// pooled features), `..._BATCH` (32), `..._THREADS` (2), `..._PASSES` (40 per side).
func networkAB(_ base: EngineOptions) throws {
    let env = ProcessInfo.processInfo.environment
    let name = env["BOTTLENECK_NETWORK_AB"] ?? "fusedBlocks"
    let model = env["BOTTLENECK_NETWORK_AB_MODEL"] ?? "efficientnet-lite0"
    let batch = setting("BOTTLENECK_NETWORK_AB_BATCH") ?? 32
    let passes = setting("BOTTLENECK_NETWORK_AB_PASSES") ?? 40
    var on = base
    on.threads = setting("BOTTLENECK_NETWORK_AB_THREADS") ?? 2
    var off = on
    switch name {
    case "tileMajor": off.tileMajor = false
    case "fusedBlocks": off.fusedBlocks = false
    case "concurrentImages": off.concurrentImages = false
    case "winograd": off.winograd = false
    case "hugePages": off.hugePages = false
    case "residualInPlace": off.residualInPlace = false
    case "sharedOperand": off.sharedOperand = false
    case "prefetch": off.prefetchTiles = 0
    case "prefetchWeights": off.prefetchWeights = false
    case "prefetchAllOutputs": off.prefetchMinimumBytes = 0
    case "twoEndedPieces": break
    case "groupMajorTasks": off.groupMajorTasks = false
    case "taperedPieces": off.taperedPieces = false
    case "fiveRowTiles": break
    case "meetingSteps": off.meetingSteps = false
    case "walkFusion": off.walkFusion = false
    case "stemFusion": off.stemFusion = false
    case "taperedMeeting": off.taperedMeeting = false
    case "narrowRowBlocks": off.narrowRowBlocks = false
    default: throw MicrobenchError("unknown switch \(name)")
    }
    // Process-wide switches flip before each pass of the network they belong to.
    let twoEnded = name == "twoEndedPieces", fiveRows = name == "fiveRowTiles"
    let nets = try [off, on].map { try Network(syntheticModel: model, cut: .cut(1), pool: .avg, options: $0) }
    let size = nets[0].architecture.inputSize
    let input = SyntheticFill.input(name: "ab.x", shape: [batch, 3, size, size])
    var output = [Float](repeating: 0, count: batch * nets[0].outputShape.count)
    func pass(_ net: Network) -> Double {
        if twoEnded { TensorThreads.twoEndedPieces.store(net === nets[1], ordering: .relaxed) }
        if fiveRows { RowTiling.usesFiveRowTiles.store(net === nets[1], ordering: .relaxed) }
        let t0 = DispatchTime.now().uptimeNanoseconds
        input.withUnsafeBufferPointer { x in output.withUnsafeMutableBufferPointer { y in
            net.forward(x.baseAddress!, batch: batch, height: size, width: size, into: y.baseAddress!)
        } }
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }
    _ = pass(nets[0])
    let offOutput = output
    _ = pass(nets[1])
    // Every switch keeps the results bit for bit.
    let identical = offOutput == output
    var a: [Double] = [], b: [Double] = []
    for _ in 0..<passes { a.append(pass(nets[0])); b.append(pass(nets[1])) }
    a.append(pass(nets[0]))
    // B's time against the mean of the A passes either side of it: < 1 means the switch on is faster.
    let ratios = b.indices.map { i in b[i] / ((a[i] + a[i + 1]) / 2) }.sorted()
    let logs = ratios.map { Foundation.log($0) }
    let mean = logs.reduce(0, +) / Double(logs.count)
    let sd = (logs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(max(1, logs.count - 1))).squareRoot()
    let half = 2 * sd / Double(logs.count).squareRoot()
    print(String(format: "%@ %@ batch %d, %d threads, %d pass pairs: on/off time median %.4f, geometric mean %.4f (95%% CI %.4f-%.4f); off median %.1f ms, on median %.1f ms; outputs %@",
                 model, name, batch, on.threads, passes, ratios[ratios.count / 2], Foundation.exp(mean),
                 Foundation.exp(mean - half), Foundation.exp(mean + half), a.sorted()[a.count / 2] * 1e3, b.sorted()[b.count / 2] * 1e3,
                 identical ? "identical" : "DIFFER"))
}

struct MicrobenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

let benches: [String: (EngineOptions) throws -> Void] = [
    "gemm": gemm, "conv": conv, "depthwise": depthwise, "winograd": winograd, "network-ab": networkAB,
]
let arguments = CommandLine.arguments.dropFirst()
guard let which = arguments.first, let bench = benches[which] else {
    FileHandle.standardError.write(Data("usage: bottleneck-microbench \(benches.keys.sorted().joined(separator: "|"))\n".utf8))
    exit(64)
}
do {
    try bench(EngineOptions.default)
} catch {
    FileHandle.standardError.write(Data("bottleneck-microbench: \(error)\n".utf8))
    exit(1)
}
