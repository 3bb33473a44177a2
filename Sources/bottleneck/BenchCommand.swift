import ArgumentParser
import BottleneckModels
import BottleneckTensor
import Foundation

/// `bottleneck bench`: forward-pass speed of a model with synthetic weights.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time the forward pass (to the chosen stage) with synthetic weights of the right shapes.",
        discussion: """
        Weights are generated deterministically (no files needed) unless --weights names a checkpoint (same speed; used by Benchmarks/peers for real EfficientNet-Lite0 weights). Inputs are random in [-2, 2). After --warmup untimed passes, --iterations passes are timed (more, up to 4x, until they add up to --min-seconds); images/s uses the median pass. Peak RSS is the process's maximum resident set (VmHWM on Linux, else getrusage).

        GFLOP/s counts 2 FLOPs per multiply-accumulate of the convolutions and linear layers that run, as a direct convolution would (Winograd layers do fewer multiplies, so a ResNet's rate can exceed the machine's sgemm peak).

        Switches for timing one engine path against another in the same binary (every path gives the same results): --unfused-blocks runs MBConv blocks layer by layer; --layer-parallel splits every layer over the threads even when the batch is large enough to run slices of images concurrently (the default from two images per thread for networks whose weights fit in cache, such as EfficientNet-Lite; --profile also implies it). The environment variables BOTTLENECK_WINOGRAD, BOTTLENECK_TILE_MAJOR, BOTTLENECK_PREFETCH, BOTTLENECK_PREFETCH_WEIGHTS, BOTTLENECK_HUGE_PAGES, BOTTLENECK_RESIDUAL_IN_PLACE, BOTTLENECK_SHARED_OPERAND, BOTTLENECK_CONCURRENT_IMAGES and BOTTLENECK_PASS_SPIN set to 0 turn off, respectively, Winograd 3x3 convolutions, the tile-major order of 1x1 layers, the GEMM's prefetching of output lines, its prefetching of the next weight panel, huge pages, writing residual outputs over their skip tensors, the shared copy of a column-split product's operand, image-parallel slices, and kernel threads spinning between the layers of a pass (they then park after 0.5 ms as between passes).

        The engine's cache budgets follow this CPU's caches (read from the operating system; --json reports them).
        """)

    @Option(help: "Model name (see `bottleneck models`).")
    var model: String

    @Option(help: "Images per forward pass.")
    var batch: Int = 1

    @OptionGroup var threadOptions: ThreadOptions

    @OptionGroup var stage: StageOptions

    @Option(help: "Reduce a spatial output.")
    var pool: Pooling = .none

    @Option(help: ArgumentHelp("Checkpoint (.pth or .safetensors) to time instead of synthetic weights (same speed; for side-by-side runs with real weights).", valueName: "path"))
    var weights: String?

    @Option(help: "Input side in pixels (default: the model's native size).")
    var size: Int?

    @Option(help: "Timed passes.")
    var iterations: Int = 10

    @Option(help: "Untimed passes first.")
    var warmup: Int = 2

    @Option(help: "Keep timing passes after --iterations until they add up to this many seconds, at most 4x --iterations passes (the rule Benchmarks/peers applies to every engine).")
    var minSeconds: Double = 0

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @Option(help: "Activation budget per batch slice in MiB (default 8 for image-parallel slices, 64 for layer-parallel ones; larger = bigger slices).")
    var sliceMib: Int?

    @Flag(help: "Run MBConv blocks layer by layer instead of fused (A/B timing of the fused kernel).")
    var unfusedBlocks = false

    @Flag(help: "Split every layer over the threads instead of running slices of the batch concurrently (A/B timing).")
    var layerParallel = false

    @Flag(help: "Also print the time spent in each stage and in each kind of layer (convolution, depthwise, fused MBConv block, linear) with its GFLOP/s (averages over the timed passes; layers split over the threads, not image-parallel).")
    var profile = false

    func validate() throws {
        guard ModelZoo.names.contains(model) else {
            throw ValidationError("unknown model '\(model)'; choose one of: \(ModelZoo.names.joined(separator: ", "))")
        }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard iterations >= 1, warmup >= 0 else { throw ValidationError("--iterations must be >= 1 and --warmup >= 0") }
        guard minSeconds >= 0 else { throw ValidationError("--min-seconds must be >= 0") }
        if let size, size < 32 { throw ValidationError("--size must be at least 32 pixels") }
        if let weights, !FileManager.default.fileExists(atPath: weights) { throw ValidationError("--weights \(weights): no such file") }
        try ValueRanges.check(batch, ValueRanges.batch, "--batch")
        try ValueRanges.check(iterations, ValueRanges.iterations, "--iterations")
        try ValueRanges.check(warmup + 1, ValueRanges.iterations, "--warmup + 1")
        guard minSeconds.isFinite, minSeconds <= 86_400 else { throw ValidationError("--min-seconds must be at most 86400 (one day)") }
        if let sliceMib { try ValueRanges.check(sliceMib, 1...65_536, "--slice-mib") }
        // The input batch alone is batch x 3 x size^2 float32s; refuse more than 4 GiB of it before allocating.
        if let size {
            try ValueRanges.check(size, 32...8192, "--size")
            // Both ranges were checked above, so the product fits in Int.
            guard batch * 3 * size * size * 4 <= 4 << 30 else {
                throw ValidationError("--batch \(batch) at --size \(size) needs more than 4 GiB of input; use a smaller batch or size")
            }
        }
    }

    func run() throws {
        var options = threadOptions.configuredEngine()
        if let sliceMib { (options.sliceBudget, options.layerParallelSliceBudget) = (sliceMib << 18, sliceMib << 18) }
        if unfusedBlocks { options.fusedBlocks = false }
        if layerParallel { options.concurrentImages = false }
        let arch = try ModelZoo.architecture(model)
        let selection = stage.selection(defaultCut: 0)
        let loadStart = Date()
        let net: Network
        if let weights {
            net = try PretrainedModel.load(model: model, weights: URL(fileURLWithPath: weights), selection: selection,
                                           pool: pool, options: options).network
        } else {
            net = try Network(architecture: arch, weights: SyntheticWeights(architecture: arch), cut: selection,
                              pool: pool, sourceName: "synthetic weights", options: options)
        }
        let loadSeconds = Date().timeIntervalSince(loadStart)
        let side = size ?? arch.inputSize
        let input = SyntheticFill.input(name: "bench", shape: [batch, 3, side, side])
        var output = [Float](repeating: 0, count: batch * net.outputShape(height: side, width: side).count)
        var times: [Double] = []
        input.withUnsafeBufferPointer { inp in
            output.withUnsafeMutableBufferPointer { out in
                var i = 0, timedSeconds = 0.0
                while times.count < iterations || (timedSeconds < minSeconds && times.count < 4 * iterations) {
                    net.recordStageTimes = profile && i >= warmup
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    net.forward(inp.baseAddress!, batch: batch, height: side, width: side, into: out.baseAddress!)
                    let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                    if i >= warmup { times.append(dt); timedSeconds += dt }
                    i += 1
                }
            }
        }
        times.sort()
        let median = times[times.count / 2], best = times[0]
        let flops = Double(net.flops(height: side, width: side)) * Double(batch)
        let peakRSS = peakResidentBytes()
        let result = BenchResult(
            model: model, stage: net.stageName, batch: batch, threads: options.threads, size: side,
            images_per_second: Double(batch) / median, best_images_per_second: Double(batch) / best,
            median_seconds: median, gflops: flops / median / 1e9, flops_per_image: Int(flops) / batch,
            peak_rss_bytes: peakRSS, load_seconds: loadSeconds, iterations: times.count, blas_core: TensorThreads.blasCoreName,
            output_shape: [batch] + net.outputShape(height: side, width: side).dimensions,
            slice: net.firstSlice(height: side, width: side, batch: batch),
            cache_bytes: [options.cache.l1Data, options.cache.l2, options.cache.l3])
        if profile {
            let total = net.stageSeconds.reduce(0, +)
            for (i, t) in net.stageSeconds.enumerated() where t > 0 {
                FileHandle.standardError.write(String(format: "  %-10@ %8.2f ms/pass  %5.1f%%\n", arch.stages[i].name,
                                                      t * 1000 / Double(times.count), 100 * t / total).data(using: .utf8)!)
            }
            for row in net.layerTimes {
                let name = row.layer.padding(toLength: max(44, row.layer.count), withPad: " ", startingAt: 0)
                FileHandle.standardError.write(String(format: "  %@ %8.2f ms/pass  %5.1f%%  %6.1f GFLOP/s\n", name,
                                                      row.seconds * 1000 / Double(times.count), 100 * row.seconds / total,
                                                      Double(row.flops) / row.seconds / 1e9).data(using: .utf8)!)
            }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
        } else {
            print(String(format: "%@ to %@ %dx%d batch %d, %d threads (%@): %.1f images/s (median %.1f ms, best %.1f images/s), %.1f GFLOP/s, peak RSS %.0f MB, load %.2fs",
                         model, net.stageName, side, side, batch, options.threads, result.blas_core, result.images_per_second,
                         median * 1000, result.best_images_per_second, result.gflops, Double(peakRSS) / 1e6, loadSeconds))
        }
    }
}

/// The JSON record of one benchmark run (keys are part of the CLI's interface).
struct BenchResult: Codable {
    let model: String, stage: String
    let batch: Int, threads: Int, size: Int
    let images_per_second: Double, best_images_per_second: Double, median_seconds: Double
    let gflops: Double, flops_per_image: Int
    let peak_rss_bytes: Int
    let load_seconds: Double
    let iterations: Int
    let blas_core: String
    let output_shape: [Int]
    let slice: Int
    /// L1 data, L2 and per-core L3 bytes the engine's budgets were derived from.
    let cache_bytes: [Int]
}

/// Peak resident set of this process in bytes. Linux: `VmHWM` from /proc/self/status, because
/// getrusage's `ru_maxrss` survives exec and so reports the parent's peak when the parent was larger
/// (e.g. a Python harness); elsewhere (or if /proc is missing) `ru_maxrss`.
func peakResidentBytes() -> Int {
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
       let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
       let kb = Int(line.split(separator: " ").dropFirst().first ?? "") {
        return kb * 1024
    }
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Int(usage.ru_maxrss) * 1024  // Linux reports kilobytes
}
