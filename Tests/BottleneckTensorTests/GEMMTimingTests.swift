import XCTest
import Foundation
@testable import BottleneckTensor

/// The shapes an opt-in timing test reads from environment variable `name` (`a:b:c,d:e:f`: one shape
/// per comma, its sizes split by colons), or nil when it is unset.
func timingShapes(_ name: String) -> [[Int]]? {
    ProcessInfo.processInfo.environment[name].map { list in
        list.split(separator: ",").map { item in item.split(separator: ":").map { Int($0)! } }
    }
}

/// Seconds on the calling thread's CPU-time clock (`cpuTime`: single-threaded timings, steadier on a
/// shared host) or on the monotonic wall clock.
func timingClock(cpuTime: Bool) -> Double {
    var ts = timespec()
    clock_gettime(cpuTime ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Single-threaded timing of `PackedGEMM.block` on the 1x1-convolution shapes of EfficientNet-Lite0
/// (rows, K, N), in the loop order the layers use (tile-major up to K = 512; `BOTTLENECK_TILE_MAJOR=0`
/// for panel-major). Opt-in: `BOTTLENECK_GEMM_TIMING=1`; `BOTTLENECK_GEMM_SHAPES=m:k:n,...` overrides.
final class GEMMTimingTests: XCTestCase {
    func testTiming() throws {
        let env = ProcessInfo.processInfo.environment
        guard env["BOTTLENECK_GEMM_TIMING"] == "1" else { throw XCTSkip("set BOTTLENECK_GEMM_TIMING=1") }
        var shapes: [(m: Int, k: Int, n: Int)] = [
            (336, 16, 96), (336, 24, 144), (336, 40, 240), (196, 80, 480), (196, 112, 672), (49, 192, 1152),
            (336, 96, 24), (336, 144, 24), (336, 144, 40), (336, 240, 40), (196, 240, 80), (196, 480, 80),
            (196, 480, 112), (196, 672, 112), (49, 672, 192), (49, 1152, 192), (49, 1152, 320), (49, 320, 1280),
            (1536, 64, 256), (1536, 256, 64), (1536, 2048, 512)]
        if let parsed = timingShapes("BOTTLENECK_GEMM_SHAPES") { shapes = parsed.map { p in (p[0], p[1], p[2]) } }
        let threads = env["BOTTLENECK_GEMM_THREADS"].flatMap(Int.init) ?? 1
        let saved = TensorThreads.count
        TensorThreads.configure(threads: threads)
        defer { TensorThreads.configure(threads: saved) }
        func now() -> Double { timingClock(cpuTime: threads == 1) }
        for (m, k, n) in shapes {
            // Operand and output 64-byte aligned, as the network's activation buffers are (an array's
            // 16-byte alignment splits a cache line with every other 32-byte store).
            let a = AlignedBuffer.copy(of: SyntheticFill.input(name: "gemm.a", shape: [m, k]))
            let c = AlignedBuffer.allocate(m * n)
            defer { AlignedBuffer.free(a); AlignedBuffer.free(c) }
            let wv = SyntheticFill.values(name: "gemm.w", kind: .weight, shape: [n, k])
            let bias = SyntheticFill.values(name: "gemm.b", kind: .bias, shape: [n])
            let w = wv.withUnsafeBufferPointer { PackedWeights(rowsNK: $0.baseAddress!, n: n, k: k) }
            let reps = max(1, 20_000_000 / (m * n * k))
            var best = Double.infinity
            for _ in 0..<7 {
                let t0 = now()
                for _ in 0..<reps {
                    bias.withUnsafeBufferPointer { bp in
                        if threads == 1 {
                            PackedGEMM.block(.matrix(a.baseAddress!, rowStride: k), row0: 0, rows: m, w: w,
                                             panelRange: 0..<w.panelCount, c: c.baseAddress!, ldc: n, bias: bp.baseAddress!,
                                             residual: nil, residualStride: 0, activation: .relu6, includeTail: true,
                                             tileMajor: PackedGEMM.tileMajorLayers)
                        } else {
                            PackedGEMM.run(.matrix(a.baseAddress!, rowStride: k), m: m, weights: w, c: c.baseAddress!, ldc: n,
                                           bias: bp.baseAddress!, residual: nil, residualStride: 0, activation: .relu6)
                        }
                    }
                }
                best = min(best, (now() - t0) / Double(reps))
            }
            print(String(format: "gemm m %5d k %5d n %5d  %8.1f us  %6.1f GFLOP/s", m, k, n, best * 1e6,
                         Double(2 * m * n * k) / best / 1e9))
        }
    }
}

/// Timing of whole `Conv2D` layers (ResNet-50's shapes at a batch slice of 5) on `TensorThreads`
/// (wall time, median of 9 passes after one untimed pass), or with `BOTTLENECK_CONV_SINGLE=1` on
/// one thread (thread CPU time, best of 9 passes: steadier on a shared host).
/// Opt-in: `BOTTLENECK_CONV_TIMING=1`; `BOTTLENECK_CONV_SHAPES=n:cin:cout:k:stride:hw,...` overrides.
final class ConvTimingTests: XCTestCase {
    func testTiming() throws {
        let env = ProcessInfo.processInfo.environment
        guard env["BOTTLENECK_CONV_TIMING"] == "1" else { throw XCTSkip("set BOTTLENECK_CONV_TIMING=1") }
        var shapes: [(n: Int, cin: Int, cout: Int, k: Int, s: Int, hw: Int)] = [
            (5, 256, 128, 1, 1, 56), (5, 128, 128, 3, 2, 56), (5, 128, 512, 1, 1, 28), (5, 256, 512, 1, 2, 56),
            (5, 512, 128, 1, 1, 28), (5, 128, 128, 3, 1, 28),
            (5, 512, 256, 1, 1, 28), (5, 256, 256, 3, 2, 28), (5, 256, 1024, 1, 1, 14), (5, 512, 1024, 1, 2, 28),
            (5, 1024, 256, 1, 1, 14), (5, 256, 256, 3, 1, 14),
            (5, 1024, 512, 1, 1, 14), (5, 512, 512, 3, 2, 14), (5, 512, 2048, 1, 1, 7), (5, 1024, 2048, 1, 2, 14),
            (5, 2048, 512, 1, 1, 7), (5, 512, 512, 3, 1, 7)]
        if let parsed = timingShapes("BOTTLENECK_CONV_SHAPES") { shapes = parsed.map { p in (p[0], p[1], p[2], p[3], p[4], p[5]) } }
        let single = env["BOTTLENECK_CONV_SINGLE"] == "1"
        var total = 0.0
        for (n, cin, cout, k, s, hw) in shapes {
            let x = SyntheticFill.input(name: "conv.x", shape: [n, hw, hw, cin])
            let w = SyntheticFill.values(name: "conv.w", kind: .weight, shape: [cout, cin, k, k])
            let b = SyntheticFill.values(name: "conv.b", kind: .bias, shape: [cout])
            let conv = w.withUnsafeBufferPointer {
                Conv2D(weightOIHW: $0.baseAddress!, outChannels: cout, inChannels: cin, kernelH: k, kernelW: k, stride: s,
                       padding: .symmetric(k / 2), bias: b, activation: .relu, expectedInput: (hw, hw))
            }
            let oh = (hw + 2 * (k / 2) - k) / s + 1
            var out = [Float](repeating: 0, count: n * oh * oh * cout)
            func pass() {
                x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
                    conv.forward(input: xp.baseAddress!, batch: n, height: hw, width: hw, output: op.baseAddress!, residual: nil)
                } }
            }
            func measure() -> [Double] {
                pass()
                return (0..<9).map { _ in
                    let t0 = timingClock(cpuTime: single)
                    pass()
                    return timingClock(cpuTime: single) - t0
                }
            }
            let times = single ? TensorThreads.withSingleThreadedKernels(measure) : measure()
            let t = single ? times.min()! : times.sorted()[times.count / 2]
            total += t
            let flops = Double(2 * n * oh * oh * cout * cin * k * k)
            print(String(format: "conv n %d %4d->%4d k%d s%d %3dx%-3d %@  %8.3f ms  %6.1f GFLOP/s (direct-equivalent)", n, cin, cout, k, s,
                         hw, hw, conv.winograd == nil ? "direct  " : conv.direct == nil ? "winograd" : "both    ", t * 1e3, flops / t / 1e9))
        }
        print(String(format: "conv total %.3f ms", total * 1e3))
    }
}

/// Single-threaded timing of `DepthwiseConv2D` on EfficientNet-Lite0's shapes (a slice of 3 images,
/// thread CPU time per pass, best of 7 measurements of enough passes to last about a millisecond).
/// Opt-in: `BOTTLENECK_DEPTHWISE_TIMING=1`; `BOTTLENECK_DEPTHWISE_SHAPES=n:channels:k:stride:hw,...` overrides.
final class DepthwiseTimingTests: XCTestCase {
    func testTiming() throws {
        let env = ProcessInfo.processInfo.environment
        guard env["BOTTLENECK_DEPTHWISE_TIMING"] == "1" else { throw XCTSkip("set BOTTLENECK_DEPTHWISE_TIMING=1") }
        var shapes: [(n: Int, c: Int, k: Int, s: Int, hw: Int)] = [
            (3, 32, 3, 1, 112), (3, 96, 3, 2, 112), (3, 144, 3, 1, 56), (3, 144, 5, 2, 56), (3, 240, 5, 1, 28),
            (3, 240, 3, 2, 28), (3, 480, 3, 1, 14), (3, 480, 5, 1, 14), (3, 672, 5, 1, 14), (3, 672, 5, 2, 14),
            (3, 1152, 5, 1, 7), (3, 1152, 3, 1, 7)]
        if let parsed = timingShapes("BOTTLENECK_DEPTHWISE_SHAPES") { shapes = parsed.map { p in (p[0], p[1], p[2], p[3], p[4]) } }
        TensorThreads.withSingleThreadedKernels {
            var total = 0.0
            for (n, c, k, s, hw) in shapes {
                let x = SyntheticFill.input(name: "dw.x", shape: [n, hw, hw, c])
                let w = SyntheticFill.values(name: "dw.w", kind: .weight, shape: [c, 1, k, k])
                let b = SyntheticFill.values(name: "dw.b", kind: .bias, shape: [c])
                let conv = w.withUnsafeBufferPointer {
                    DepthwiseConv2D(weightC1HW: $0.baseAddress!, channels: c, kernelH: k, kernelW: k, stride: s,
                                    padding: .same, bias: b, activation: .relu6)
                }
                let (oh, ow) = conv.outputSize(height: hw, width: hw)
                var out = [Float](repeating: 0, count: n * oh * ow * c)
                // Repeat small layers so that each measurement lasts about a millisecond or more.
                let reps = max(1, 20_000_000 / (n * conv.macs(height: hw, width: hw)))
                var best = Double.infinity
                for _ in 0..<7 {
                    let t0 = timingClock(cpuTime: true)
                    x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
                        for _ in 0..<reps {
                            conv.forward(input: xp.baseAddress!, batch: n, height: hw, width: hw, output: op.baseAddress!)
                        }
                    } }
                    best = min(best, (timingClock(cpuTime: true) - t0) / Double(reps))
                }
                total += best
                print(String(format: "depthwise n %d c %4d k%d s%d %3dx%-3d  %8.1f us  %6.1f GFLOP/s", n, c, k, s, hw, hw,
                             best * 1e6, Double(2 * conv.macs(height: hw, width: hw) * n) / best / 1e9))
            }
            print(String(format: "depthwise total %.1f us", total * 1e6))
        }
    }
}
