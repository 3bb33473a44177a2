import BottleneckTensor
import Foundation

extension EngineOptions {
    /// The engine options for `threads` threads (all available cores when nil), with the switches
    /// the environment turns off: `BOTTLENECK_WINOGRAD`, `BOTTLENECK_TILE_MAJOR`,
    /// `BOTTLENECK_PREFETCH`, `BOTTLENECK_PREFETCH_WEIGHTS`, `BOTTLENECK_HUGE_PAGES`, `BOTTLENECK_RESIDUAL_IN_PLACE`,
    /// `BOTTLENECK_SHARED_OPERAND`, `BOTTLENECK_CONCURRENT_IMAGES` and `BOTTLENECK_PASS_SPIN` set to `0`.
    /// The only place the engine reads the environment.
    static func fromEnvironment(threads: Int? = nil,
                                environment: [String: String] = ProcessInfo.processInfo.environment) -> EngineOptions {
        var options = EngineOptions(threads: threads ?? EngineOptions.availableCores)
        func off(_ name: String) -> Bool { environment["BOTTLENECK_" + name] == "0" }
        if off("WINOGRAD") { options.winograd = false }
        if off("TILE_MAJOR") { options.tileMajor = false }
        if off("PREFETCH") { options.prefetchTiles = 0 }
        if off("PREFETCH_WEIGHTS") { options.prefetchWeights = false }
        if off("HUGE_PAGES") { options.hugePages = false }
        if off("RESIDUAL_IN_PLACE") { options.residualInPlace = false }
        if off("SHARED_OPERAND") { options.sharedOperand = false }
        if off("CONCURRENT_IMAGES") { options.concurrentImages = false }
        if off("PASS_SPIN") { options.passSpinSeconds = 0 }
        return options
    }
}
