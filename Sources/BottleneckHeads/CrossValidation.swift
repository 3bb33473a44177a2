import BottleneckCore
import Foundation

/// Stratified k-fold assignment, identical to scikit-learn's `StratifiedKFold(n_splits=k, shuffle=False)`.
///
/// Classes are ordered by first appearance, the sorted label sequence is dealt round-robin to folds to
/// get per-fold class counts, then each class's samples (in data order) fill folds 0, 1, … with those counts.
/// With `shuffleSeed`, each class's fold sequence is permuted by ``SplitMix64`` (deterministic, but not
/// NumPy's permutation).
public enum StratifiedKFold {
    /// Fold index (0..<folds) of every sample. O(n · folds).
    /// - Throws: ``HeadError/invalidParameter(_:)`` when `folds < 2` or `folds` exceeds the sample count.
    ///   Classes smaller than `folds` are allowed (sklearn only warns); such classes are absent from some
    ///   test folds, and ``GridSearch`` reports a fold whose training part lacks a class.
    public static func assign(labels: [Int], folds: Int, shuffleSeed: UInt64? = nil) throws -> [Int] {
        guard folds >= 2 else { throw HeadError.invalidParameter("cross-validation needs at least 2 folds, got \(folds)") }
        guard folds <= labels.count else {
            throw HeadError.invalidParameter("cannot make \(folds) folds from \(labels.count) samples; use fewer folds")
        }
        var order: [Int: Int] = [:]
        var encoded = [Int](repeating: 0, count: labels.count)
        // np.unique's return_index then re-ranking gives classes in order of first appearance.
        var firstSeen: [(label: Int, pos: Int)] = []
        for (i, l) in labels.enumerated() where order[l] == nil { order[l] = -1; firstSeen.append((l, i)) }
        let sortedLabels = firstSeen.map { $0.label }.sorted()
        var firstPos: [Int: Int] = [:]
        for f in firstSeen { firstPos[f.label] = f.pos }
        // Class code: rank of the label's first position (labels sorted by value, then ranked by first index).
        let byFirst = sortedLabels.sorted { firstPos[$0]! < firstPos[$1]! }
        for (code, l) in byFirst.enumerated() { order[l] = code }
        for (i, l) in labels.enumerated() { encoded[i] = order[l]! }
        let k = byFirst.count
        let ySorted = encoded.sorted()
        var allocation = [[Int]](repeating: [Int](repeating: 0, count: k), count: folds)
        for f in 0..<folds {
            var i = f
            while i < ySorted.count { allocation[f][ySorted[i]] += 1; i += folds }
        }
        var rng = shuffleSeed.map { SplitMix64(seed: $0) }
        var result = [Int](repeating: 0, count: labels.count)
        for c in 0..<k {
            var seq: [Int] = []
            for f in 0..<folds { seq += [Int](repeating: f, count: allocation[f][c]) }
            if rng != nil {
                for i in 0..<seq.count { let j = i + Int(rng!.next() % UInt64(seq.count - i)); seq.swapAt(i, j) }
            }
            var t = 0
            for i in 0..<labels.count where encoded[i] == c { result[i] = seq[t]; t += 1 }
        }
        return result
    }
}

/// Deterministic stratified train/test split: in every class, `round(fraction * count)` samples
/// (at least one when the class has two or more) chosen by a seeded shuffle go to the test side.
public enum StratifiedHoldout {
    /// Returns sorted train and test row indices.
    /// - Throws: ``HeadError/invalidParameter(_:)`` when `fraction` is not in (0, 1).
    public static func split(labels: [Int], fraction: Double, seed: UInt64) throws -> (train: [Int], test: [Int]) {
        guard fraction > 0 && fraction < 1 else { throw HeadError.invalidParameter("holdout fraction must be in (0, 1), got \(fraction)") }
        var rng = SplitMix64(seed: seed)
        var byClass: [Int: [Int]] = [:]
        for (i, l) in labels.enumerated() { byClass[l, default: []].append(i) }
        var train: [Int] = [], test: [Int] = []
        for l in byClass.keys.sorted() {
            var idx = byClass[l]!
            for i in 0..<idx.count { let j = i + Int(rng.next() % UInt64(idx.count - i)); idx.swapAt(i, j) }
            var nTest = Int((fraction * Double(idx.count)).rounded())
            if idx.count >= 2 { nTest = min(max(nTest, 1), idx.count - 1) } else { nTest = 0 }
            test += idx[0..<nTest]; train += idx[nTest...]
        }
        return (train.sorted(), test.sorted())
    }
}

/// Result of a grid search: every candidate's fold accuracies and the chosen one.
public struct GridSearchResult: Codable, Sendable, Equatable {
    /// One evaluated parameter combination.
    public struct Candidate: Codable, Sendable, Equatable {
        /// C value.
        public var C: Double
        /// Gamma (kernel SVM only).
        public var gamma: Double?
        /// Accuracy on each held-out fold.
        public var foldAccuracies: [Double]
        /// Unweighted mean of ``foldAccuracies`` (sklearn's `mean_test_score`).
        public var meanAccuracy: Double
    }
    /// Candidates in grid order (C outer, gamma inner, as sklearn's `ParameterGrid`).
    public var candidates: [Candidate]
    /// Index of the chosen candidate: highest mean accuracy, first on ties (as `GridSearchCV.best_index_`).
    public var bestIndex: Int
    /// The chosen candidate.
    public var best: Candidate { candidates[bestIndex] }
}

/// Exhaustive grid search over C (and gamma) with k-fold cross-validation.
public enum GridSearch {
    /// Evaluates every (C, gamma) combination on the given fold assignment and picks the best mean accuracy.
    ///
    /// - Parameters:
    ///   - config: head kind and fixed options; its C/gamma are replaced by the grid values.
    ///   - gammas: kernel SVM only; `[nil]` means the configured gamma (or `'scale'` per fold).
    ///   - folds: fold index per row, e.g. from ``StratifiedKFold/assign(labels:folds:shuffleSeed:)``.
    /// - Complexity: (|Cs| · |gammas| · folds) fits.
    public static func run(_ x: Matrix, labels: [Int], classCount: Int, config: HeadConfig, Cs: [Double],
                           gammas: [Double?] = [nil], folds: [Int]) throws -> GridSearchResult {
        guard !Cs.isEmpty, !gammas.isEmpty else { throw HeadError.invalidParameter("grid search needs at least one C and gamma") }
        guard folds.count == x.rows else { throw HeadError.labelCountMismatch(rows: x.rows, labels: folds.count) }
        try validateTraining(x, labels: labels, classCount: classCount, context: "GridSearch")
        let k = (folds.max() ?? 0) + 1
        // Each fold's training part must still contain every class for the heads to be well defined.
        var splits: [(train: [Int], test: [Int])] = []
        for f in 0..<k {
            let test = folds.indices.filter { folds[$0] == f }
            let train = folds.indices.filter { folds[$0] != f }
            guard !test.isEmpty else { throw HeadError.invalidParameter("fold \(f) is empty") }
            splits.append((train, test))
        }
        var candidates: [GridSearchResult.Candidate] = []
        for c in Cs {
            for g in gammas {
                var cfg = config
                cfg.C = c
                if let g { cfg.gamma = g }
                var accs: [Double] = []
                for s in splits {
                    let trainLabels = s.train.map { labels[$0] }
                    // A class missing from a fold's training part: remap is not possible for fixed-class heads,
                    // so report it instead of fitting a silently wrong model.
                    let present = Set(trainLabels)
                    guard present.count == classCount else {
                        throw HeadError.invalidParameter("a cross-validation fold lacks some class in its training part; use fewer folds")
                    }
                    let head = try cfg.fit(x.rows(s.train), labels: trainLabels, classCount: classCount)
                    let pred = try head.predict(x.rows(s.test))
                    var correct = 0
                    for (t, r) in s.test.enumerated() where pred[t] == labels[r] { correct += 1 }
                    accs.append(Double(correct) / Double(s.test.count))
                }
                var sum = 0.0
                for a in accs { sum += a }
                candidates.append(.init(C: c, gamma: config.kind == .rbfSVM || config.kind == .kernelLinearSVM ? (g ?? cfg.gamma) : nil,
                                        foldAccuracies: accs, meanAccuracy: sum / Double(accs.count)))
            }
        }
        var best = 0
        for (i, c) in candidates.enumerated() where c.meanAccuracy > candidates[best].meanAccuracy { best = i }
        return GridSearchResult(candidates: candidates, bestIndex: best)
    }
}
