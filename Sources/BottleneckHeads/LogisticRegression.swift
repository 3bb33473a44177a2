import CBLAS
import Foundation

/// Multinomial (or, for two classes, binomial) logistic regression with an L2 penalty, fitted by L-BFGS.
///
/// Objective (identical to scikit-learn's `LogisticRegression(solver='lbfgs')`, including its scaling,
/// so tolerances mean the same thing):
///
///     f(W, b) = (1 / S) * Σ_i s_i * ℓ(y_i, W x_i + b)  +  1 / (2 C S) * ||W||²,   S = Σ_i s_i
///
/// where ℓ is the multinomial cross-entropy (`logsumexp(z) - z_y`; for two classes the binomial
/// loss on a single weight row, as sklearn does), `s_i` are sample weights from ``ClassWeight``,
/// and the intercept `b` is not penalised. Each objective evaluation costs two `dgemm`s,
/// O(n · d · k).
public struct LogisticRegression: Codable, Sendable, Equatable {
    /// Inverse regularisation strength (sklearn's `C`).
    public var C: Double
    /// Class weighting used when fitting.
    public var classWeight: ClassWeight
    /// Number of classes (≥ 2).
    public var classCount: Int
    /// Weight rows: `classCount x d` (multinomial) or `1 x d` for two classes (positive class = 1).
    public var coef: Matrix
    /// Intercepts, one per weight row.
    public var intercept: [Double]
    /// L-BFGS iterations used.
    public var iterations: Int
    /// Whether the gradient/objective tolerance was reached before `maxIterations`.
    public var converged: Bool

    /// Fitting options.
    public struct Options: Sendable {
        /// Inverse regularisation strength (> 0).
        public var C: Double = 1
        /// Class weighting.
        public var classWeight: ClassWeight = .none
        /// Maximum L-BFGS iterations (sklearn default 100).
        public var maxIterations: Int = 100
        /// Stop when max |∇f| ≤ tolerance (sklearn's `tol`, default 1e-4).
        public var tolerance: Double = 1e-4
        /// Creates options; every argument has sklearn's default.
        public init(C: Double = 1, classWeight: ClassWeight = .none, maxIterations: Int = 100, tolerance: Double = 1e-4) {
            self.C = C; self.classWeight = classWeight; self.maxIterations = maxIterations; self.tolerance = tolerance
        }
    }

    /// Fits on `x` (n x d, already scaled) with labels in `0..<classCount`.
    /// - Throws: ``HeadError`` for invalid C, empty/single/absent classes, label or shape mismatches, NaN/Inf.
    public static func fit(_ x: Matrix, labels: [Int], classCount: Int, options: Options = Options(),
                           classNames: [String]? = nil) throws -> LogisticRegression {
        guard options.C > 0, options.C.isFinite else { throw HeadError.invalidParameter("C must be > 0, got \(options.C)") }
        guard options.maxIterations > 0 else { throw HeadError.invalidParameter("maxIterations must be > 0") }
        try validateTraining(x, labels: labels, classCount: classCount, classNames: classNames, context: "LogisticRegression.fit")
        let n = x.rows, d = x.cols
        let k = classCount == 2 ? 1 : classCount
        let cw = options.classWeight.classWeights(labels: labels, classCount: classCount)
        let sw = labels.map { cw[$0] }
        let swSum = sw.reduce(0, +)
        let l2 = 1 / (options.C * swSum)
        let nw = k * d
        var z = [Double](repeating: 0, count: n * k)
        var r = [Double](repeating: 0, count: n * k)

        // Objective and gradient for the flat parameter vector [W (k x d, row-major), b (k)].
        let fg: ([Double], inout [Double]) -> Double = { theta, grad in
            var loss = 0.0
            theta.withUnsafeBufferPointer { pt in
                x.values.withUnsafeBufferPointer { px in
                    z.withUnsafeMutableBufferPointer { pz in
                        for i in 0..<n { for c in 0..<k { pz[i * k + c] = pt[nw + c] } }
                        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(k), Int32(d),
                                    1, px.baseAddress, Int32(d), pt.baseAddress, Int32(d), 1, pz.baseAddress, Int32(k))
                    }
                }
            }
            z.withUnsafeBufferPointer { pz in
                r.withUnsafeMutableBufferPointer { pr in
                    for i in 0..<n {
                        let zi = pz.baseAddress! + i * k, ri = pr.baseAddress! + i * k
                        let y = labels[i], s = sw[i] / swSum
                        if k == 1 {
                            // Binomial: log(1 + e^z) - y z, stable for large |z|.
                            let t = zi[0], yy = y == 1 ? 1.0 : 0.0
                            let lse = t > 0 ? t + log1p(exp(-t)) : log1p(exp(t))
                            loss += s * (lse - yy * t)
                            let p = t > 0 ? 1 / (1 + exp(-t)) : exp(t) / (1 + exp(t))
                            ri[0] = s * (p - yy)
                        } else {
                            var m = zi[0]
                            for c in 1..<k { m = max(m, zi[c]) }
                            var sum = 0.0
                            for c in 0..<k { let e = exp(zi[c] - m); ri[c] = e; sum += e }
                            loss += s * (m + log(sum) - zi[y])
                            let inv = 1 / sum
                            for c in 0..<k { ri[c] = s * ri[c] * inv }
                            ri[y] -= s
                        }
                    }
                }
            }
            var penalty = 0.0
            theta.withUnsafeBufferPointer { pt in
                for j in 0..<nw { penalty += pt[j] * pt[j] }
                grad.withUnsafeMutableBufferPointer { pg in
                    for j in 0..<nw { pg[j] = l2 * pt[j] }
                    r.withUnsafeBufferPointer { pr in
                        x.values.withUnsafeBufferPointer { px in
                            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(k), Int32(d), Int32(n),
                                        1, pr.baseAddress, Int32(k), px.baseAddress, Int32(d), 1, pg.baseAddress, Int32(d))
                        }
                        for c in 0..<k {
                            var s = 0.0
                            for i in 0..<n { s += pr[i * k + c] }
                            pg[nw + c] = s
                        }
                    }
                }
            }
            return loss + 0.5 * l2 * penalty
        }
        var solver = LBFGS()
        solver.maxIterations = options.maxIterations
        solver.gradientTolerance = options.tolerance
        let res = solver.minimize(x0: [Double](repeating: 0, count: nw + k), fg)
        return LogisticRegression(C: options.C, classWeight: options.classWeight, classCount: classCount,
                                  coef: Matrix(rows: k, cols: d, values: Array(res.x[0..<nw])),
                                  intercept: Array(res.x[nw...]), iterations: res.iterations, converged: res.converged)
    }

    /// Feature dimension the model expects.
    public var dimension: Int { coef.cols }

    /// Raw scores `X Wᵀ + b`: n x classCount (n x 1 for two classes, positive = class 1), as sklearn's `decision_function`.
    public func decisionFunction(_ x: Matrix) throws -> Matrix {
        try x.checkColumns(dimension, context: "LogisticRegression.decisionFunction")
        try x.checkFinite(context: "LogisticRegression.decisionFunction")
        return linearScores(x, weights: coef.values, outputs: coef.rows, bias: intercept)
    }

    /// Class probabilities, n x classCount (softmax of the scores; sigmoid for two classes).
    public func predictProba(_ x: Matrix) throws -> Matrix {
        let z = try decisionFunction(x)
        var out = Matrix(zeros: x.rows, classCount)
        for i in 0..<x.rows {
            if coef.rows == 1 {
                let t = z[i, 0]
                let p = t > 0 ? 1 / (1 + exp(-t)) : exp(t) / (1 + exp(t))
                out[i, 0] = 1 - p; out[i, 1] = p
            } else {
                var m = -Double.infinity
                for c in 0..<classCount { m = max(m, z[i, c]) }
                var s = 0.0
                for c in 0..<classCount { let e = exp(z[i, c] - m); out[i, c] = e; s += e }
                for c in 0..<classCount { out[i, c] /= s }
            }
        }
        return out
    }

    /// Predicted class index per row (argmax of the scores).
    public func predict(_ x: Matrix) throws -> [Int] {
        let z = try decisionFunction(x)
        if coef.rows == 1 { return (0..<z.rows).map { z[$0, 0] > 0 ? 1 : 0 } }
        return rowArgmax(z)
    }
}
