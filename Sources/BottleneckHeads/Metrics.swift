import Foundation

/// Classification metrics for one evaluation set, as scikit-learn's `classification_report` /
/// `confusion_matrix` compute them (precision or recall with a zero denominator counts as 0).
public struct ClassificationReport: Codable, Sendable, Equatable {
    /// Per-class precision, recall, F1 and support.
    public struct PerClass: Codable, Sendable, Equatable {
        /// Class name.
        public var name: String
        /// TP / (TP + FP).
        public var precision: Double
        /// TP / (TP + FN).
        public var recall: Double
        /// Harmonic mean of precision and recall.
        public var f1: Double
        /// Number of true samples of this class.
        public var support: Int
    }

    /// Number of evaluated samples.
    public var n: Int
    /// Fraction of correct predictions.
    public var accuracy: Double
    /// Unweighted means over classes.
    public var macroPrecision: Double
    /// See ``macroPrecision``.
    public var macroRecall: Double
    /// See ``macroPrecision``.
    public var macroF1: Double
    /// One entry per class, in class-index order.
    public var perClass: [PerClass]
    /// `confusion[true][predicted]` counts.
    public var confusion: [[Int]]
    /// Top-k accuracies keyed by k (present when scores were given).
    public var topK: [String: Double]

    enum CodingKeys: String, CodingKey {
        case n, accuracy, macroPrecision = "macro_precision", macroRecall = "macro_recall", macroF1 = "macro_f1"
        case perClass = "per_class", confusion, topK = "top_k"
    }

    /// Computes the report. O(n · k) with scores, O(n + k²) otherwise.
    /// - Parameters:
    ///   - scores: optional n x classCount ranking scores for top-k accuracy.
    ///   - topK: which k to report (values larger than the class count are skipped).
    /// - Throws: ``HeadError`` on length mismatch or labels outside the class range.
    public static func compute(trueLabels: [Int], predicted: [Int], classNames: [String], scores: Matrix? = nil,
                               topK: [Int] = [1, 3, 5]) throws -> ClassificationReport {
        let k = classNames.count
        guard trueLabels.count == predicted.count else {
            throw HeadError.labelCountMismatch(rows: predicted.count, labels: trueLabels.count)
        }
        guard !trueLabels.isEmpty else { throw HeadError.emptyData(context: "ClassificationReport") }
        var cm = [[Int]](repeating: [Int](repeating: 0, count: k), count: k)
        for (t, p) in zip(trueLabels, predicted) {
            guard t >= 0 && t < k else { throw HeadError.unknownClass(label: t, classCount: k) }
            guard p >= 0 && p < k else { throw HeadError.unknownClass(label: p, classCount: k) }
            cm[t][p] += 1
        }
        var per: [PerClass] = []
        var correct = 0
        for c in 0..<k {
            let tp = cm[c][c]
            correct += tp
            let predictedC = (0..<k).reduce(0) { $0 + cm[$1][c] }
            let support = cm[c].reduce(0, +)
            let p = predictedC == 0 ? 0 : Double(tp) / Double(predictedC)
            let r = support == 0 ? 0 : Double(tp) / Double(support)
            let f = p + r == 0 ? 0 : 2 * p * r / (p + r)
            per.append(PerClass(name: classNames[c], precision: p, recall: r, f1: f, support: support))
        }
        var top: [String: Double] = [:]
        if let s = scores {
            try s.checkColumns(k, context: "ClassificationReport scores")
            guard s.rows == trueLabels.count else { throw HeadError.labelCountMismatch(rows: s.rows, labels: trueLabels.count) }
            for kk in topK where kk >= 1 && kk <= k {
                top[String(kk)] = topKAccuracy(scores: s, labels: trueLabels, k: kk)
            }
        }
        let mean = { (f: (PerClass) -> Double) in per.map(f).reduce(0, +) / Double(max(k, 1)) }
        return ClassificationReport(n: trueLabels.count, accuracy: Double(correct) / Double(trueLabels.count),
                                    macroPrecision: mean { $0.precision }, macroRecall: mean { $0.recall },
                                    macroF1: mean { $0.f1 }, perClass: per, confusion: cm, topK: top)
    }

    /// Fraction of rows whose true label is among the `k` highest scores (ties broken towards lower index).
    public static func topKAccuracy(scores: Matrix, labels: [Int], k: Int) -> Double {
        var hits = 0
        for i in 0..<scores.rows {
            let t = labels[i], st = scores[i, t]
            // Rank of the true class: classes strictly better, plus equal-scored classes with a lower index.
            var better = 0
            for c in 0..<scores.cols where scores[i, c] > st || (scores[i, c] == st && c < t) { better += 1 }
            if better < k { hits += 1 }
        }
        return Double(hits) / Double(max(scores.rows, 1))
    }

    /// A plain-text table: per-class precision/recall/F1/support, macro averages, accuracy, top-k.
    public func textTable() -> String {
        let w = max(12, perClass.map { $0.name.count }.max() ?? 0) + 2
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
        func f(_ v: Double) -> String { String(format: "%.4f", v) }
        var out = pad("class", w) + pad("precision", 11) + pad("recall", 9) + pad("f1", 9) + pad("support", 9) + "\n"
        for p in perClass {
            out += pad(p.name, w) + pad(f(p.precision), 11) + pad(f(p.recall), 9) + pad(f(p.f1), 9) + pad("\(p.support)", 9) + "\n"
        }
        out += pad("macro avg", w) + pad(f(macroPrecision), 11) + pad(f(macroRecall), 9) + pad(f(macroF1), 9) + pad("\(n)", 9) + "\n"
        out += pad("accuracy", w) + pad(f(accuracy), 29) + pad("\(n)", 9) + "\n"
        for k in topK.keys.sorted(by: { Int($0)! < Int($1)! }) where k != "1" {
            out += pad("top-\(k)", w) + pad(f(topK[k]!), 29) + "\n"
        }
        return out
    }

    /// The confusion matrix as aligned text (rows = true class, columns = predicted).
    public func confusionText() -> String {
        let names = perClass.map { $0.name }
        let corner = "true\\pred"
        let first = max(corner.count, names.map { $0.count }.max() ?? 0) + 1
        let w = max(6, (names.map { $0.count }.max() ?? 0) + 1, String(confusion.flatMap { $0 }.max() ?? 0).count + 1)
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : String(repeating: " ", count: n - s.count) + s }
        var out = pad(corner, first) + names.map { pad($0, w) }.joined() + "\n"
        for (i, row) in confusion.enumerated() { out += pad(names[i], first) + row.map { pad(String($0), w) }.joined() + "\n" }
        return out
    }

    /// The confusion matrix as CSV: header `true\predicted,<class>...`, one row per true class.
    public func confusionCSV() -> String {
        func q(_ s: String) -> String { s.contains(",") || s.contains("\"") ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s }
        var out = "true\\predicted," + perClass.map { q($0.name) }.joined(separator: ",") + "\n"
        for (i, row) in confusion.enumerated() { out += q(perClass[i].name) + "," + row.map(String.init).joined(separator: ",") + "\n" }
        return out
    }

    /// Pretty-printed JSON with sorted keys (`accuracy`, `macro_f1`, `per_class`, `n`, …).
    public func jsonData() throws -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try enc.encode(self)
    }
}
