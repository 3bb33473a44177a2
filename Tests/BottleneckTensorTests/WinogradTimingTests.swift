import Foundation
import XCTest
@testable import BottleneckTensor

/// Layer-level timing of Winograd against the direct GEMM on ResNet's 3x3 stride-1 shapes (the
/// measurements behind `WinogradConvolution`'s planner constants and `Conv2D`'s selection rule).
/// Skipped unless `BOTTLENECK_WINOGRAD_TIMING=1`: it takes tens of seconds and its numbers depend on
/// the machine. Run it alone:
///
///     BOTTLENECK_WINOGRAD_TIMING=1 swift test -c release -Xswiftc -enable-testing --skip-build \
///         --filter WinogradTimingTests
///
/// Optional environment: `BOTTLENECK_WINOGRAD_SHAPES=n:c:hw,...` (batch, channels in = out, side),
/// `..._THREADS` (single-threaded runs time the thread's CPU time, which excludes preemption by
/// other processes), `..._ROUNDS` (alternating rounds, default 15; best of each is kept),
/// `..._ONLY=1` (Winograd only, so its weights stay warm), and overrides of the planner's
/// `..._BUDGET`, `..._STREAMED_BUDGET`, `..._CACHED`, `..._MIN_TILES`, `..._TASKS`.
final class WinogradTimingTests: XCTestCase {
    func testTiming() throws {
        let env = ProcessInfo.processInfo.environment
        guard env["BOTTLENECK_WINOGRAD_TIMING"] == "1" else { throw XCTSkip("set BOTTLENECK_WINOGRAD_TIMING=1") }
        func setting(_ name: String) -> Int? { env["BOTTLENECK_WINOGRAD_" + name].flatMap(Int.init) }
        let saved = (WinogradConvolution.blockBudget, WinogradConvolution.streamedBlockBudget,
                     WinogradConvolution.cachedWeights, WinogradConvolution.minimumBlockTiles,
                     WinogradConvolution.tasksPerThread, TensorThreads.count)
        defer {
            (WinogradConvolution.blockBudget, WinogradConvolution.streamedBlockBudget, WinogradConvolution.cachedWeights,
             WinogradConvolution.minimumBlockTiles, WinogradConvolution.tasksPerThread) = (saved.0, saved.1, saved.2, saved.3, saved.4)
            TensorThreads.configure(threads: saved.5)
        }
        if let t = setting("THREADS") { TensorThreads.configure(threads: t) }
        if let v = setting("BUDGET") { WinogradConvolution.blockBudget = v }
        if let v = setting("STREAMED_BUDGET") { WinogradConvolution.streamedBlockBudget = v }
        if let v = setting("CACHED") { WinogradConvolution.cachedWeights = v }
        if let v = setting("MIN_TILES") { WinogradConvolution.minimumBlockTiles = v }
        if let v = setting("TASKS") { WinogradConvolution.tasksPerThread = v }
        // ResNet-50 at 224: micro-batches of 5 images (16 MiB activation slices) and batch 1.
        var shapes: [(n: Int, c: Int, hw: Int)] = []
        for n in [5, 1] { for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] { shapes.append((n, c, hw)) } }
        if let parsed = timingShapes("BOTTLENECK_WINOGRAD_SHAPES") { shapes = parsed.map { p in (p[0], p[1], p[2]) } }
        let cpuTime = TensorThreads.count == 1
        func now() -> Double { timingClock(cpuTime: cpuTime) }
        for (n, c, hw) in shapes {
            let x = SyntheticFill.input(name: "timing.x", shape: [n, hw, hw, c])
            let w = SyntheticFill.values(name: "timing.w", kind: .weight, shape: [c, c, 3, 3])
            let b = SyntheticFill.values(name: "timing.b", kind: .bias, shape: [c])
            let r = SyntheticFill.input(name: "timing.r", shape: [n, hw, hw, c])
            var out = [Float](repeating: 0, count: n * hw * hw * c)
            let convs = [ConvolutionAlgorithm.direct, .winograd].map { algorithm in
                w.withUnsafeBufferPointer {
                    Conv2D(weightOIHW: $0.baseAddress!, outChannels: c, inChannels: c, kernelH: 3, kernelW: 3,
                           padding: .symmetric(1), bias: b, activation: .relu, algorithm: algorithm)
                }
            }
            // Alternating single passes, best of each: the machine may be shared, and each pass then
            // finds its weights cold, as in a network.
            var best = [Double.infinity, .infinity]
            for _ in 0..<(setting("ROUNDS") ?? 15) {
                for (i, conv) in convs.enumerated() where env["BOTTLENECK_WINOGRAD_ONLY"] != "1" || i == 1 {
                    let t0 = now()
                    x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in r.withUnsafeBufferPointer { rp in
                        conv.forward(input: xp.baseAddress!, batch: n, height: hw, width: hw, output: op.baseAddress!,
                                     residual: rp.baseAddress!)
                    } } }
                    best[i] = min(best[i], now() - t0)
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
