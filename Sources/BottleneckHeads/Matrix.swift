import Foundation

/// A dense row-major matrix of `Double` (`rows x cols`), the input type of every head.
///
/// Heads compute in double precision, as scikit-learn does on float64 input, so that optima
/// match to ~1e-6 relative; features arrive as float32 and are widened exactly.
public struct Matrix: Codable, Sendable, Equatable {
    /// Number of rows (samples).
    public let rows: Int
    /// Number of columns (features).
    public let cols: Int
    /// Elements in row-major order; element (i, j) is at `i * cols + j`.
    public var values: [Double]

    /// Creates a matrix from row-major `values`. Precondition: `values.count == rows * cols`.
    public init(rows: Int, cols: Int, values: [Double]) {
        precondition(values.count == rows * cols, "Matrix: \(values.count) values for \(rows)x\(cols)")
        self.rows = rows; self.cols = cols; self.values = values
    }

    /// A zero-filled `rows x cols` matrix.
    public init(zeros rows: Int, _ cols: Int) {
        self.init(rows: rows, cols: cols, values: [Double](repeating: 0, count: rows * cols))
    }

    /// Widens row-major float32 features (e.g. the contents of `features.npy`) to double.
    public init(rows: Int, cols: Int, float32 values: [Float]) {
        precondition(values.count == rows * cols, "Matrix: \(values.count) values for \(rows)x\(cols)")
        self.rows = rows; self.cols = cols
        self.values = [Double](unsafeUninitializedCapacity: values.count) { buf, n in
            values.withUnsafeBufferPointer { src in
                for i in 0..<src.count { buf[i] = Double(src[i]) }
            }
            n = values.count
        }
    }

    /// Builds a matrix from equally long rows. Throws if rows differ in length or there are none.
    public init(rowArrays: [[Double]]) throws {
        guard let first = rowArrays.first else { throw HeadError.emptyData(context: "Matrix(rowArrays:)") }
        var v: [Double] = []; v.reserveCapacity(first.count * rowArrays.count)
        for r in rowArrays {
            guard r.count == first.count else {
                throw HeadError.dimensionMismatch(expected: first.count, got: r.count, context: "Matrix(rowArrays:)")
            }
            v.append(contentsOf: r)
        }
        self.init(rows: rowArrays.count, cols: first.count, values: v)
    }

    /// Element (i, j).
    @inlinable public subscript(i: Int, j: Int) -> Double {
        get { values[i * cols + j] }
        set { values[i * cols + j] = newValue }
    }

    /// Row `i` as a new array.
    public func row(_ i: Int) -> [Double] { Array(values[i * cols..<(i + 1) * cols]) }

    /// The rows at `indices`, in that order (O(indices.count * cols)).
    public func rows(_ indices: [Int]) -> Matrix {
        var out = [Double](repeating: 0, count: indices.count * cols)
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for (r, i) in indices.enumerated() {
                    let s = src.baseAddress! + i * cols
                    (dst.baseAddress! + r * cols).update(from: s, count: cols)
                }
            }
        }
        return Matrix(rows: indices.count, cols: cols, values: out)
    }

    /// Throws ``HeadError/nonFinite(row:column:context:)`` at the first NaN or infinity.
    public func checkFinite(context: String) throws {
        let bad: Int? = values.withUnsafeBufferPointer { p in
            for i in 0..<p.count where !p[i].isFinite { return i }
            return nil
        }
        if let b = bad { throw HeadError.nonFinite(row: b / max(cols, 1), column: b % max(cols, 1), context: context) }
    }

    /// Throws unless the matrix has `expected` columns.
    public func checkColumns(_ expected: Int, context: String) throws {
        guard cols == expected else { throw HeadError.dimensionMismatch(expected: expected, got: cols, context: context) }
    }

    /// Scales every row to unit Euclidean norm (rows of norm 0 stay zero), as `sklearn.preprocessing.normalize`.
    public func l2RowNormalized() -> Matrix {
        var out = self
        out.values.withUnsafeMutableBufferPointer { p in
            for i in 0..<rows {
                let r = p.baseAddress! + i * cols
                var s = 0.0
                for j in 0..<cols { s += r[j] * r[j] }
                guard s > 0 else { continue }
                let norm = s.squareRoot()
                for j in 0..<cols { r[j] /= norm }
            }
        }
        return out
    }
}

/// Per-feature standardisation `(x - mean) / scale`, fitted on training rows only.
///
/// Matches `sklearn.preprocessing.StandardScaler`: population standard deviation (ddof 0),
/// and features whose variance is (numerically) zero get scale 1 so they map to 0, not NaN.
public struct StandardScaler: Codable, Sendable, Equatable {
    /// Per-feature means (length = feature count).
    public var mean: [Double]
    /// Per-feature divisors (population std; 1 for constant features).
    public var scale: [Double]
    /// Whether rows are L2-normalised before standardisation.
    public var l2Normalize: Bool

    /// Creates a scaler from explicit parameters.
    public init(mean: [Double], scale: [Double], l2Normalize: Bool = false) {
        self.mean = mean; self.scale = scale; self.l2Normalize = l2Normalize
    }

    /// An identity scaler for `dimension` features (no centring, unit scale).
    public static func identity(dimension: Int, l2Normalize: Bool = false) -> StandardScaler {
        StandardScaler(mean: [Double](repeating: 0, count: dimension), scale: [Double](repeating: 1, count: dimension),
                       l2Normalize: l2Normalize)
    }

    /// Number of features the scaler expects.
    public var dimension: Int { mean.count }

    /// Fits means and scales on `x` (two passes for accuracy; O(rows * cols)).
    /// - Throws: ``HeadError`` on empty or non-finite data.
    public static func fit(_ x: Matrix, l2Normalize: Bool = false) throws -> StandardScaler {
        guard x.rows > 0 else { throw HeadError.emptyData(context: "StandardScaler.fit") }
        try x.checkFinite(context: "StandardScaler.fit")
        let data = l2Normalize ? x.l2RowNormalized() : x
        let n = data.rows, d = data.cols
        var mean = [Double](repeating: 0, count: d)
        var variance = [Double](repeating: 0, count: d)
        data.values.withUnsafeBufferPointer { p in
            for i in 0..<n { for j in 0..<d { mean[j] += p[i * d + j] } }
            for j in 0..<d { mean[j] /= Double(n) }
            for i in 0..<n { for j in 0..<d { let c = p[i * d + j] - mean[j]; variance[j] += c * c } }
        }
        // sklearn treats a variance below ~10 eps * mean^2 as zero (catastrophic cancellation); same rule here.
        let eps = Double.ulpOfOne
        var scale = [Double](repeating: 1, count: d)
        for j in 0..<d {
            let v = variance[j] / Double(n)
            let bound = 10 * eps * mean[j] * mean[j]
            let sd = v.squareRoot()
            scale[j] = (v <= bound || sd < 10 * eps) ? 1 : sd
        }
        return StandardScaler(mean: mean, scale: scale, l2Normalize: l2Normalize)
    }

    /// Applies the fitted transform to `x`.
    /// - Throws: ``HeadError/dimensionMismatch(expected:got:context:)`` or ``HeadError/nonFinite(row:column:context:)``.
    public func transform(_ x: Matrix) throws -> Matrix {
        try x.checkColumns(dimension, context: "StandardScaler.transform")
        try x.checkFinite(context: "StandardScaler.transform")
        var out = l2Normalize ? x.l2RowNormalized() : x
        let d = dimension
        out.values.withUnsafeMutableBufferPointer { p in
            mean.withUnsafeBufferPointer { m in
                scale.withUnsafeBufferPointer { s in
                    for i in 0..<x.rows {
                        let r = p.baseAddress! + i * d
                        for j in 0..<d { r[j] = (r[j] - m[j]) / s[j] }
                    }
                }
            }
        }
        return out
    }
}
