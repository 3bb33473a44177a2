import Foundation

/// Limited-memory BFGS minimiser with a strong-Wolfe line search (Nocedal & Wright, Alg. 7.4, 3.5, 3.6).
///
/// Stopping rules mirror SciPy's L-BFGS-B as scikit-learn configures it: the largest absolute
/// gradient component at most `gradientTolerance`, or a relative objective decrease
/// `(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1)` at most `functionTolerance`, or `maxIterations`.
struct LBFGS {
    /// Number of correction pairs kept (SciPy's `maxcor` default is 10).
    var memory = 10
    var maxIterations = 100
    var gradientTolerance = 1e-4
    var functionTolerance = 64 * Double.ulpOfOne
    /// Objective evaluations allowed per line search (scikit-learn passes `maxls=50`).
    var maxLineSearch = 50

    struct Result {
        var x: [Double]
        var f: Double
        var iterations: Int
        var converged: Bool
    }

    /// Minimises `fg`, which returns f(x) and writes ∇f(x) into its second argument.
    func minimize(x0: [Double], _ fg: ([Double], inout [Double]) -> Double) -> Result {
        let n = x0.count
        var x = x0
        var g = [Double](repeating: 0, count: n)
        var f = fg(x, &g)
        var sList: [[Double]] = [], yList: [[Double]] = [], rhoList: [Double] = []
        var d = [Double](repeating: 0, count: n)
        var alphaHist = [Double](repeating: 0, count: memory)
        var iter = 0
        if maxAbs(g) <= gradientTolerance { return Result(x: x, f: f, iterations: 0, converged: true) }
        while iter < maxIterations {
            // Two-loop recursion: d = -H g.
            for i in 0..<n { d[i] = -g[i] }
            let m = sList.count
            if m > 0 {
                for k in stride(from: m - 1, through: 0, by: -1) {
                    let a = rhoList[k] * dot(sList[k], d)
                    alphaHist[k] = a
                    axpy(-a, yList[k], &d)
                }
                let gamma = dot(sList[m - 1], yList[m - 1]) / dot(yList[m - 1], yList[m - 1])
                for i in 0..<n { d[i] *= gamma }
                for k in 0..<m {
                    let b = rhoList[k] * dot(yList[k], d)
                    axpy(alphaHist[k] - b, sList[k], &d)
                }
            }
            var dg = dot(g, d)
            if !(dg < 0) {
                // Not a descent direction (numerical breakdown): restart from steepest descent.
                sList.removeAll(); yList.removeAll(); rhoList.removeAll()
                for i in 0..<n { d[i] = -g[i] }
                dg = dot(g, d)
            }
            // First step: unit step in x-space is usually far too long; SciPy uses 1/||g||.
            let initial = sList.isEmpty ? min(1.0, 1.0 / dot(d, d).squareRoot()) : 1.0
            guard let ls = lineSearch(x: x, f: f, g: g, d: d, dg0: dg, initial: initial, fg) else {
                return Result(x: x, f: f, iterations: iter, converged: false)
            }
            iter += 1
            var s = [Double](repeating: 0, count: n), y = s
            for i in 0..<n { s[i] = ls.x[i] - x[i]; y[i] = ls.g[i] - g[i] }
            let fOld = f
            x = ls.x; f = ls.f; g = ls.g
            let sy = dot(s, y)
            if sy > Double.ulpOfOne * dot(y, y) {
                if sList.count == memory { sList.removeFirst(); yList.removeFirst(); rhoList.removeFirst() }
                sList.append(s); yList.append(y); rhoList.append(1 / sy)
            }
            if maxAbs(g) <= gradientTolerance { return Result(x: x, f: f, iterations: iter, converged: true) }
            if (fOld - f) / max(abs(fOld), abs(f), 1) <= functionTolerance {
                return Result(x: x, f: f, iterations: iter, converged: true)
            }
        }
        return Result(x: x, f: f, iterations: iter, converged: false)
    }

    private struct Point { var x: [Double]; var f: Double; var g: [Double]; var dg: Double }

    /// Strong-Wolfe line search (c1 = 1e-4, c2 = 0.9) with safeguarded cubic interpolation in the zoom phase.
    private func lineSearch(x: [Double], f: Double, g: [Double], d: [Double], dg0: Double, initial: Double,
                            _ fg: ([Double], inout [Double]) -> Double) -> Point? {
        let c1 = 1e-4, c2 = 0.9
        // A reference box: `eval` (captured by `zoom`) and the loops both update the count, which an
        // inout Int would make an overlapping access.
        let evals = EvaluationCounter()
        func eval(_ a: Double) -> Point {
            evals.count += 1
            var xn = x
            axpy(a, d, &xn)
            var gn = [Double](repeating: 0, count: x.count)
            let fn = fg(xn, &gn)
            return Point(x: xn, f: fn, g: gn, dg: dot(gn, d))
        }
        var aPrev = 0.0, fPrev = f, dgPrev = dg0
        var a = initial
        var best: (a: Double, p: Point)? = nil
        while evals.count < maxLineSearch {
            let p = eval(a)
            if !p.f.isFinite { a *= 0.5; continue }
            if p.f > f + c1 * a * dg0 || (evals.count > 1 && p.f >= fPrev) {
                return zoom(lo: aPrev, fLo: fPrev, dgLo: dgPrev, hi: a, fHi: p.f, dgHi: p.dg, f0: f, dg0: dg0,
                            c1: c1, c2: c2, evals: evals, eval) ?? best?.p
            }
            if abs(p.dg) <= -c2 * dg0 { return p }
            best = (a, p)
            if p.dg >= 0 {
                return zoom(lo: a, fLo: p.f, dgLo: p.dg, hi: aPrev, fHi: fPrev, dgHi: dgPrev, f0: f, dg0: dg0,
                            c1: c1, c2: c2, evals: evals, eval) ?? p
            }
            aPrev = a; fPrev = p.f; dgPrev = p.dg
            a *= 2.5
        }
        return best?.p
    }

    private func zoom(lo: Double, fLo: Double, dgLo: Double, hi: Double, fHi: Double, dgHi: Double,
                      f0: Double, dg0: Double, c1: Double, c2: Double, evals: EvaluationCounter,
                      _ eval: (Double) -> Point) -> Point? {
        var lo = lo, fLo = fLo, dgLo = dgLo, hi = hi, fHi = fHi, dgHi = dgHi
        var bestLo: Point? = nil
        while evals.count < maxLineSearch {
            // Cubic interpolant of the two bracket ends; fall back to bisection when it leaves the safe interval.
            var a = cubicMin(lo, fLo, dgLo, hi, fHi, dgHi)
            let left = min(lo, hi), right = max(lo, hi), width = right - left
            if !a.isFinite || a <= left + 0.1 * width || a >= right - 0.1 * width { a = 0.5 * (lo + hi) }
            if width <= 1e-16 * max(1, right) { return bestLo }
            let p = eval(a)
            if p.f > f0 + c1 * a * dg0 || p.f >= fLo {
                hi = a; fHi = p.f; dgHi = p.dg
            } else {
                if abs(p.dg) <= -c2 * dg0 { return p }
                if p.dg * (hi - lo) >= 0 { hi = lo; fHi = fLo; dgHi = dgLo }
                lo = a; fLo = p.f; dgLo = p.dg
                bestLo = p
            }
        }
        return bestLo
    }

    private func cubicMin(_ a: Double, _ fa: Double, _ ga: Double, _ b: Double, _ fb: Double, _ gb: Double) -> Double {
        let d1 = ga + gb - 3 * (fa - fb) / (a - b)
        let disc = d1 * d1 - ga * gb
        guard disc >= 0 else { return .nan }
        let d2 = (b > a ? 1.0 : -1.0) * disc.squareRoot()
        return b - (b - a) * (gb + d2 - d1) / (gb - ga + 2 * d2)
    }
}

@inline(__always) func dot(_ a: [Double], _ b: [Double]) -> Double {
    a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
            let n = pa.count
            var i = 0
            while i + 4 <= n { s0 += pa[i] * pb[i]; s1 += pa[i + 1] * pb[i + 1]; s2 += pa[i + 2] * pb[i + 2]; s3 += pa[i + 3] * pb[i + 3]; i += 4 }
            while i < n { s0 += pa[i] * pb[i]; i += 1 }
            return (s0 + s1) + (s2 + s3)
        }
    }
}

@inline(__always) func axpy(_ a: Double, _ x: [Double], _ y: inout [Double]) {
    x.withUnsafeBufferPointer { px in
        y.withUnsafeMutableBufferPointer { py in
            for i in 0..<px.count { py[i] += a * px[i] }
        }
    }
}

@inline(__always) func maxAbs(_ a: [Double]) -> Double {
    var m = 0.0
    for v in a { m = max(m, abs(v)) }
    return m
}

/// Counts objective evaluations in one line search (shared by the bracketing and zoom phases).
final class EvaluationCounter {
    var count = 0
}
