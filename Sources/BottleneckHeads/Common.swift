import CBLAS
import Dispatch
import Foundation

/// How samples are weighted per class during training.
public enum ClassWeight: String, Codable, Sendable, CaseIterable {
    /// Every sample has weight 1.
    case none
    /// Weight `n_samples / (n_classes * count(class))`, as scikit-learn's `class_weight='balanced'`.
    case balanced

    /// Per-class weights for `labels` over `classCount` classes.
    func classWeights(labels: [Int], classCount: Int) -> [Double] {
        switch self {
        case .none: return [Double](repeating: 1, count: classCount)
        case .balanced:
            var counts = [Int](repeating: 0, count: classCount)
            for l in labels { counts[l] += 1 }
            return counts.map { $0 == 0 ? 0 : Double(labels.count) / (Double(classCount) * Double($0)) }
        }
    }
}

/// Validates a training set: shapes, label range, finiteness, every class present, at least two classes.
///
/// - Parameter classNames: used in messages; defaults to the class indices.
func validateTraining(_ x: Matrix, labels: [Int], classCount: Int, classNames: [String]? = nil,
                      context: String) throws {
    guard x.rows > 0 else { throw HeadError.emptyData(context: context) }
    guard labels.count == x.rows else { throw HeadError.labelCountMismatch(rows: x.rows, labels: labels.count) }
    let name = { (i: Int) -> String in classNames.flatMap { i < $0.count ? $0[i] : nil } ?? "\(i)" }
    var counts = [Int](repeating: 0, count: max(classCount, 0))
    for l in labels {
        guard l >= 0 && l < classCount else { throw HeadError.unknownClass(label: l, classCount: classCount) }
        counts[l] += 1
    }
    let present = counts.indices.filter { counts[$0] > 0 }
    if present.count == 1 { throw HeadError.singleClass(name: name(present[0])) }
    if let empty = counts.firstIndex(of: 0) { throw HeadError.emptyClass(index: empty, name: name(empty)) }
    try x.checkFinite(context: context)
}

/// `Z = X · Wᵀ + b` for row-major `x` (n x d), `w` (k x d) and `b` (k), via `cblas_dgemm`. Returns n x k.
func linearScores(_ x: Matrix, weights w: [Double], outputs k: Int, bias b: [Double]) -> Matrix {
    let n = x.rows, d = x.cols
    var z = [Double](repeating: 0, count: n * k)
    z.withUnsafeMutableBufferPointer { pz in
        for i in 0..<n { for c in 0..<k { pz[i * k + c] = b[c] } }
        guard n > 0, d > 0 else { return }
        x.values.withUnsafeBufferPointer { px in
            w.withUnsafeBufferPointer { pw in
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(k), Int32(d),
                            1, px.baseAddress, Int32(d), pw.baseAddress, Int32(d), 1, pz.baseAddress, Int32(k))
            }
        }
    }
    return Matrix(rows: n, cols: k, values: z)
}

/// Index of the largest value in each row (first one on ties, as NumPy's `argmax`).
func rowArgmax(_ m: Matrix) -> [Int] {
    (0..<m.rows).map { i in
        var best = 0
        var bv = m[i, 0]
        for j in 1..<max(m.cols, 1) where m[i, j] > bv { bv = m[i, j]; best = j }
        return best
    }
}

/// Results slots written by `concurrentMap` workers, each slot by exactly one worker.
private final class Slots<T>: @unchecked Sendable {
    var items: [T?]
    let lock = NSLock()
    init(_ n: Int) { items = [T?](repeating: nil, count: n) }
    func set(_ i: Int, _ v: T) { lock.lock(); items[i] = v; lock.unlock() }
}

/// Runs `body(0..<count)` on the global concurrent pool and returns the results in index order.
/// Independent one-vs-rest / one-vs-one sub-problems are the unit of parallelism.
func concurrentMap<T>(_ count: Int, _ body: (Int) -> T) -> [T] {
    let slots = Slots<T>(count)
    withoutActuallyEscaping(body) { b in
        let box = UncheckedBox(b)
        DispatchQueue.concurrentPerform(iterations: count) { i in slots.set(i, box.value(i)) }
    }
    return slots.items.map { $0! }
}

/// Wraps a non-Sendable value known to be used safely across threads (read-only captures).
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}
