import ArgumentParser
import BottleneckCore
import BottleneckHeads
import BottleneckPipeline
import Dispatch
import Foundation

/// `bottleneck train`: fit a classifier head on a feature store's training rows.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a classifier head (logistic regression, linear or RBF SVM) on extracted features.",
        discussion: """
        FEATURES is a feature store written by `bottleneck extract`. Training uses its `train` split; when the store has no splits, a stratified --holdout fraction (default 0.2, chosen with --seed) is kept aside and reported. Features are standardised with statistics of the training rows. With several --C (or --gamma) values, the best combination is chosen by stratified --cv-fold cross-validation (folds as scikit-learn's StratifiedKFold) and the head is refitted on all training rows. The model (scaler, head, class names, metrics, backbone identity) is written as JSON to --out.
        """)

    @Argument(help: "Feature store directory (features.npy, index.csv, classes.json, labels.npy, meta.json).")
    var features: String

    @Option(help: "Head: logreg, linear-svm, rbf-svm or linear-kernel-svm.")
    var head: HeadKind

    @Option(name: .customLong("C"), help: "Inverse regularisation strength in 1e-12...1e12; a comma-separated list (up to 100 values) runs a grid search (e.g. 0.01,0.1,1,10).")
    var cValues: String = "1"

    @Option(help: "RBF gamma: 'scale' (1 / (D * Var X), scikit-learn's default) or a comma-separated list of up to 100 values in 1e-12...1e12.")
    var gamma: String = "scale"

    @Option(help: "Cross-validation folds for the grid search (2...100).")
    var cv: Int = 5

    @Flag(help: "Shuffle cross-validation folds within each class (seeded by --seed) instead of scikit-learn's unshuffled order.")
    var cvShuffle = false

    @Option(help: "Class weighting: none or balanced (n / (classes * count)).")
    var classWeight: ClassWeight = .none

    @Option(help: "Fraction held out (stratified) when the store has no train split; 0 trains on every labeled row.")
    var holdout: Double?

    @Option(help: "Seed for the holdout split, CV shuffling and solver randomness.")
    var seed: UInt64 = 0

    @Option(help: "Linear SVM loss: squared_hinge (scikit-learn's default) or hinge.")
    var loss: LinearSVM.Loss = .squaredHinge

    @Flag(help: "L2-normalise each feature row before standardisation.")
    var l2Normalize = false

    @Flag(help: "RBF/linear-kernel SVM: fit Platt-scaled probabilities (internal 5-fold CV, seeded).")
    var probability = false

    @Option(help: "Solver tolerance, a positive finite number (default: scikit-learn's for the head).")
    var tol: Double?

    @Option(help: "Solver iteration cap, 1...10000000 (default: scikit-learn's for the head).")
    var maxIter: Int?

    @Option(help: "Output model file (JSON).")
    var out: String

    @Flag(help: "Print one JSON line with timings and accuracies (for benchmark scripts).")
    var timingJSON = false

    func validate() throws {
        _ = try ValueRanges.grid(cValues, "--C")
        if gamma != "scale" { _ = try ValueRanges.grid(gamma, "--gamma (or 'scale')") }
        try ValueRanges.check(cv, ValueRanges.cvFolds, "--cv")
        if let h = holdout, !(h >= 0 && h < 1) { throw ValidationError("--holdout must be in [0, 1)") }
        if let t = tol, !(t > 0 && t.isFinite) { throw ValidationError("--tol must be a positive finite number") }
        if let m = maxIter { try ValueRanges.check(m, ValueRanges.iterations, "--max-iter") }
        if probability && !(head == .rbfSVM || head == .kernelLinearSVM) {
            throw ValidationError("--probability applies to rbf-svm and linear-kernel-svm (logreg always has probabilities)")
        }
    }

    func run() throws {
        let store = try FeatureStore.load(from: URL(fileURLWithPath: features))
        let data = try LabeledRows.training(store: store, holdout: holdout, seed: seed)
        var config = HeadConfig(kind: head, classWeight: classWeight)
        config.loss = loss
        config.tolerance = tol
        config.maxIterations = maxIter
        config.probability = probability
        config.seed = seed
        let cs = parseList(cValues)!
        let gammas: [Double?] = gamma == "scale" ? [nil] : parseList(gamma)!.map { Optional($0) }
        config.C = cs[0]
        config.gamma = gammas[0]

        let start = DispatchTime.now()
        let scaler = try StandardScaler.fit(data.train.x, l2Normalize: l2Normalize)
        let xs = try scaler.transform(data.train.x)
        var grid: GridSearchResult? = nil
        if cs.count > 1 || gammas.count > 1 {
            let folds = try StratifiedKFold.assign(labels: data.train.labels, folds: cv, shuffleSeed: cvShuffle ? seed : nil)
            let g = try GridSearch.run(xs, labels: data.train.labels, classCount: store.classes.count, config: config,
                                       Cs: cs, gammas: gammas, folds: folds)
            config.C = g.best.C
            if config.kind == .rbfSVM || config.kind == .kernelLinearSVM, gammas != [nil] { config.gamma = g.best.gamma }
            grid = g
        }
        let fitted = try config.fit(xs, labels: data.train.labels, classCount: store.classes.count, classNames: store.classes)
        let fitSeconds = Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9

        var metrics: [String: ClassificationReport] = [:]
        metrics["train"] = try ClassificationReport.compute(trueLabels: data.train.labels, predicted: try fitted.predict(xs),
                                                            classNames: store.classes, scores: try fitted.classScores(xs))
        var model = ClassifierModel(classNames: store.classes, scaler: scaler, head: fitted, config: config, gridSearch: grid,
                                    backbone: BackboneInfo(storeMeta: store.meta),
                                    holdoutPaths: data.heldOut.map { $0.paths })
        if let h = data.heldOut {
            metrics["holdout"] = try ClassificationReport.compute(trueLabels: h.labels, predicted: try model.predict(h.x),
                                                                  classNames: store.classes, scores: try model.classScores(h.x))
        }
        model.trainingMetrics = metrics
        try model.save(to: URL(fileURLWithPath: out))

        if timingJSON {
            var obj: [String: Any] = ["head": head.rawValue, "fit_seconds": fitSeconds, "n_train": data.train.labels.count,
                                      "dimension": store.dimension, "C": config.C, "train_accuracy": metrics["train"]!.accuracy]
            if let g = config.gamma ?? (fitted.kindName.hasSuffix("svm") ? gammaOf(fitted) : nil) { obj["gamma"] = g }
            if let h = metrics["holdout"] { obj["holdout_accuracy"] = h.accuracy }
            let d = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
            print(String(decoding: d, as: UTF8.self))
            return
        }
        print("training rows: \(data.train.labels.count) (\(data.source)), classes: \(store.classes.count), features: \(store.dimension)")
        if let g = grid {
            print("cross-validation (\(cv) folds\(cvShuffle ? ", shuffled" : "")): mean accuracy per candidate")
            for c in g.candidates {
                let mark = c == g.best ? "  <- chosen" : ""
                print(String(format: "  C=%-10g", c.C) + (c.gamma.map { String(format: " gamma=%-12g", $0) } ?? "")
                      + String(format: " %.4f", c.meanAccuracy) + mark)
            }
        }
        var chosen = String(format: "head %@, C=%g", head.rawValue, config.C)
        if case .kernelSVM(let k) = fitted, k.kernel == .rbf { chosen += String(format: ", gamma=%g%@", k.gamma, config.gamma == nil ? " (scale)" : "") }
        print(chosen)
        print(String(format: "fit time (scaler + CV + final fit): %.3f s", fitSeconds))
        print(String(format: "train accuracy: %.4f", metrics["train"]!.accuracy))
        if let h = metrics["holdout"] {
            print(String(format: "holdout accuracy: %.4f (n=%d), macro F1 %.4f", h.accuracy, h.n, h.macroF1))
        }
        print("model written to \(out)")
    }

    private func gammaOf(_ h: TrainedHead) -> Double? {
        if case .kernelSVM(let k) = h, k.kernel == .rbf { return k.gamma }
        return nil
    }
}

/// Parses "0.01,0.1,1" into numbers; nil when any item is not a number.
func parseList(_ s: String) -> [Double]? {
    var out: [Double] = []
    for part in s.split(separator: ",") {
        guard let v = Double(part.trimmingCharacters(in: .whitespaces)) else { return nil }
        out.append(v)
    }
    return out
}

/// Labeled rows of a feature store as a double matrix, with their labels and image paths.
struct LabeledRows {
    var x: Matrix
    var labels: [Int]
    var paths: [String]

    /// Rows of `store` at the given `features.npy` row indices whose label is known (≥ 0).
    init(store: FeatureStore, rows: [Int], paths: [String]) {
        let keep = rows.indices.filter { store.labels[rows[$0]] >= 0 }
        let d = store.dimension
        var f = [Float](); f.reserveCapacity(keep.count * d)
        for i in keep { f.append(contentsOf: store.features[rows[i] * d..<(rows[i] + 1) * d]) }
        x = Matrix(rows: keep.count, cols: d, float32: f)
        labels = keep.map { store.labels[rows[$0]] }
        self.paths = keep.map { paths[$0] }
    }

    /// Extracted records selected by `include`, in store order, as (row, path) lists.
    static func select(_ store: FeatureStore, _ include: (IndexRecord) -> Bool) -> (rows: [Int], paths: [String]) {
        var rows: [Int] = [], paths: [String] = []
        for r in store.records where include(r) { if let row = r.row { rows.append(row); paths.append(r.path) } }
        return (rows, paths)
    }

    /// The training rows: the `train` split, else every labeled row minus a stratified holdout.
    static func training(store: FeatureStore, holdout: Double?, seed: UInt64)
        throws -> (train: LabeledRows, heldOut: LabeledRows?, source: String) {
        if store.splitNames.contains("train") {
            let s = select(store) { $0.split == "train" }
            let t = LabeledRows(store: store, rows: s.rows, paths: s.paths)
            guard !t.labels.isEmpty else { throw HeadError.emptyData(context: "\(store.url.path): train split has no labeled rows") }
            if let h = holdout, h > 0 {
                let (tr, te) = try StratifiedHoldout.split(labels: t.labels, fraction: h, seed: seed)
                return (t.subset(tr), t.subset(te), "train split minus \(te.count) held out")
            }
            return (t, nil, "train split")
        }
        let s = select(store) { _ in true }
        let all = LabeledRows(store: store, rows: s.rows, paths: s.paths)
        guard !all.labels.isEmpty else {
            throw HeadError.emptyData(context: "\(store.url.path): no labeled rows (extract from DIR/<class>/ folders to get labels)")
        }
        let fraction = holdout ?? 0.2
        guard fraction > 0 else { return (all, nil, "all labeled rows") }
        let (tr, te) = try StratifiedHoldout.split(labels: all.labels, fraction: fraction, seed: seed)
        return (all.subset(tr), all.subset(te), "stratified \(Int((1 - fraction) * 100))% of labeled rows, seed \(seed)")
    }

    func subset(_ idx: [Int]) -> LabeledRows {
        var r = self
        r.x = x.rows(idx); r.labels = idx.map { labels[$0] }; r.paths = idx.map { paths[$0] }
        return r
    }
}
