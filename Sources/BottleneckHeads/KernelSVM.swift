import BottleneckCore
import CBLAS
import Dispatch
import Foundation

/// Kernel SVM (C-SVC) trained pairwise by LIBSVM's SMO with second-order working-set selection (WSS2),
/// predicting by one-vs-one voting; optional Platt-scaled probabilities.
///
/// Conventions follow scikit-learn's `SVC`: `gamma='scale'` is `1 / (d · Var(X))` over all training
/// entries, class weights multiply C per class, ties in voting go to the lower class index.
/// ``decisionFunction(_:)`` returns LIBSVM's raw one-vs-one values (what sklearn returns with
/// `decision_function_shape='ovo'` for three or more classes): column `p` belongs to the pair
/// (a, b), a < b, in the order (0,1), (0,2), …, (1,2), …, and a positive value favours `a`.
/// (For two classes sklearn reports the negated value; ``binaryDecision(_:)`` gives that.)
///
/// Training cost: O(n² d) for the kernel matrix (one `dgemm`) when it fits in ``Options/kernelBudgetBytes``,
/// else kernel columns computed on demand with a column cache; SMO itself O(iterations · m) per pair.
public struct KernelSVM: Codable, Sendable, Equatable {
    /// Kernel function.
    public enum Kernel: String, Codable, Sendable {
        /// `exp(-gamma ||x - y||²)`.
        case rbf
        /// `xᵀy`.
        case linear
    }

    /// One pairwise binary machine.
    public struct PairModel: Codable, Sendable, Equatable {
        /// First class (positive side).
        public var classA: Int
        /// Second class (negative side).
        public var classB: Int
        /// Rows of ``KernelSVM/supportVectors`` used by this machine.
        public var supportIndices: [Int]
        /// `alpha_i * y_i` for each support vector in ``supportIndices``.
        public var coefficients: [Double]
        /// Offset: decision = Σ coef · K(sv, x) − rho.
        public var rho: Double
        /// Platt sigmoid parameters (P(a) = 1 / (1 + exp(A f + B))), when probabilities were fitted.
        public var probA: Double?
        /// See ``probA``.
        public var probB: Double?
    }

    /// Inverse regularisation strength.
    public var C: Double
    /// Kernel.
    public var kernel: Kernel
    /// RBF width (unused by the linear kernel).
    public var gamma: Double
    /// Class weighting used when fitting.
    public var classWeight: ClassWeight
    /// Number of classes.
    public var classCount: Int
    /// Support vectors (rows of the training matrix), `nSV x d`.
    public var supportVectors: Matrix
    /// Training row index of each support vector.
    public var supportRows: [Int]
    /// `classCount (classCount - 1) / 2` machines in one-vs-one order.
    public var pairs: [PairModel]

    /// Fitting options (defaults are sklearn's).
    public struct Options: Sendable {
        /// Inverse regularisation strength (> 0).
        public var C: Double = 1
        /// Kernel.
        public var kernel: Kernel = .rbf
        /// RBF gamma; `nil` = sklearn's `'scale'`.
        public var gamma: Double? = nil
        /// Class weighting (C of class c becomes C * weight[c]).
        public var classWeight: ClassWeight = .none
        /// KKT violation tolerance (sklearn's `tol`, default 1e-3).
        public var tolerance: Double = 1e-3
        /// Fit Platt sigmoids by internal 5-fold cross-validation (seeded; see ``seed``).
        public var probability: Bool = false
        /// Seed of the probability cross-validation permutation.
        public var seed: UInt64 = 0
        /// Largest full kernel matrix to precompute, in bytes; beyond it columns are computed on demand.
        public var kernelBudgetBytes: Int = 512 << 20
        /// Creates options.
        public init(C: Double = 1, kernel: Kernel = .rbf, gamma: Double? = nil, classWeight: ClassWeight = .none,
                    tolerance: Double = 1e-3, probability: Bool = false, seed: UInt64 = 0) {
            self.C = C; self.kernel = kernel; self.gamma = gamma; self.classWeight = classWeight
            self.tolerance = tolerance; self.probability = probability; self.seed = seed
        }
    }

    /// sklearn's `gamma='scale'`: `1 / (d · Var(X))`, or 1 when the variance is zero.
    public static func scaleGamma(_ x: Matrix) -> Double {
        let n = Double(x.values.count)
        guard n > 0 else { return 1 }
        let mean = x.values.reduce(0, +) / n
        var v = 0.0
        for e in x.values { v += (e - mean) * (e - mean) }
        v /= n
        return v == 0 ? 1 : 1 / (Double(x.cols) * v)
    }

    /// Fits on `x` (n x d, already scaled) with labels in `0..<classCount`.
    /// - Throws: ``HeadError`` on invalid parameters or training data.
    public static func fit(_ x: Matrix, labels: [Int], classCount: Int, options: Options = Options(),
                           classNames: [String]? = nil) throws -> KernelSVM {
        guard options.C > 0, options.C.isFinite else { throw HeadError.invalidParameter("C must be > 0, got \(options.C)") }
        if let g = options.gamma { guard g > 0, g.isFinite else { throw HeadError.invalidParameter("gamma must be > 0, got \(g)") } }
        guard options.tolerance > 0 else { throw HeadError.invalidParameter("tolerance must be > 0") }
        try validateTraining(x, labels: labels, classCount: classCount, classNames: classNames, context: "KernelSVM.fit")
        let gamma = options.gamma ?? scaleGamma(x)
        let kernel = KernelMatrix(x: x, kernel: options.kernel, gamma: gamma, budget: options.kernelBudgetBytes)
        let cw = options.classWeight.classWeights(labels: labels, classCount: classCount)
        var byClass = [[Int]](repeating: [], count: classCount)
        for (i, l) in labels.enumerated() { byClass[l].append(i) }
        var pairList: [(Int, Int)] = []
        for a in 0..<classCount { for b in (a + 1)..<classCount { pairList.append((a, b)) } }
        let (byClassC, pairListC) = (byClass, pairList)
        let results = concurrentMap(pairList.count) { p -> (alpha: [Double], rho: Double, probA: Double?, probB: Double?) in
            let (a, b) = pairListC[p]
            let idx = byClassC[a] + byClassC[b]
            let y = idx.map { labels[$0] == a ? 1.0 : -1.0 }
            let cp = options.C * cw[a], cn = options.C * cw[b]
            let sol = SMOSolver.solve(kernel: kernel, rows: idx, y: y, cp: cp, cn: cn, eps: options.tolerance)
            var pa: Double? = nil, pb: Double? = nil
            if options.probability {
                let (A, B) = plattCV(kernel: kernel, rows: idx, y: y, cp: cp, cn: cn, eps: options.tolerance,
                                     seed: options.seed &+ UInt64(p))
                pa = A; pb = B
            }
            return (sol.alpha, sol.rho, pa, pb)
        }
        // Collect the union of support vectors, in training-row order.
        var isSV = [Bool](repeating: false, count: x.rows)
        for (p, (a, b)) in pairList.enumerated() {
            let idx = byClass[a] + byClass[b]
            for (k, r) in idx.enumerated() where results[p].alpha[k] > 0 { isSV[r] = true }
        }
        let svRows = (0..<x.rows).filter { isSV[$0] }
        var svPos = [Int](repeating: -1, count: x.rows)
        for (k, r) in svRows.enumerated() { svPos[r] = k }
        var pairs: [PairModel] = []
        for (p, (a, b)) in pairList.enumerated() {
            let idx = byClass[a] + byClass[b]
            var si: [Int] = [], co: [Double] = []
            for (k, r) in idx.enumerated() where results[p].alpha[k] > 0 {
                si.append(svPos[r]); co.append(results[p].alpha[k] * (labels[r] == a ? 1 : -1))
            }
            pairs.append(PairModel(classA: a, classB: b, supportIndices: si, coefficients: co, rho: results[p].rho,
                                   probA: results[p].probA, probB: results[p].probB))
        }
        return KernelSVM(C: options.C, kernel: options.kernel, gamma: gamma, classWeight: options.classWeight,
                         classCount: classCount, supportVectors: x.rows(svRows), supportRows: svRows, pairs: pairs)
    }

    /// Feature dimension the model expects.
    public var dimension: Int { supportVectors.cols }

    /// Whether Platt parameters are present.
    public var hasProbability: Bool { pairs.allSatisfy { $0.probA != nil && $0.probB != nil } }

    /// Kernel values between the rows of `x` and every support vector: n x nSV (one `dgemm`).
    func kernelToSupport(_ x: Matrix) -> Matrix {
        let n = x.rows, m = supportVectors.rows, d = x.cols
        var k = [Double](repeating: 0, count: n * m)
        guard n > 0, m > 0 else { return Matrix(rows: n, cols: m, values: k) }
        x.values.withUnsafeBufferPointer { px in
            supportVectors.values.withUnsafeBufferPointer { ps in
                k.withUnsafeMutableBufferPointer { pk in
                    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(m), Int32(d), 1,
                                px.baseAddress, Int32(d), ps.baseAddress, Int32(d), 0, pk.baseAddress, Int32(m))
                    if kernel == .rbf {
                        var svNorm = [Double](repeating: 0, count: m)
                        for j in 0..<m { svNorm[j] = dotRaw(ps.baseAddress! + j * d, ps.baseAddress! + j * d, d) }
                        for i in 0..<n {
                            let xn = dotRaw(px.baseAddress! + i * d, px.baseAddress! + i * d, d)
                            for j in 0..<m { pk[i * m + j] = exp(-gamma * (xn + svNorm[j] - 2 * pk[i * m + j])) }
                        }
                    }
                }
            }
        }
        return Matrix(rows: n, cols: m, values: k)
    }

    /// Raw one-vs-one decision values, n x (k(k−1)/2); positive favours the pair's first class.
    public func decisionFunction(_ x: Matrix) throws -> Matrix {
        try x.checkColumns(dimension, context: "KernelSVM.decisionFunction")
        try x.checkFinite(context: "KernelSVM.decisionFunction")
        let kx = kernelToSupport(x)
        var out = Matrix(zeros: x.rows, pairs.count)
        for i in 0..<x.rows {
            for (p, pm) in pairs.enumerated() {
                var s = 0.0
                for (t, sv) in pm.supportIndices.enumerated() { s += pm.coefficients[t] * kx[i, sv] }
                out[i, p] = s - pm.rho
            }
        }
        return out
    }

    /// For two classes: sklearn's `decision_function` (positive favours class 1). n values.
    public func binaryDecision(_ x: Matrix) throws -> [Double] {
        guard classCount == 2 else { throw HeadError.invalidParameter("binaryDecision needs a two-class model") }
        let d = try decisionFunction(x)
        return (0..<d.rows).map { -d[$0, 0] }
    }

    /// Votes per class from one-vs-one decisions.
    private func votes(_ dec: Matrix) -> Matrix {
        var v = Matrix(zeros: dec.rows, classCount)
        for i in 0..<dec.rows {
            for (p, pm) in pairs.enumerated() { if dec[i, p] > 0 { v[i, pm.classA] += 1 } else { v[i, pm.classB] += 1 } }
        }
        return v
    }

    /// Predicted class per row by one-vs-one voting (ties to the lower class index, as LIBSVM).
    public func predict(_ x: Matrix) throws -> [Int] { rowArgmax(votes(try decisionFunction(x))) }

    /// Per-class scores: votes plus a tie-breaking confidence in (−1/3, 1/3), as sklearn's
    /// `decision_function_shape='ovr'`. Ranks classes for top-k metrics. n x classCount.
    public func classScores(_ x: Matrix) throws -> Matrix {
        let dec = try decisionFunction(x)
        var v = votes(dec)
        for i in 0..<dec.rows {
            var conf = [Double](repeating: 0, count: classCount)
            for (p, pm) in pairs.enumerated() { conf[pm.classA] += dec[i, p]; conf[pm.classB] -= dec[i, p] }
            for c in 0..<classCount { v[i, c] += conf[c] / (3 * (abs(conf[c]) + 1)) }
        }
        return v
    }

    /// Platt-scaled class probabilities combined by pairwise coupling (Wu, Lin & Weng 2004), n x classCount.
    /// - Throws: ``HeadError/invalidParameter(_:)`` when the model was fitted without `probability`.
    public func predictProba(_ x: Matrix) throws -> Matrix {
        guard hasProbability else { throw HeadError.invalidParameter("model was trained without probability estimates") }
        let dec = try decisionFunction(x)
        var out = Matrix(zeros: x.rows, classCount)
        let minP = 1e-7
        for i in 0..<x.rows {
            var r = [[Double]](repeating: [Double](repeating: 0, count: classCount), count: classCount)
            for (p, pm) in pairs.enumerated() {
                let q = min(max(sigmoidPredict(dec[i, p], pm.probA!, pm.probB!), minP), 1 - minP)
                r[pm.classA][pm.classB] = q; r[pm.classB][pm.classA] = 1 - q
            }
            let probs = classCount == 2 ? [r[0][1], r[1][0]] : pairwiseCoupling(r)
            for c in 0..<classCount { out[i, c] = probs[c] }
        }
        return out
    }
}

/// Kernel access for SMO: a precomputed full matrix, or columns computed on demand (one `dgemv` each).
final class KernelMatrix: @unchecked Sendable {
    let x: Matrix
    let kernel: KernelSVM.Kernel
    let gamma: Double
    let norms: [Double]
    /// Full n x n kernel when within budget.
    let full: [Double]?

    init(x: Matrix, kernel: KernelSVM.Kernel, gamma: Double, budget: Int) {
        self.x = x; self.kernel = kernel; self.gamma = gamma
        let n = x.rows, d = x.cols
        var norms = [Double](repeating: 0, count: n)
        x.values.withUnsafeBufferPointer { p in
            for i in 0..<n { norms[i] = dotRaw(p.baseAddress! + i * d, p.baseAddress! + i * d, d) }
        }
        self.norms = norms
        if n * n * 8 <= budget {
            var g = [Double](repeating: 0, count: n * n)
            x.values.withUnsafeBufferPointer { p in
                g.withUnsafeMutableBufferPointer { pg in
                    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, Int32(n), Int32(d), 1, p.baseAddress, Int32(d),
                                0, pg.baseAddress, Int32(n))
                    for i in 0..<n {
                        for j in i..<n {
                            var v = pg[i * n + j]
                            if kernel == .rbf { v = exp(-gamma * (norms[i] + norms[j] - 2 * v)) }
                            pg[i * n + j] = v; pg[j * n + i] = v
                        }
                    }
                }
            }
            full = g
        } else {
            full = nil
        }
    }

    /// K(x_i, x_i).
    func diagonal(_ i: Int) -> Double { kernel == .rbf ? 1 : norms[i] }

    /// Writes K(x_rows[i], x_rows[j]) for all j into `out` (length rows.count).
    func column(_ i: Int, rows: [Int], subset: Matrix?, into out: UnsafeMutablePointer<Double>) {
        let ri = rows[i], m = rows.count
        if let g = full {
            g.withUnsafeBufferPointer { pg in
                let base = pg.baseAddress! + ri * x.rows
                for j in 0..<m { out[j] = base[rows[j]] }
            }
            return
        }
        let d = x.cols
        let sub = subset!
        x.values.withUnsafeBufferPointer { px in
            sub.values.withUnsafeBufferPointer { ps in
                cblas_dgemv(CblasRowMajor, CblasNoTrans, Int32(m), Int32(d), 1, ps.baseAddress, Int32(d),
                            px.baseAddress! + ri * d, 1, 0, out, 1)
            }
        }
        if kernel == .rbf {
            let ni = norms[ri]
            for j in 0..<m { out[j] = exp(-gamma * (ni + norms[rows[j]] - 2 * out[j])) }
        }
    }
}

/// LIBSVM's C-SVC solver (Fan, Chen & Lin 2005, WSS2), without shrinking.
enum SMOSolver {
    static let tau = 1e-12

    struct Solution { var alpha: [Double]; var rho: Double; var iterations: Int }

    static func solve(kernel: KernelMatrix, rows: [Int], y: [Double], cp: Double, cn: Double, eps: Double) -> Solution {
        let m = rows.count
        let subset: Matrix? = kernel.full == nil ? kernel.x.rows(rows) : nil
        var alpha = [Double](repeating: 0, count: m)
        var grad = [Double](repeating: -1, count: m)
        let cap = y.map { $0 > 0 ? cp : cn }
        let qd = (0..<m).map { kernel.diagonal(rows[$0]) }
        // Column cache: FIFO over at most `slots` columns (LIBSVM keeps an LRU of 200 MB by default).
        let slots = kernel.full != nil ? 2 : max(2, min(m, (256 << 20) / max(1, m * 8)))
        var cacheKeys = [Int](repeating: -1, count: slots)
        var slotOf = [Int](repeating: -1, count: m)
        var store = [Double](repeating: 0, count: slots * m)
        var nextSlot = 0
        let maxIter = max(10_000_000, m > Int(Int32.max) / 100 ? Int(Int32.max) : 100 * m)
        var iter = 0
        store.withUnsafeMutableBufferPointer { ps in
            func col(_ i: Int, pinned: Int) -> UnsafeMutablePointer<Double> {
                if slotOf[i] >= 0 { return ps.baseAddress! + slotOf[i] * m }
                var s = nextSlot
                if s == pinned { s = (s + 1) % slots }
                nextSlot = (s + 1) % slots
                if cacheKeys[s] >= 0 { slotOf[cacheKeys[s]] = -1 }
                cacheKeys[s] = i; slotOf[i] = s
                let p = ps.baseAddress! + s * m
                kernel.column(i, rows: rows, subset: subset, into: p)
                return p
            }
            @inline(__always) func upper(_ t: Int) -> Bool { alpha[t] >= cap[t] }
            @inline(__always) func lower(_ t: Int) -> Bool { alpha[t] <= 0 }
            while iter < maxIter {
                // Working-set selection (WSS2): i maximises the violation, j the second-order gain.
                var gmax = -Double.infinity, gmax2 = -Double.infinity
                var iSel = -1, jSel = -1
                var objMin = Double.infinity
                for t in 0..<m {
                    if y[t] > 0 {
                        if !upper(t) && -grad[t] >= gmax { gmax = -grad[t]; iSel = t }
                    } else {
                        if !lower(t) && grad[t] >= gmax { gmax = grad[t]; iSel = t }
                    }
                }
                guard iSel >= 0 else { break }
                let ki = col(iSel, pinned: -1)
                let slotI = slotOf[iSel]
                let yi = y[iSel]
                for t in 0..<m {
                    if y[t] > 0 {
                        if !lower(t) {
                            let diff = gmax + grad[t]
                            if grad[t] >= gmax2 { gmax2 = grad[t] }
                            if diff > 0 {
                                let quad = qd[iSel] + qd[t] - 2 * yi * (yi * y[t] * ki[t])
                                let obj = -(diff * diff) / (quad > 0 ? quad : tau)
                                if obj <= objMin { jSel = t; objMin = obj }
                            }
                        }
                    } else {
                        if !upper(t) {
                            let diff = gmax - grad[t]
                            if -grad[t] >= gmax2 { gmax2 = -grad[t] }
                            if diff > 0 {
                                let quad = qd[iSel] + qd[t] + 2 * yi * (yi * y[t] * ki[t])
                                let obj = -(diff * diff) / (quad > 0 ? quad : tau)
                                if obj <= objMin { jSel = t; objMin = obj }
                            }
                        }
                    }
                }
                if gmax + gmax2 < eps || jSel < 0 { break }
                iter += 1
                let i = iSel, j = jSel
                let kj = col(j, pinned: slotI)
                let kiNow = slotOf[i] >= 0 ? ps.baseAddress! + slotOf[i] * m : ki
                let qij = y[i] * y[j] * kiNow[j]
                let ci = cap[i], cj = cap[j]
                let oldI = alpha[i], oldJ = alpha[j]
                if y[i] != y[j] {
                    var quad = qd[i] + qd[j] + 2 * qij
                    if quad <= 0 { quad = tau }
                    let delta = (-grad[i] - grad[j]) / quad
                    let diff = alpha[i] - alpha[j]
                    alpha[i] += delta; alpha[j] += delta
                    if diff > 0 { if alpha[j] < 0 { alpha[j] = 0; alpha[i] = diff } } else { if alpha[i] < 0 { alpha[i] = 0; alpha[j] = -diff } }
                    if diff > ci - cj { if alpha[i] > ci { alpha[i] = ci; alpha[j] = ci - diff } } else { if alpha[j] > cj { alpha[j] = cj; alpha[i] = cj + diff } }
                } else {
                    var quad = qd[i] + qd[j] - 2 * qij
                    if quad <= 0 { quad = tau }
                    let delta = (grad[i] - grad[j]) / quad
                    let sum = alpha[i] + alpha[j]
                    alpha[i] -= delta; alpha[j] += delta
                    if sum > ci { if alpha[i] > ci { alpha[i] = ci; alpha[j] = sum - ci } } else { if alpha[j] < 0 { alpha[j] = 0; alpha[i] = sum } }
                    if sum > cj { if alpha[j] > cj { alpha[j] = cj; alpha[i] = sum - cj } } else { if alpha[i] < 0 { alpha[i] = 0; alpha[j] = sum } }
                }
                // G_t += Q_ti Δα_i + Q_tj Δα_j with Q_ts = y_t y_s K_ts.
                let di = (alpha[i] - oldI) * y[i], dj = (alpha[j] - oldJ) * y[j]
                for t in 0..<m { grad[t] += y[t] * (kiNow[t] * di + kj[t] * dj) }
            }
        }
        // rho: average y G over free variables, else the midpoint of the feasible interval.
        var ub = Double.infinity, lb = -Double.infinity, sumFree = 0.0, nFree = 0
        for t in 0..<m {
            let yg = y[t] * grad[t]
            if alpha[t] >= cap[t] {
                if y[t] < 0 { ub = min(ub, yg) } else { lb = max(lb, yg) }
            } else if alpha[t] <= 0 {
                if y[t] > 0 { ub = min(ub, yg) } else { lb = max(lb, yg) }
            } else { nFree += 1; sumFree += yg }
        }
        let rho = nFree > 0 ? sumFree / Double(nFree) : (ub + lb) / 2
        return Solution(alpha: alpha, rho: rho, iterations: iter)
    }
}

/// Platt parameters from decision values of a seeded 5-fold cross-validation on one pair (as LIBSVM's
/// `svm_binary_svc_probability`, except that the fold permutation comes from ``SplitMix64``).
func plattCV(kernel: KernelMatrix, rows: [Int], y: [Double], cp: Double, cn: Double, eps: Double,
             seed: UInt64) -> (Double, Double) {
    let l = rows.count, folds = 5
    var perm = Array(0..<l)
    var rng = SplitMix64(seed: seed)
    for i in 0..<l { let j = i + Int(rng.next() % UInt64(l - i)); perm.swapAt(i, j) }
    var dec = [Double](repeating: 0, count: l)
    for f in 0..<folds {
        let begin = f * l / folds, end = (f + 1) * l / folds
        let train = Array(perm[0..<begin]) + Array(perm[end..<l])
        let trainRows = train.map { rows[$0] }, trainY = train.map { y[$0] }
        let pos = trainY.filter { $0 > 0 }.count
        if pos == 0 || pos == trainY.count {
            for t in begin..<end { dec[perm[t]] = pos == 0 ? -1 : 1 }
            continue
        }
        let sol = SMOSolver.solve(kernel: kernel, rows: trainRows, y: trainY, cp: cp, cn: cn, eps: eps)
        for t in begin..<end {
            let r = rows[perm[t]]
            var s = -sol.rho
            let col = UnsafeMutablePointer<Double>.allocate(capacity: trainRows.count + 1)
            kernel.column(0, rows: [r] + trainRows, subset: kernel.full == nil ? kernel.x.rows([r] + trainRows) : nil, into: col)
            // col[0] is K(r, r); col[1...] are K(r, train).
            for k in 0..<trainRows.count where sol.alpha[k] > 0 { s += sol.alpha[k] * trainY[k] * col[k + 1] }
            col.deallocate()
            dec[perm[t]] = s
        }
    }
    return sigmoidTrain(dec, y)
}
