import CBLAS
import Dispatch
import Foundation

/// Thread configuration shared by every kernel: OpenBLAS's pool runs the GEMMs and
/// `DispatchQueue.concurrentPerform` runs the element-wise, pooling and depthwise kernels. The two
/// never run at the same time (each kernel returns before the next starts), so on a machine with T
/// cores both use T workers without oversubscription.
public enum TensorThreads {
    nonisolated(unsafe) private static var current = ProcessInfo.processInfo.activeProcessorCount

    /// The number of worker threads kernels use.
    public static var count: Int { current }

    /// Sets the thread count for OpenBLAS and the non-GEMM kernels (clamped to at least 1).
    public static func configure(threads: Int) {
        current = max(1, threads)
        openblas_set_num_threads(Int32(current))
    }

    /// The OpenBLAS core type chosen when the library loaded (e.g. "Haswell", "SkylakeX").
    public static var blasCoreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }
}

/// Splits `0..<count` into at most `TensorThreads.count` contiguous ranges of at least `grain`
/// items and runs `body` on them in parallel; runs inline when one range suffices (no dispatch cost
/// for small layers).
@inline(__always)
func parallelRanges(_ count: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
    if count <= 0 { return }
    let workers = min(TensorThreads.count, max(1, count / max(1, grain)))
    if workers <= 1 { body(0..<count); return }
    // More pieces than workers evens out imbalance between uneven rows.
    let pieces = min(count, workers * 4)
    withoutActuallyEscaping(body) { escaping in
        let box = UncheckedSendable(escaping)
        DispatchQueue.concurrentPerform(iterations: pieces) { i in
            let lo = i * count / pieces, hi = (i + 1) * count / pieces
            if lo < hi { box.value(lo..<hi) }
        }
    }
}

/// Carries a non-Sendable value into `concurrentPerform`; the kernels guarantee the workers write
/// disjoint output ranges, which is the invariant the compiler cannot see.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
