import BottleneckCore
import Dispatch
import Foundation

/// L2-regularised linear SVM (hinge or squared hinge) trained by LIBLINEAR's dual coordinate descent,
/// one-vs-rest for more than two classes.
///
/// Matches scikit-learn's `LinearSVC(dual=True)`: the intercept is learned as the weight of a constant
/// bias feature equal to 1 (`intercept_scaling=1`) and is therefore regularised like every other weight.
/// Primal problem per binary sub-problem (labels ±1):
///
///     min_w  ½ ||w||² + Σ_i C_i ξ_i        (hinge: ξ = max(0, 1 - y wᵀx), squared hinge: ξ²)
///
/// Each epoch costs O(n · d) per class; the one-vs-rest problems are split over the cores and, within a
/// core, swept together so each feature row is read once per epoch.
public struct LinearSVM: Codable, Sendable, Equatable {
    /// Loss function.
    public enum Loss: String, Codable, Sendable { case hinge, squaredHinge = "squared_hinge" }

    /// Inverse regularisation strength (sklearn's `C`).
    public var C: Double
    /// Loss used when fitting.
    public var loss: Loss
    /// Class weighting used when fitting.
    public var classWeight: ClassWeight
    /// Number of classes (≥ 2).
    public var classCount: Int
    /// Weight rows: `classCount x d`, or `1 x d` for two classes (positive = class 1).
    public var coef: Matrix
    /// Intercepts (bias-feature weights), one per weight row.
    public var intercept: [Double]
    /// Largest number of epochs any sub-problem needed.
    public var iterations: Int

    /// Fitting options (defaults are sklearn's).
    public struct Options: Sendable {
        /// Inverse regularisation strength (> 0).
        public var C: Double = 1
        /// Loss (sklearn default: squared hinge).
        public var loss: Loss = .squaredHinge
        /// Class weighting: the positive side of each one-vs-rest problem gets `C * weight`, as LIBLINEAR does.
        public var classWeight: ClassWeight = .none
        /// Stopping tolerance on the projected-gradient gap (sklearn's `tol`).
        public var tolerance: Double = 1e-4
        /// Maximum epochs per binary problem (sklearn's `max_iter`).
        public var maxIterations: Int = 1000
        /// Seed of the coordinate permutation.
        public var seed: UInt64 = 0
        /// Whether to shrink the active set (LIBLINEAR's heuristic; the optimum is unchanged).
        public var shrinking: Bool = true
        /// Creates options; every argument has sklearn's default.
        public init(C: Double = 1, loss: Loss = .squaredHinge, classWeight: ClassWeight = .none, tolerance: Double = 1e-4,
                    maxIterations: Int = 1000, seed: UInt64 = 0, shrinking: Bool = true) {
            self.C = C; self.loss = loss; self.classWeight = classWeight; self.tolerance = tolerance
            self.maxIterations = maxIterations; self.seed = seed; self.shrinking = shrinking
        }
    }

    /// Fits on `x` (n x d, already scaled) with labels in `0..<classCount`.
    /// - Throws: ``HeadError`` on invalid parameters or training data.
    public static func fit(_ x: Matrix, labels: [Int], classCount: Int, options: Options = Options(),
                           classNames: [String]? = nil) throws -> LinearSVM {
        guard options.C > 0, options.C.isFinite else { throw HeadError.invalidParameter("C must be > 0, got \(options.C)") }
        guard options.tolerance > 0, options.maxIterations > 0 else {
            throw HeadError.invalidParameter("tolerance and maxIterations must be > 0")
        }
        try validateTraining(x, labels: labels, classCount: classCount, classNames: classNames, context: "LinearSVM.fit")
        let d = x.cols
        let cw = options.classWeight.classWeights(labels: labels, classCount: classCount)
        let k = classCount == 2 ? 1 : classCount
        var norms = [Double](repeating: 0, count: x.rows)
        x.values.withUnsafeBufferPointer { px in
            for i in 0..<x.rows { norms[i] = dotRaw(px.baseAddress! + i * d, px.baseAddress! + i * d, d) }
        }
        let normsC = norms
        // Problems are split into one group per core; inside a group every problem sweeps the samples in
        // the same order, so each row is read from memory once per epoch for all of the group's classes.
        let groups = min(k, max(1, ProcessInfo.processInfo.activeProcessorCount))
        let solvedGroups = concurrentMap(groups) { g -> [(Int, [Double], Int)] in
            let classes = Array(stride(from: g, to: k, by: groups))
            let problems = classes.map { c -> DualProblem in
                let positive = k == 1 ? 1 : c
                // LIBLINEAR: positive side C * w_pos; negative side C (one-vs-rest) or C * w_neg (binary).
                return DualProblem(y: labels.map { $0 == positive ? 1.0 : -1.0 }, cPos: options.C * cw[positive],
                                   cNeg: k == 1 ? options.C * cw[0] : options.C)
            }
            let res = solveDual(x, norms: normsC, problems: problems, options: options, seed: options.seed &+ UInt64(g))
            return zip(classes, res).map { ($0, $1.0, $1.1) }
        }
        var weights = [[Double]](repeating: [], count: k), epochs = [Int](repeating: 0, count: k)
        for (c, w, it) in solvedGroups.joined() { weights[c] = w; epochs[c] = it }
        var coef = Matrix(zeros: k, d)
        var intercept = [Double](repeating: 0, count: k)
        for c in 0..<k {
            for j in 0..<d { coef[c, j] = weights[c][j] }
            intercept[c] = weights[c][d]
        }
        return LinearSVM(C: options.C, loss: options.loss, classWeight: options.classWeight, classCount: classCount,
                         coef: coef, intercept: intercept, iterations: epochs.max() ?? 0)
    }

    /// One binary sub-problem: labels ±1 and the C of each side.
    struct DualProblem { var y: [Double]; var cPos: Double; var cNeg: Double }

    /// LIBLINEAR `solve_l2r_l1l2_svc` (dual coordinate descent with optional shrinking) run on several
    /// binary problems in lock-step: one shared random sample order per epoch, per-problem alphas,
    /// shrinking flags and stopping. Returns, per problem, the primal weights with the bias weight
    /// appended (length d + 1) and its epoch count. O(epochs · n · d · problems).
    static func solveDual(_ x: Matrix, norms: [Double], problems: [DualProblem], options: Options,
                          seed: UInt64) -> [([Double], Int)] {
        let n = x.rows, d = x.cols, p = problems.count
        let squared = options.loss == .squaredHinge
        var w = [Double](repeating: 0, count: p * (d + 1))
        var alpha = [Double](repeating: 0, count: p * n)
        var diag = [Double](repeating: 0, count: p * n), upper = diag, qd = diag
        var shrunk = [Bool](repeating: false, count: p * n)
        for (c, pr) in problems.enumerated() {
            for i in 0..<n {
                let ci = pr.y[i] > 0 ? pr.cPos : pr.cNeg
                diag[c * n + i] = squared ? 0.5 / ci : 0
                upper[c * n + i] = squared ? .infinity : ci
                qd[c * n + i] = diag[c * n + i] + norms[i] + 1  // + 1 for the bias feature
            }
        }
        var activeCount = [Int](repeating: n, count: p)
        var pgMaxOld = [Double](repeating: .infinity, count: p), pgMinOld = [Double](repeating: -.infinity, count: p)
        var pgMaxNew = pgMaxOld, pgMinNew = pgMinOld
        var done = [Bool](repeating: false, count: p)
        var epochs = [Int](repeating: 0, count: p)
        var order = Array(0..<n)
        var rng = SplitMix64(seed: seed)
        let ys = problems.map { $0.y }
        var epoch = 0
        x.values.withUnsafeBufferPointer { px in
            w.withUnsafeMutableBufferPointer { pw in
                while epoch < options.maxIterations && done.contains(false) {
                    for i in 0..<n { let j = i + Int(rng.next() % UInt64(n - i)); order.swapAt(i, j) }
                    for c in 0..<p where !done[c] { pgMaxNew[c] = -.infinity; pgMinNew[c] = .infinity }
                    for s in 0..<n {
                        let i = order[s]
                        let xi = px.baseAddress! + i * d
                        for c in 0..<p where !done[c] && !shrunk[c * n + i] {
                            let ci = c * n + i
                            let wc = pw.baseAddress! + c * (d + 1)
                            let yi = ys[c][i]
                            let g = yi * (dotRaw(wc, xi, d) + wc[d]) - 1 + alpha[ci] * diag[ci]
                            var pg = 0.0
                            if alpha[ci] == 0 {
                                if g > pgMaxOld[c] && options.shrinking { shrunk[ci] = true; activeCount[c] -= 1; continue }
                                if g < 0 { pg = g }
                            } else if alpha[ci] == upper[ci] {
                                if g < pgMinOld[c] && options.shrinking { shrunk[ci] = true; activeCount[c] -= 1; continue }
                                if g > 0 { pg = g }
                            } else {
                                pg = g
                            }
                            pgMaxNew[c] = max(pgMaxNew[c], pg); pgMinNew[c] = min(pgMinNew[c], pg)
                            if abs(pg) > 1e-12 {
                                let old = alpha[ci]
                                alpha[ci] = min(max(old - g / qd[ci], 0), upper[ci])
                                let delta = (alpha[ci] - old) * yi
                                axpyRaw(delta, xi, wc, d)
                                wc[d] += delta
                            }
                        }
                    }
                    epoch += 1
                    for c in 0..<p where !done[c] {
                        epochs[c] = epoch
                        if pgMaxNew[c] - pgMinNew[c] <= options.tolerance {
                            if activeCount[c] == n { done[c] = true; continue }
                            // Converged on the shrunk set: verify on all samples before stopping.
                            for i in 0..<n { shrunk[c * n + i] = false }
                            activeCount[c] = n; pgMaxOld[c] = .infinity; pgMinOld[c] = -.infinity
                            continue
                        }
                        pgMaxOld[c] = pgMaxNew[c] <= 0 ? .infinity : pgMaxNew[c]
                        pgMinOld[c] = pgMinNew[c] >= 0 ? -.infinity : pgMinNew[c]
                    }
                }
            }
        }
        return (0..<p).map { (Array(w[$0 * (d + 1)..<($0 + 1) * (d + 1)]), epochs[$0]) }
    }

    /// Feature dimension the model expects.
    public var dimension: Int { coef.cols }

    /// Signed distances `X Wᵀ + b`: n x classCount (n x 1 for two classes, positive = class 1).
    public func decisionFunction(_ x: Matrix) throws -> Matrix {
        try x.checkColumns(dimension, context: "LinearSVM.decisionFunction")
        try x.checkFinite(context: "LinearSVM.decisionFunction")
        return linearScores(x, weights: coef.values, outputs: coef.rows, bias: intercept)
    }

    /// Predicted class per row (largest score; sign for two classes).
    public func predict(_ x: Matrix) throws -> [Int] {
        let z = try decisionFunction(x)
        if coef.rows == 1 { return (0..<z.rows).map { z[$0, 0] > 0 ? 1 : 0 } }
        return rowArgmax(z)
    }
}

/// Dot product of two length-`n` double vectors (4 accumulators so the compiler vectorises it).
@inline(__always) func dotRaw(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ n: Int) -> Double {
    var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0, s5 = 0.0, s6 = 0.0, s7 = 0.0
    var i = 0
    while i + 8 <= n {
        s0 += a[i] * b[i]; s1 += a[i + 1] * b[i + 1]; s2 += a[i + 2] * b[i + 2]; s3 += a[i + 3] * b[i + 3]
        s4 += a[i + 4] * b[i + 4]; s5 += a[i + 5] * b[i + 5]; s6 += a[i + 6] * b[i + 6]; s7 += a[i + 7] * b[i + 7]
        i += 8
    }
    while i < n { s0 += a[i] * b[i]; i += 1 }
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

/// `y += a * x` over `n` doubles.
@inline(__always) func axpyRaw(_ a: Double, _ x: UnsafePointer<Double>, _ y: UnsafeMutablePointer<Double>, _ n: Int) {
    for i in 0..<n { y[i] += a * x[i] }
}
