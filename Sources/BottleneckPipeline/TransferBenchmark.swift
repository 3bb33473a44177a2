import BottleneckCore
import BottleneckHeads
import Foundation

/// Settings of a frozen-feature transfer benchmark (``TransferBenchmark``).
public struct TransferBenchmarkOptions: Sendable {
    /// Heads fitted on every feature set.
    public var heads: [HeadKind] = [.logreg, .linearSVM, .rbfSVM]
    /// Repetitions per setting. Seed `s` shuffles the grid-search CV folds (``StratifiedKFold`` with
    /// `shuffleSeed: s`) and seeds the solvers (LinearSVM coordinate order); the train/test split is fixed.
    public var seeds: Int = 3
    /// C grid searched by stratified k-fold CV on the training rows (gamma stays `'scale'`).
    public var Cs: [Double] = [0.01, 0.1, 1, 10]
    /// Cross-validation folds for the C grid search.
    public var cvFolds: Int = 5
    /// Fraction held out (stratified, seed 0) when the dataset has no train/val split.
    public var holdoutFraction: Double = 0.2
    /// Side of the raw-pixel baseline's grid (features = 3 · grid²).
    public var rawGrid: Int = 16
    /// Extraction pipeline settings used for every feature set.
    public var extraction = ExtractionOptions()

    /// Defaults: logreg, linear SVM and RBF SVM; 3 seeds; C in {0.01, 0.1, 1, 10}; 5-fold CV.
    public init() {}
}

/// One benchmarked setting: a head on one feature set (or a fine-tuned network) with its scores.
public struct BenchmarkRow: Sendable {
    /// Baseline, head on frozen features, or fine-tuned network.
    public var setting: BenchmarkSetting
    /// Head name (`logreg`, `linear-svm`, `rbf-svm`, `linear` for a fine-tuned network's head).
    public var head: String
    /// Stages removed from the top of the network; nil for the raw-pixel baseline.
    public var cut: Int?
    /// Stages trained with the head (0 for frozen features).
    public var unfrozen: Int
    /// Test accuracy of every seed, in seed order, each in [0, 1].
    public var accuracies: [Double]
    /// Training wall time per seed (scaler + CV grid search + final fit, or fine-tuning), seconds.
    public var trainSeconds: [Double]
    /// End-to-end inference throughput (decode + preprocess + backbone + scaler + head), images per second.
    public var inferenceImagesPerSecond: Double
    /// Feature dimension the head saw.
    public var featureDimension: Int
    /// C chosen by the grid search for each seed (empty for fine-tuning).
    public var chosenC: [Double]
    /// Confusion matrix `[true][predicted]` of seed 0's model on the test rows.
    public var confusion: [[Int]]
    /// Free-form remarks (e.g. the fine-tuning recipe or the prefix path that ran).
    public var note: String?

    /// Creates a row; accuracies and train times are per seed.
    public init(setting: BenchmarkSetting, head: String, cut: Int?, unfrozen: Int, accuracies: [Double], trainSeconds: [Double],
                inferenceImagesPerSecond: Double, featureDimension: Int, chosenC: [Double], confusion: [[Int]], note: String? = nil) {
        self.setting = setting; self.head = head; self.cut = cut; self.unfrozen = unfrozen
        self.accuracies = accuracies; self.trainSeconds = trainSeconds
        self.inferenceImagesPerSecond = inferenceImagesPerSecond; self.featureDimension = featureDimension
        self.chosenC = chosenC; self.confusion = confusion; self.note = note
    }

    /// Mean of ``accuracies``.
    public var accuracyMean: Double { accuracies.isEmpty ? .nan : accuracies.reduce(0, +) / Double(accuracies.count) }
    /// Population standard deviation of ``accuracies`` (0 for one seed).
    public var accuracyStd: Double {
        guard accuracies.count > 1 else { return 0 }
        let m = accuracyMean
        return (accuracies.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(accuracies.count)).squareRoot()
    }
    /// Mean of ``trainSeconds``.
    public var trainSecondsMean: Double { trainSeconds.isEmpty ? 0 : trainSeconds.reduce(0, +) / Double(trainSeconds.count) }
    /// Short label for tables and plots, e.g. `frozen cut 2 rbf-svm`.
    public var label: String {
        switch setting {
        case .rawPixels: return "\(setting.rawValue) \(head)"
        case .finetune: return "\(setting.rawValue) K=\(unfrozen)"
        case .frozen: return "\(setting.rawValue) cut \(cut.map { String($0) } ?? "-") \(head)"
        }
    }
}

/// The train/test rows every setting of a benchmark uses, identified by image path relative to the dataset.
public struct BenchmarkSplit: Sendable {
    /// Relative paths of the training images, in store order.
    public var trainPaths: [String]
    /// Relative paths of the test images, in store order.
    public var testPaths: [String]
    /// How the split was made, e.g. `train split vs val split` or `stratified 20% holdout (seed 0)`.
    public var description: String
}

/// Labeled feature rows of one split side.
struct LabeledMatrix {
    var x: Matrix
    var labels: [Int]
}

/// Runs the transfer benchmark: the frozen-feature half here, the whole run and the fine-tuning half in
/// TransferBenchmarkRun.swift; ``BenchmarkReport`` writes the report.
///
/// Every feature set is extracted once through ``FeatureExtractor`` into `reportDirectory/features/<name>`
/// (re-running with nothing changed reuses it), then every head is cross-validated, fitted on the train rows
/// and scored on the test rows, once per seed.
public final class TransferBenchmark {
    /// Dataset folder (`train|val|test/<class>/` or `<class>/` layout).
    public let dataset: URL
    /// Where `report.md`, `report.json`, plots and the feature cache go.
    public let reportDirectory: URL
    /// Settings.
    public let options: TransferBenchmarkOptions
    /// Optional progress sink (one line per step).
    public var log: ((String) -> Void)?
    /// Class names in label order, known after the first feature set.
    public private(set) var classes: [String] = []
    /// The split, fixed by the first feature set and checked against every later one.
    public private(set) var split: BenchmarkSplit?
    /// Remarks found while running, e.g. two cuts whose pooled features are identical.
    public private(set) var notes: [String] = []
    /// Features of every evaluated set by cache name, to spot sets that are the same numbers.
    private var seenFeatures: [(name: String, features: [Float])] = []

    /// Creates a benchmark writing under `reportDirectory` (which must not lie inside `dataset`).
    public init(dataset: URL, reportDirectory: URL, options: TransferBenchmarkOptions = TransferBenchmarkOptions()) {
        self.dataset = dataset.standardizedFileURL
        self.reportDirectory = reportDirectory.standardizedFileURL
        self.options = options
    }

    /// Extracts `backbone`'s features (cached under `features/<cacheName>`) and evaluates `heads` on them.
    ///
    /// - Parameters:
    ///   - setting: row setting (``BenchmarkSetting/rawPixels`` or ``BenchmarkSetting/frozen``).
    ///   - cut: recorded in the rows (nil for the baseline).
    /// - Returns: one row per head, in `heads` order.
    /// - Throws: ``PipelineError`` for extraction or split problems, ``HeadError`` for fitting problems.
    public func evaluate(backbone: FeatureBackbone, cacheName: String, setting: BenchmarkSetting, cut: Int?,
                         heads: [HeadKind]) throws -> [BenchmarkRow] {
        let out = reportDirectory.appendingPathComponent("features").appendingPathComponent(cacheName)
        log?("extracting \(cacheName) features (\(backbone.featureDimension)-d) into \(out.path)")
        let extractor = FeatureExtractor(backbone: backbone, options: options.extraction)
        let result = try extractor.extract(dataset: dataset, to: out)
        let store = try FeatureStore.load(from: out)
        let wall = result.upToDate ? (Double(store.meta["wall_seconds"] ?? "") ?? 0) : result.wallSeconds
        let backboneSecondsPerImage = result.extracted > 0 ? wall / Double(result.extracted) : 0
        log?(String(format: "  %d images, %d failed, %.1f s%@", result.extracted, result.failures.count, wall,
                    result.upToDate ? " (cached)" : ""))
        if let twin = seenFeatures.first(where: { $0.features == store.features }) {
            // e.g. EfficientNet's `head` map average-pooled is exactly the `avgpool` output of the cut below.
            notes.append("\(cacheName) features are identical to \(twin.name) (same numbers after pooling), so their rows match.")
            log?("  note: identical to \(twin.name)")
        } else {
            seenFeatures.append((cacheName, store.features))
        }
        let (train, test) = try splitRows(store)
        var rows: [BenchmarkRow] = []
        for head in heads {
            var accs: [Double] = [], secs: [Double] = [], chosen: [Double] = []
            var confusion: [[Int]] = []
            var headSeconds = 0.0
            for s in 0..<options.seeds {
                let seed = UInt64(s)
                let t0 = DispatchTime.now()
                let scaler = try StandardScaler.fit(train.x)
                let xs = try scaler.transform(train.x)
                var config = HeadConfig(kind: head)
                config.seed = seed
                if options.Cs.count > 1 {
                    let folds = try StratifiedKFold.assign(labels: train.labels, folds: options.cvFolds, shuffleSeed: seed)
                    let g = try GridSearch.run(xs, labels: train.labels, classCount: classes.count, config: config,
                                               Cs: options.Cs, folds: folds)
                    config.C = g.best.C
                } else {
                    config.C = options.Cs.first ?? 1
                }
                let fitted = try config.fit(xs, labels: train.labels, classCount: classes.count)
                secs.append(Self.seconds(since: t0))
                let t1 = DispatchTime.now()
                let predicted = try fitted.predict(try scaler.transform(test.x))
                headSeconds += Self.seconds(since: t1)
                var correct = 0
                for (p, l) in zip(predicted, test.labels) where p == l { correct += 1 }
                accs.append(Double(correct) / Double(test.labels.count))
                chosen.append(config.C)
                if s == 0 { confusion = confusionMatrix(predicted: predicted, labels: test.labels, classCount: classes.count) }
            }
            let headPerImage = headSeconds / Double(max(1, options.seeds) * test.labels.count)
            let perImage = backboneSecondsPerImage + headPerImage
            let row = BenchmarkRow(setting: setting, head: head.rawValue, cut: cut, unfrozen: 0, accuracies: accs,
                                   trainSeconds: secs, inferenceImagesPerSecond: perImage > 0 ? 1 / perImage : 0,
                                   featureDimension: store.dimension, chosenC: chosen, confusion: confusion)
            log?(String(format: "  %@: accuracy %.4f ± %.4f, train %.2f s, C %@", row.label, row.accuracyMean, row.accuracyStd,
                        row.trainSecondsMean, chosen.map { String(format: "%g", $0) }.joined(separator: "/")))
            rows.append(row)
        }
        return rows
    }

    /// Train/test rows of `store`: its `train` split against `val` (else `test`), or a stratified holdout of
    /// all labeled rows when the dataset has no splits. The first call fixes ``split``; later stores must
    /// contain the same images with the same classes.
    func splitRows(_ store: FeatureStore) throws -> (LabeledMatrix, LabeledMatrix) {
        var byPath: [String: (row: Int, label: Int)] = [:]
        var ordered: [(path: String, split: String, label: Int)] = []
        for r in store.records {
            guard let row = r.row, store.labels[row] >= 0 else { continue }
            byPath[r.path] = (row, store.labels[row])
            ordered.append((r.path, r.split, store.labels[row]))
        }
        if split == nil {
            classes = store.classes
            let names = Set(ordered.map { $0.split })
            let testName = names.contains("val") ? "val" : (names.contains("test") ? "test" : nil)
            if names.contains("train"), let testName {
                split = BenchmarkSplit(trainPaths: ordered.filter { $0.split == "train" }.map { $0.path },
                                       testPaths: ordered.filter { $0.split == testName }.map { $0.path },
                                       description: "train split vs \(testName) split")
            } else {
                guard !ordered.isEmpty else {
                    throw PipelineError.invalidDataset(path: dataset.path, reason: "no labeled images; lay the dataset out as DIR/<class>/*.jpg or DIR/train|val/<class>/*.jpg")
                }
                let (tr, te) = try StratifiedHoldout.split(labels: ordered.map { $0.label }, fraction: options.holdoutFraction, seed: 0)
                split = BenchmarkSplit(trainPaths: tr.map { ordered[$0].path }, testPaths: te.map { ordered[$0].path },
                                       description: String(format: "stratified %.0f%% holdout of all labeled images (seed 0)",
                                                           options.holdoutFraction * 100))
            }
        } else if store.classes != classes {
            throw PipelineError.invalidDataset(path: dataset.path, reason: "feature sets disagree on the classes: \(store.classes) vs \(classes)")
        }
        let plan = split!
        func gather(_ paths: [String], side: String) throws -> LabeledMatrix {
            var f: [Float] = []; f.reserveCapacity(paths.count * store.dimension)
            var labels: [Int] = []
            for p in paths {
                // A backbone that failed on an image another one decoded would make the comparison unfair.
                guard let hit = byPath[p] else {
                    throw PipelineError.invalidDataset(path: p, reason: "extracted for one feature set but not for \(store.url.lastPathComponent)")
                }
                f.append(contentsOf: store.features[hit.row * store.dimension..<(hit.row + 1) * store.dimension])
                labels.append(hit.label)
            }
            guard !labels.isEmpty else {
                throw PipelineError.invalidDataset(path: dataset.path, reason: "the \(side) side of the split (\(plan.description)) is empty")
            }
            return LabeledMatrix(x: Matrix(rows: labels.count, cols: store.dimension, float32: f), labels: labels)
        }
        let train = try gather(plan.trainPaths, side: "train"), test = try gather(plan.testPaths, side: "test")
        guard Set(train.labels).count == classes.count else {
            throw PipelineError.invalidDataset(path: dataset.path, reason: "some class has no training image in \(plan.description)")
        }
        return (train, test)
    }

    /// Wall seconds elapsed since `t`.
    static func seconds(since t: DispatchTime) -> Double {
        Double(DispatchTime.now().uptimeNanoseconds - t.uptimeNanoseconds) / 1e9
    }
}

/// Writes a benchmark's `report.md`, `report.json`, `accuracy_by_cut.png` and `confusion_best.png`.
public struct BenchmarkReport {
    /// Every row, baseline first.
    public var rows: [BenchmarkRow]
    /// Class names in label order.
    public var classes: [String]
    /// The split all rows used.
    public var split: BenchmarkSplit
    /// Header facts written verbatim into both reports (dataset, model, seeds, machine, …).
    public var facts: [(key: String, value: String)]
    /// Paragraphs appended to `report.md` and as `notes` to `report.json` (seed dependence, fine-tuning status, …).
    public var notes: [String]

    /// Creates a report.
    public init(rows: [BenchmarkRow], classes: [String], split: BenchmarkSplit, facts: [(key: String, value: String)], notes: [String]) {
        self.rows = rows; self.classes = classes; self.split = split; self.facts = facts; self.notes = notes
    }

    /// The raw-pixel baseline row, if present.
    public var baseline: BenchmarkRow? { rows.first { $0.setting == .rawPixels } }

    /// The transfer row with the highest mean accuracy (first on ties); the baseline when there is no other.
    public var best: BenchmarkRow? {
        let transfer = rows.filter { $0.setting != .rawPixels }
        var best: BenchmarkRow? = nil
        for r in transfer where best == nil || r.accuracyMean > best!.accuracyMean { best = r }
        return best ?? baseline
    }

    /// Whether the raw baseline beats `row` (higher mean accuracy): negative transfer.
    public func isNegativeTransfer(_ row: BenchmarkRow) -> Bool {
        guard let b = baseline, row.setting != .rawPixels else { return false }
        return b.accuracyMean > row.accuracyMean
    }

    /// Writes every file into `directory` (created if needed), each atomically.
    /// - Throws: ``PipelineError/io(path:reason:)``-style errors from the writers, ``HeadError/io(path:reason:)`` for PNGs.
    public func write(to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try AtomicFile.write(markdown(), to: directory.appendingPathComponent("report.md"))
        try AtomicFile.write(json(), to: directory.appendingPathComponent("report.json"))
        try writePlot(to: directory.appendingPathComponent("accuracy_by_cut.png"))
        if let b = best, !b.confusion.isEmpty {
            try ConfusionHeatmap.write(confusion: b.confusion, classNames: classes,
                                       to: directory.appendingPathComponent("confusion_best.png"))
        }
    }

    /// The Markdown report: facts, the table, negative-transfer flags, the best setting, notes and plots.
    public func markdown() -> String {
        var md = "# Transfer benchmark\n\n"
        for f in facts { md += "- **\(f.key)**: \(f.value)\n" }
        md += "- **split**: \(split.description) — \(split.trainPaths.count) train / \(split.testPaths.count) test images\n"
        md += "- **classes** (\(classes.count)): \(classes.joined(separator: ", "))\n\n"
        md += "| setting | head | cut | unfrozen | dim | accuracy (mean ± std) | per seed | train s | inference img/s | C | |\n"
        md += "|---|---|---|---|---|---|---|---|---|---|---|\n"
        for r in rows {
            let perSeed = r.accuracies.map { String(format: "%.4f", $0) }.joined(separator: " ")
            let cs = r.chosenC.map { String(format: "%g", $0) }.joined(separator: "/")
            let flag = isNegativeTransfer(r) ? "**negative transfer**" : (r.label == best?.label ? "best" : "")
            md += "| \(r.setting.rawValue) | \(r.head) | \(r.cut.map { String($0) } ?? "–") | \(r.unfrozen) | \(r.featureDimension) | "
            md += String(format: "%.4f ± %.4f", r.accuracyMean, r.accuracyStd)
            md += " | \(perSeed) | " + String(format: "%.2f", r.trainSecondsMean) + " | "
            md += String(format: "%.1f", r.inferenceImagesPerSecond) + " | \(cs.isEmpty ? "–" : cs) | \(flag) |\n"
        }
        let negative = rows.filter(isNegativeTransfer)
        md += "\n## Negative transfer\n\n"
        if let b = baseline {
            if negative.isEmpty {
                md += String(format: "None: every transfer setting beats the raw-pixel baseline (%.4f).\n", b.accuracyMean)
            } else {
                md += String(format: "The raw-pixel baseline (%.4f) beats: ", b.accuracyMean)
                md += negative.map { String(format: "%@ (%.4f)", $0.label, $0.accuracyMean) }.joined(separator: ", ") + ".\n"
            }
        } else {
            md += "No raw-pixel baseline was run.\n"
        }
        if let b = best {
            md += String(format: "\n## Best setting\n\n%@: %.4f ± %.4f (confusion matrix of seed 0 below).\n", b.label,
                         b.accuracyMean, b.accuracyStd)
        }
        if !notes.isEmpty { md += "\n## Notes\n\n" + notes.map { "- \($0)\n" }.joined() }
        md += "\n## Plots\n\n![accuracy per cut and head](accuracy_by_cut.png)\n\n![confusion matrix of the best setting](confusion_best.png)\n"
        return md
    }

    /// `report.json`: facts, split, classes, `rows` (one object per setting) and the best setting's label.
    public func json() throws -> Data {
        var facts: [String: Any] = [:]
        for f in self.facts { facts[f.key] = f.value }
        let rowObjects: [[String: Any]] = rows.map { r in
            var o: [String: Any] = [
                "setting": r.setting.rawValue, "head": r.head, "cut": r.cut.map { $0 as Any } ?? NSNull(), "unfrozen": r.unfrozen,
                "accuracy_mean": r.accuracyMean, "accuracy_std": r.accuracyStd, "accuracies": r.accuracies,
                "train_seconds": r.trainSecondsMean, "train_seconds_per_seed": r.trainSeconds,
                "inference_images_per_second": r.inferenceImagesPerSecond, "feature_dimension": r.featureDimension,
                "chosen_C": r.chosenC, "negative_transfer": isNegativeTransfer(r), "label": r.label, "confusion": r.confusion,
            ]
            if let n = r.note { o["note"] = n }
            return o
        }
        let obj: [String: Any] = [
            "facts": facts, "classes": classes, "rows": rowObjects, "notes": notes,
            "split": ["description": split.description, "train": split.trainPaths.count, "test": split.testPaths.count],
            "best": best.map { $0.label as Any } ?? NSNull(), "baseline_accuracy": baseline.map { $0.accuracyMean as Any } ?? NSNull(),
        ]
        return try JSONSerialization.data(withJSONObject: obj, options: [.prettyPrinted, .sortedKeys])
    }

    /// Grouped bars: one group per cut (frozen rows) and per fine-tuning depth, one bar per head, the raw
    /// baseline as a dashed line.
    func writePlot(to url: URL) throws {
        let frozen = rows.filter { $0.setting == .frozen }
        let tuned = rows.filter { $0.setting == .finetune }
        let cuts = Array(Set(frozen.compactMap(\.cut))).sorted()
        let depths = Array(Set(tuned.map(\.unfrozen))).sorted()
        let groups = cuts.map { "CUT \($0)" } + depths.map { "FT K:\($0)" }
        var heads: [String] = []
        for r in frozen where !heads.contains(r.head) { heads.append(r.head) }
        typealias Bar = (mean: Double, std: Double)?
        func bar(_ r: BenchmarkRow?) -> Bar { r.map { (mean: $0.accuracyMean, std: $0.accuracyStd) } }
        let noFrozen = [Bar](repeating: nil, count: cuts.count), noTuned = [Bar](repeating: nil, count: depths.count)
        var series: [AccuracyPlot.Series] = heads.map { (h: String) -> AccuracyPlot.Series in
            let perCut: [Bar] = cuts.map { (c: Int) -> Bar in bar(frozen.first { $0.head == h && $0.cut == c }) }
            return AccuracyPlot.Series(name: h, values: perCut + noTuned)
        }
        if !tuned.isEmpty {
            let perDepth: [Bar] = depths.map { (k: Int) -> Bar in bar(tuned.first { $0.unfrozen == k }) }
            series.append(AccuracyPlot.Series(name: "fine-tuned, top K", values: noFrozen + perDepth))
        }
        try AccuracyPlot.write(title: "TEST ACCURACY PER CUT AND HEAD (MEAN +- STD)", groups: groups, series: series,
                               reference: baseline?.accuracyMean, referenceLabel: "raw-pixel baseline", to: url)
    }
}
