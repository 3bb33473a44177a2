import Foundation

/// The classifier families available as heads.
public enum HeadKind: String, Codable, Sendable, CaseIterable {
    /// Multinomial logistic regression (L-BFGS).
    case logreg
    /// Linear SVM by dual coordinate descent, one-vs-rest.
    case linearSVM = "linear-svm"
    /// RBF-kernel SVM by SMO, one-vs-one.
    case rbfSVM = "rbf-svm"
    /// Linear-kernel SVM by SMO, one-vs-one (sklearn's `SVC(kernel='linear')`).
    case kernelLinearSVM = "linear-kernel-svm"
}

/// Everything needed to fit one head; defaults are scikit-learn's.
public struct HeadConfig: Codable, Sendable, Equatable {
    /// Head family.
    public var kind: HeadKind
    /// Inverse regularisation strength.
    public var C: Double = 1
    /// RBF gamma; `nil` = `'scale'`.
    public var gamma: Double? = nil
    /// Class weighting.
    public var classWeight: ClassWeight = .none
    /// Solver tolerance; `nil` = the family's sklearn default (1e-4 logreg/linear SVM, 1e-3 kernel SVM).
    public var tolerance: Double? = nil
    /// Iteration cap; `nil` = sklearn default (100 logreg, 1000 linear SVM).
    public var maxIterations: Int? = nil
    /// Linear SVM loss.
    public var loss: LinearSVM.Loss = .squaredHinge
    /// Kernel SVM: fit Platt probabilities.
    public var probability: Bool = false
    /// Seed for solver randomness (coordinate order, probability CV folds).
    public var seed: UInt64 = 0

    /// Creates a configuration for `kind` with sklearn defaults.
    public init(kind: HeadKind, C: Double = 1, gamma: Double? = nil, classWeight: ClassWeight = .none) {
        self.kind = kind; self.C = C; self.gamma = gamma; self.classWeight = classWeight
    }

    /// Fits this head on scaled features.
    /// - Throws: ``HeadError`` from the underlying solver's validation.
    public func fit(_ x: Matrix, labels: [Int], classCount: Int, classNames: [String]? = nil) throws -> TrainedHead {
        switch kind {
        case .logreg:
            var o = LogisticRegression.Options(C: C, classWeight: classWeight)
            if let t = tolerance { o.tolerance = t }
            if let m = maxIterations { o.maxIterations = m }
            return .logreg(try LogisticRegression.fit(x, labels: labels, classCount: classCount, options: o, classNames: classNames))
        case .linearSVM:
            var o = LinearSVM.Options(C: C, loss: loss, classWeight: classWeight, seed: seed)
            if let t = tolerance { o.tolerance = t }
            if let m = maxIterations { o.maxIterations = m }
            return .linearSVM(try LinearSVM.fit(x, labels: labels, classCount: classCount, options: o, classNames: classNames))
        case .rbfSVM, .kernelLinearSVM:
            var o = KernelSVM.Options(C: C, kernel: kind == .rbfSVM ? .rbf : .linear, gamma: gamma, classWeight: classWeight,
                                      probability: probability, seed: seed)
            if let t = tolerance { o.tolerance = t }
            return .kernelSVM(try KernelSVM.fit(x, labels: labels, classCount: classCount, options: o, classNames: classNames))
        }
    }
}

/// A fitted head of any family, with a uniform prediction interface.
public enum TrainedHead: Codable, Sendable, Equatable {
    /// Logistic regression.
    case logreg(LogisticRegression)
    /// Linear SVM.
    case linearSVM(LinearSVM)
    /// Kernel SVM.
    case kernelSVM(KernelSVM)

    /// Feature dimension expected.
    public var dimension: Int {
        switch self {
        case .logreg(let m): return m.dimension
        case .linearSVM(let m): return m.dimension
        case .kernelSVM(let m): return m.dimension
        }
    }

    /// Number of classes.
    public var classCount: Int {
        switch self {
        case .logreg(let m): return m.classCount
        case .linearSVM(let m): return m.classCount
        case .kernelSVM(let m): return m.classCount
        }
    }

    /// Predicted class per row.
    public func predict(_ x: Matrix) throws -> [Int] {
        switch self {
        case .logreg(let m): return try m.predict(x)
        case .linearSVM(let m): return try m.predict(x)
        case .kernelSVM(let m): return try m.predict(x)
        }
    }

    /// Per-class scores for ranking (n x classCount): probabilities where available (logreg, kernel SVM with
    /// Platt), decision values for the linear SVM (binary: [−f, f]), vote-based scores for kernel SVM otherwise.
    public func classScores(_ x: Matrix) throws -> Matrix {
        switch self {
        case .logreg(let m): return try m.predictProba(x)
        case .linearSVM(let m):
            let z = try m.decisionFunction(x)
            guard m.coef.rows == 1 else { return z }
            var out = Matrix(zeros: x.rows, 2)
            for i in 0..<x.rows { out[i, 0] = -z[i, 0]; out[i, 1] = z[i, 0] }
            return out
        case .kernelSVM(let m): return m.hasProbability ? try m.predictProba(x) : try m.classScores(x)
        }
    }

    /// Whether ``classScores(_:)`` are probabilities.
    public var scoresAreProbabilities: Bool {
        switch self {
        case .logreg: return true
        case .linearSVM: return false
        case .kernelSVM(let m): return m.hasProbability
        }
    }

    /// Short name of the family.
    public var kindName: String {
        switch self {
        case .logreg: return HeadKind.logreg.rawValue
        case .linearSVM: return HeadKind.linearSVM.rawValue
        case .kernelSVM(let m): return m.kernel == .rbf ? HeadKind.rbfSVM.rawValue : HeadKind.kernelLinearSVM.rawValue
        }
    }
}
