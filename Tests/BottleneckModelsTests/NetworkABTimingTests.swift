import Foundation
import XCTest
@testable import BottleneckModels
@testable import BottleneckTensor

/// Opt-in A/B timing of a whole network inside one process: passes alternate between a kernel
/// switch off (A) and on (B), and each B pass is compared with the A passes either side of it. This
/// host's speed swings by 1.5x between processes seconds apart, which buries a few percent in
/// process-level comparisons; neighbouring passes (a fraction of a second apart) see the same host.
///
/// `BOTTLENECK_NETWORK_AB=<switch>` runs it; `BOTTLENECK_NETWORK_AB_MODEL` (default
/// efficientnet-lite0, synthetic weights, to the pooled features), `_BATCH` (32), `_THREADS` (2),
/// `_PASSES` (40 per side). Switches: `tileMajor` (`PackedGEMM.tileMajorLayers`), `fusedBlocks`
/// (`Network.fusesInvertedResiduals`); an experiment adds its own while it is measured.
final class NetworkABTimingTests: XCTestCase {
    func testAlternatingPasses() throws {
        let env = ProcessInfo.processInfo.environment
        guard let name = env["BOTTLENECK_NETWORK_AB"] else { throw XCTSkip("set BOTTLENECK_NETWORK_AB=<switch>") }
        let model = env["BOTTLENECK_NETWORK_AB_MODEL"] ?? "efficientnet-lite0"
        let batch = env["BOTTLENECK_NETWORK_AB_BATCH"].flatMap(Int.init) ?? 32
        let threads = env["BOTTLENECK_NETWORK_AB_THREADS"].flatMap(Int.init) ?? 2
        let passes = env["BOTTLENECK_NETWORK_AB_PASSES"].flatMap(Int.init) ?? 40
        let net = try Network(syntheticModel: model, cut: .cut(1), pool: .avg)
        let toggle: (Bool) -> Void
        switch name {
        case "tileMajor": toggle = { PackedGEMM.tileMajorLayers = $0 }
        case "fusedBlocks": toggle = { net.fusesInvertedResiduals = $0 }
        default: return XCTFail("unknown switch \(name)")
        }
        let saved = (PackedGEMM.tileMajorLayers, TensorThreads.count)
        defer { PackedGEMM.tileMajorLayers = saved.0; TensorThreads.configure(threads: saved.1) }
        TensorThreads.configure(threads: threads)
        let size = net.architecture.inputSize
        let input = SyntheticFill.input(name: "ab.x", shape: [batch, 3, size, size])
        var output = [Float](repeating: 0, count: batch * net.outputShape.count)
        func pass(_ on: Bool) -> Double {
            toggle(on)
            let t0 = DispatchTime.now().uptimeNanoseconds
            input.withUnsafeBufferPointer { x in output.withUnsafeMutableBufferPointer { y in
                net.forward(x.baseAddress!, batch: batch, height: size, width: size, into: y.baseAddress!)
            } }
            return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        }
        _ = pass(false); _ = pass(true)
        var a: [Double] = [], b: [Double] = []
        for _ in 0..<passes { a.append(pass(false)); b.append(pass(true)) }
        a.append(pass(false))
        // B's time against the mean of the A passes either side of it: < 1 means B is faster.
        let ratios = b.indices.map { i in b[i] / ((a[i] + a[i + 1]) / 2) }.sorted()
        let logs = ratios.map { Foundation.log($0) }
        let mean = logs.reduce(0, +) / Double(logs.count)
        let sd = (logs.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(logs.count - 1)).squareRoot()
        let half = 2 * sd / Double(logs.count).squareRoot()
        print(String(format: "%@ %@ batch %d, %d threads, %d pass pairs: B/A time median %.4f, geometric mean %.4f (95%% CI %.4f-%.4f); A median %.1f ms, B median %.1f ms",
                     model, name, batch, threads, passes, ratios[ratios.count / 2], Foundation.exp(mean),
                     Foundation.exp(mean - half), Foundation.exp(mean + half),
                     a.sorted()[a.count / 2] * 1e3, b.sorted()[b.count / 2] * 1e3))
    }
}
