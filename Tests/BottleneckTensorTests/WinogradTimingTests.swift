import Foundation
import XCTest
@testable import BottleneckTensor

/// Layer-level timing of Winograd against the direct GEMM on ResNet's 3x3 stride-1 shapes, for
/// tuning `WinogradConvolution.blockBudget` / `minimumBlockTiles` and `Conv2D.winogradMinimumChannels`.
/// Skipped unless `BOTTLENECK_WINOGRAD_TIMING=1` (it takes tens of seconds and its numbers depend
/// on the machine). `BOTTLENECK_WINOGRAD_BUDGET` / `BOTTLENECK_WINOGRAD_MIN_TILES` override the
/// planner's constants; `BOTTLENECK_WINOGRAD_SHAPES` picks shapes as `n:c:hw,...`.
final class WinogradTimingTests: XCTestCase {
    func testTiming() throws {
        let env = ProcessInfo.processInfo.environment
        guard env["BOTTLENECK_WINOGRAD_TIMING"] == "1" else { throw XCTSkip("set BOTTLENECK_WINOGRAD_TIMING=1") }
        if let t = env["BOTTLENECK_WINOGRAD_THREADS"].flatMap(Int.init) { TensorThreads.configure(threads: t) }
        defer { TensorThreads.configure(threads: ProcessInfo.processInfo.activeProcessorCount) }
        if let b = env["BOTTLENECK_WINOGRAD_BUDGET"].flatMap(Int.init) { WinogradConvolution.blockBudget = b }
        if let b = env["BOTTLENECK_WINOGRAD_STREAMED_BUDGET"].flatMap(Int.init) { WinogradConvolution.streamedBlockBudget = b }
        if let t = env["BOTTLENECK_WINOGRAD_TASKS"].flatMap(Int.init) { WinogradConvolution.tasksPerThread = t }
        if let c = env["BOTTLENECK_WINOGRAD_CACHED"].flatMap(Int.init) { WinogradConvolution.cachedWeights = c }
        if let m = env["BOTTLENECK_WINOGRAD_MIN_TILES"].flatMap(Int.init) { WinogradConvolution.minimumBlockTiles = m }
        // ResNet-50 at 224: micro-batches of 5 images (16 MiB activation slices) and batch 1.
        var shapes: [(n: Int, c: Int, hw: Int)] = []
        for n in [5, 1] { for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] { shapes.append((n, c, hw)) } }
        if let s = env["BOTTLENECK_WINOGRAD_SHAPES"] {
            shapes = s.split(separator: ",").map { item in
                let p = item.split(separator: ":").map { Int($0)! }
                return (p[0], p[1], p[2])
            }
        }
        // Single-threaded runs use the thread's CPU time, which does not count time preempted by
        // other processes; parallel runs use wall time.
        let cpuTime = TensorThreads.count == 1
        func now() -> Double {
            var ts = timespec()
            clock_gettime(cpuTime ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
        }
        for (n, c, hw) in shapes {
            let x = SyntheticFill.input(name: "timing.x", shape: [n, hw, hw, c])
            let w = SyntheticFill.values(name: "timing.w", kind: .weight, shape: [c, c, 3, 3])
            let b = SyntheticFill.values(name: "timing.b", kind: .bias, shape: [c])
            let r = SyntheticFill.input(name: "timing.r", shape: [n, hw, hw, c])
            var out = [Float](repeating: 0, count: n * hw * hw * c)
            var best: [Double] = []
            let convs = [ConvolutionAlgorithm.direct, .winograd].map { algorithm in
                w.withUnsafeBufferPointer {
                    Conv2D(weightOIHW: $0.baseAddress!, outChannels: c, inChannels: c, kernelH: 3, kernelW: 3,
                           padding: .symmetric(1), bias: b, activation: .relu, algorithm: algorithm)
                }
            }
            let reps = 1
            best = [.infinity, .infinity]
            // Alternating rounds, best of each: the machine is shared, so load changes between rounds.
            for _ in 0..<(Int(env["BOTTLENECK_WINOGRAD_ROUNDS"] ?? "") ?? 15) {
                for (i, conv) in convs.enumerated() where env["BOTTLENECK_WINOGRAD_ONLY"] != "1" || i == 1 {
                    let t0 = now()
                    for _ in 0..<reps {
                        x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in r.withUnsafeBufferPointer { rp in
                            conv.forward(input: xp.baseAddress!, batch: n, height: hw, width: hw, output: op.baseAddress!,
                                         residual: rp.baseAddress!)
                        } } }
                    }
                    best[i] = min(best[i], (now() - t0) / Double(reps))
                }
            }
            let flops = Double(n * hw * hw * c * c * 9 * 2)
            let plan = convs[1].winograd!.plan(tiles: n * ((hw + 3) / 4) * ((hw + 3) / 4), threads: TensorThreads.count)
            print(String(format: "n %d c %3d %2dx%-2d  direct %7.3f ms (%5.1f GFLOP/s)  winograd %7.3f ms (%5.1f eff.)  x%.2f  plan %d tiles x %d blocks x %d groups",
                         n, c, hw, hw, best[0] * 1e3, flops / best[0] / 1e9, best[1] * 1e3, flops / best[1] / 1e9,
                         best[0] / best[1], plan.blockTiles, plan.blocks, plan.groups))
        }
    }
}
