import Foundation

/// Data-cache sizes of the CPU the engine runs on, in bytes per core: the last level as each core's
/// share of it (its size over the CPUs that share it).
///
/// Read once per process from the operating system (`/sys/devices/system/cpu/cpu0/cache/index*/`
/// on Linux, `sysctl hw.l1dcachesize`/`hw.l2cachesize`/`hw.l3cachesize` on macOS); any level it
/// cannot read takes ``fallback``'s value.
public struct CacheSizes: Sendable, Equatable {
    /// Level-1 data cache.
    public var l1Data: Int
    /// Level-2 (unified) cache.
    public var l2: Int
    /// One core's share of the last-level cache.
    public var l3: Int

    public init(l1Data: Int, l2: Int, l3: Int) {
        self.l1Data = l1Data
        self.l2 = l2
        self.l3 = l3
    }

    /// The sizes the engine's budgets were first set for (32 KiB L1d, 512 KiB L2, 16 MiB of L3 per core).
    public static let fallback = CacheSizes(l1Data: 32 << 10, l2: 512 << 10, l3: 16 << 20)

    /// This machine's caches (``fallback`` where the system does not say).
    public static let detected: CacheSizes = {
        var sizes = fallback
        #if os(Linux)
        for index in 0..<8 {
            let dir = "/sys/devices/system/cpu/cpu0/cache/index\(index)/"
            guard let level = readSysfs(dir + "level").flatMap(Int.init),
                  let type = readSysfs(dir + "type"), let total = readSysfs(dir + "size").flatMap(parseSize) else { continue }
            let sharing = readSysfs(dir + "shared_cpu_list").map(cpuCount) ?? 1
            let size = total / max(1, sharing)
            switch (level, type) {
            case (1, "Data"): sizes.l1Data = size
            case (2, _) where type != "Instruction": sizes.l2 = size
            case (3, _) where type != "Instruction": sizes.l3 = size
            default: break
            }
        }
        #elseif os(macOS)
        func sysctl(_ name: String) -> Int? {
            var value: Int64 = 0
            var length = MemoryLayout<Int64>.size
            return sysctlbyname(name, &value, &length, nil, 0) == 0 && value > 0 ? Int(value) : nil
        }
        sizes.l1Data = sysctl("hw.l1dcachesize") ?? sizes.l1Data
        sizes.l2 = sysctl("hw.l2cachesize") ?? sizes.l2
        sizes.l3 = sysctl("hw.l3cachesize") ?? sizes.l3
        #endif
        return sizes
    }()

    /// A sysfs size such as `32K`, `1024K` or `32M` in bytes.
    static func parseSize(_ text: String) -> Int? {
        let unit: Int
        var digits = Substring(text)
        switch text.last {
        case "K": unit = 1 << 10; digits = digits.dropLast()
        case "M": unit = 1 << 20; digits = digits.dropLast()
        case "G": unit = 1 << 30; digits = digits.dropLast()
        default: unit = 1
        }
        guard let n = Int(digits), n > 0 else { return nil }
        return n * unit
    }

    /// The number of CPUs in a sysfs CPU list such as `0-3,8-11` or `5`.
    static func cpuCount(_ list: String) -> Int {
        list.split(separator: ",").reduce(0) { total, part in
            let bounds = part.split(separator: "-").compactMap { Int($0) }
            return total + (bounds.count == 2 ? max(0, bounds[1] - bounds[0] + 1) : bounds.count)
        }
    }

    private static func readSysfs(_ path: String) -> String? {
        (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Every setting of the inference engine, as one value passed to the network and from it to each
/// kernel (like ncnn's `Option`): thread count, which fast paths run, and the cache-derived budgets.
///
/// All paths give identical results; the switches exist to time one path against another. Two
/// networks in one process may use different options. The budgets follow ``cache`` (detected at
/// start-up); docs/ENGINE.md says how each was measured and how to re-measure it.
public struct EngineOptions: Sendable, Equatable {
    /// Kernel threads (the caller included); at least 1.
    public var threads: Int
    /// The cache sizes the budgets below derive from.
    public var cache: CacheSizes

    /// 3x3 stride-1 convolutions may run as Winograd F(4x4, 3x3) (`Conv2D`'s `.automatic`).
    public var winograd = true
    /// 1x1 convolution layers run tile-major (`PackedGEMM.tileMajorBlock`) instead of panel-major.
    public var tileMajor = true
    /// EfficientNet/MobileNet MBConv blocks on large maps run fused (`InvertedResidual`).
    public var fusedBlocks = true
    /// Large batches of networks whose weights fit in cache run as concurrent image slices.
    public var concurrentImages = true
    /// A residual block's last convolution writes over the skip tensor it adds (when that dies there).
    public var residualInPlace = true
    /// Buffers of 2 MiB or more ask for transparent huge pages.
    public var hugePages = true
    /// A column-split product gathers its operand once for all column groups.
    public var sharedOperand = true
    /// Convolutions with few input channels read their windows in place instead of gathering them.
    public var windowReads = true
    /// Micro-tiles ahead that GEMM output/skip lines are prefetched (0: none).
    public var prefetchTiles = 1
    /// GEMM strips and tile-major groups prefetch the next weight panel into L2 while they run on the
    /// current one, one line per reduction step of the first micro-tile: at batch 1 weights are read
    /// from memory once per pass, and the hardware prefetcher does not run far enough ahead of one
    /// panel row per few cycles.
    public var prefetchWeights = true
    /// Products split by rows and column groups whose weights outweigh their rows (`n > m`, batch-1
    /// late layers) number their tasks group by group, so that the caller (taking tasks from the
    /// front) and the workers (from the back) each read their own share of the weights from memory.
    public var groupMajorTasks = true
    /// GEMM and Winograd tasks split over threads in pieces that shrink toward where the caller's
    /// share (taken from the front) meets the workers' (taken from the back), instead of equal
    /// pieces (`TaperedPieces`): the thread done first then waits for a small piece, not a quarter share.
    public var taperedPieces = true
    /// A fused MBConv block on one image and two threads runs as two walks over its output rows, one
    /// down from the top and one up from the bottom, a step at a time until they meet, instead of
    /// four bands: neither thread waits for more than a step of the other, and only the meeting point
    /// recomputes expanded rows.
    public var meetingSteps = true
    /// With `meetingSteps`, a block on one image fuses when each walk gets at least two windows' height
    /// of output rows, instead of when four bands would.
    public var walkFusion = true
    /// A stem convolution runs fused into the MBConv block after it when that block has no expansion
    /// (`InvertedResidual` with the stem as its expansion): the stem's output never goes to memory.
    public var stemFusion = true
    /// With `meetingSteps`, the walks take half of the rows left, not a full step, once fewer than
    /// two steps are left: the walk done first then waits for a short step, not a whole one.
    public var taperedMeeting = true
    /// Products of at most 8 weight panels (128 output columns) on more than one thread, whose rows
    /// split into several blocks, use blocks of half the usual rows: their pieces, a panel of a row
    /// block at the smallest, are then half as tall where the threads' shares meet.
    public var narrowRowBlocks = true
    /// Smallest GEMM output (bytes) whose lines are prefetched: about what outlives the caches
    /// between layers.
    public var prefetchMinimumBytes = 8 << 20

    /// How long an idle kernel thread spins for the next job while a forward pass runs before it
    /// parks (`TensorThreads.duringPass`; between passes it parks after 0.5 ms, leaving the cores to
    /// decoders). A thread parked mid-pass gives its core to whatever else is runnable, a niced
    /// process too, and then has to be woken for the next layer. 5 ms outlasts the caller losing its
    /// core for one scheduler slice (about 3 ms) and bounds what a single-threaded stretch of a
    /// pass (OpenBLAS's `Linear` layers, on OpenBLAS's own threads) can waste. 0: park as between passes.
    public var passSpinSeconds = 0.005
    /// Guided self-scheduling of image-parallel batches: a thread coming free takes at most
    /// 1 / (`imageUnitShares` x threads) of the images not yet claimed, at least 1 and at most the
    /// slice size (`Network.microBatch`). Units start as whole slices and end as single images, so a
    /// thread that lost its core holds the others back by about one image's pass, not a slice's.
    public var imageUnitShares = 2

    /// Activation floats per image-parallel slice (a slice's largest tensor stays in the caches).
    public var sliceBudget: Int
    /// Activation floats per slice when each layer is split over the threads.
    public var layerParallelSliceBudget: Int

    /// Weight bytes one tile-major pass of tiles runs against: half of L2.
    public var tileMajorWeightBytes: Int
    /// Floats of one Winograd task's transformed input block (its output block is about as large):
    /// L2's size in bytes, so both stay in or near L2 between the transforms and the GEMMs.
    public var winogradBlockBudget: Int
    /// `winogradBlockBudget` for layers whose transformed weights are streamed from memory.
    public var winogradStreamedBlockBudget: Int
    /// Transformed weight floats up to which re-reading them once per block is cheap (cached).
    public var winogradCachedWeights: Int
    /// Smallest Winograd block (tiles) the planner cuts to make more tasks.
    public var winogradMinimumBlockTiles = 24
    /// Winograd tasks per thread the planner aims for.
    public var winogradTasksPerThread = 2

    /// Options for `threads` threads on a CPU with `cache`; budgets derived from the cache sizes.
    public init(threads: Int = EngineOptions.availableCores, cache: CacheSizes = .detected) {
        self.threads = max(1, threads)
        self.cache = cache
        let floats = MemoryLayout<Float>.stride
        sliceBudget = cache.l3 / 2 / floats
        layerParallelSliceBudget = 4 * cache.l3 / floats
        tileMajorWeightBytes = cache.l2 / 2
        winogradBlockBudget = cache.l2 / floats
        winogradStreamedBlockBudget = 4 * cache.l2 / floats
        winogradCachedWeights = cache.l3 / 4 / floats
    }

    /// The options every network and kernel uses unless given others: all cores, this machine's caches.
    public static let `default` = EngineOptions()

    /// Cores this process may run on (its CPU affinity mask on Linux, which `taskset`, cgroups and
    /// Slurm's CPU binding set; the active processor count elsewhere).
    public static let availableCores: Int = {
        #if os(Linux)
        // The kernel's view of this process's affinity mask, e.g. "Cpus_allowed_list:\t0-3,8".
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) {
            let count = CacheSizes.cpuCount(line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces))
            if count > 0 { return count }
        }
        #endif
        return ProcessInfo.processInfo.activeProcessorCount
    }()

    /// Kernel threads for work started on the calling thread: 1 inside
    /// `TensorThreads.withSingleThreadedKernels` (and so inside image-parallel slices), else `threads`.
    public var workers: Int { TensorThreads.isSingleThreadedHere ? 1 : threads }
}
