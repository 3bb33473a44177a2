import Foundation

/// Fits P(y = +1 | f) = 1 / (1 + exp(A f + B)) by Newton's method with backtracking
/// (Lin, Lin & Weng 2007, the algorithm LIBSVM uses), with Platt's smoothed targets.
func sigmoidTrain(_ dec: [Double], _ y: [Double]) -> (Double, Double) {
    let prior1 = Double(y.filter { $0 > 0 }.count), prior0 = Double(y.count) - prior1
    let maxIter = 100, minStep = 1e-10, sigma = 1e-12, eps = 1e-5
    let hi = (prior1 + 1) / (prior1 + 2), lo = 1 / (prior0 + 2)
    let t = y.map { $0 > 0 ? hi : lo }
    var A = 0.0, B = log((prior0 + 1) / (prior1 + 1))
    func objective(_ a: Double, _ b: Double) -> Double {
        var f = 0.0
        for i in 0..<dec.count {
            let v = dec[i] * a + b
            f += v >= 0 ? t[i] * v + log1p(exp(-v)) : (t[i] - 1) * v + log1p(exp(v))
        }
        return f
    }
    var fval = objective(A, B)
    for _ in 0..<maxIter {
        var h11 = sigma, h22 = sigma, h21 = 0.0, g1 = 0.0, g2 = 0.0
        for i in 0..<dec.count {
            let v = dec[i] * A + B
            let p: Double, q: Double
            if v >= 0 { p = exp(-v) / (1 + exp(-v)); q = 1 / (1 + exp(-v)) } else { p = 1 / (1 + exp(v)); q = exp(v) / (1 + exp(v)) }
            let d2 = p * q
            h11 += dec[i] * dec[i] * d2; h22 += d2; h21 += dec[i] * d2
            let d1 = t[i] - p
            g1 += dec[i] * d1; g2 += d1
        }
        if abs(g1) < eps && abs(g2) < eps { break }
        let det = h11 * h22 - h21 * h21
        let dA = -(h22 * g1 - h21 * g2) / det, dB = -(-h21 * g1 + h11 * g2) / det
        let gd = g1 * dA + g2 * dB
        var step = 1.0
        while step >= minStep {
            let nA = A + step * dA, nB = B + step * dB
            let nf = objective(nA, nB)
            if nf < fval + 1e-4 * step * gd { A = nA; B = nB; fval = nf; break }
            step /= 2
        }
        if step < minStep { break }
    }
    return (A, B)
}

/// P(+1) for decision value `f` under sigmoid (A, B), computed without overflow.
func sigmoidPredict(_ f: Double, _ A: Double, _ B: Double) -> Double {
    let v = f * A + B
    return v >= 0 ? exp(-v) / (1 + exp(-v)) : 1 / (1 + exp(v))
}

/// Class probabilities from pairwise probabilities `r[i][j]` = P(i | i or j) (Wu, Lin & Weng 2004, method 2).
func pairwiseCoupling(_ r: [[Double]]) -> [Double] {
    let k = r.count
    var p = [Double](repeating: 1 / Double(k), count: k)
    var q = [[Double]](repeating: [Double](repeating: 0, count: k), count: k)
    for t in 0..<k {
        for j in 0..<k where j != t {
            q[t][t] += r[j][t] * r[j][t]
            q[t][j] = -r[j][t] * r[t][j]
        }
    }
    var qp = [Double](repeating: 0, count: k)
    let eps = 0.005 / Double(k)
    for _ in 0..<max(100, k) {
        var pqp = 0.0
        for t in 0..<k {
            qp[t] = 0
            for j in 0..<k { qp[t] += q[t][j] * p[j] }
            pqp += p[t] * qp[t]
        }
        var maxErr = 0.0
        for t in 0..<k { maxErr = max(maxErr, abs(qp[t] - pqp)) }
        if maxErr < eps { break }
        for t in 0..<k {
            let diff = (-qp[t] + pqp) / q[t][t]
            p[t] += diff
            pqp = (pqp + diff * (diff * q[t][t] + 2 * qp[t])) / ((1 + diff) * (1 + diff))
            for j in 0..<k { qp[j] = (qp[j] + diff * q[t][j]) / (1 + diff); p[j] /= 1 + diff }
        }
    }
    return p
}
