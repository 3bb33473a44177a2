import ArgumentParser
import BottleneckCore
import BottleneckHeads
import BottleneckPipeline
import Foundation

/// `bottleneck evaluate`: metrics of a trained model on a feature store's validation/test rows.
struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Evaluate a trained model on a feature store: metrics table, report.json, confusion matrix CSV and PNG.",
        discussion: """
        Uses the store's val and test splits by default (--split picks others, or 'all'); for a store without splits, the rows held out when the model was trained. Class names are matched by name, so the store may list its classes in any order, but every evaluated class must be known to the model. The features must come from the backbone recorded in the model (model, weights, cut/layer, pool, preprocessing) unless --ignore-backbone is given.
        """)

    @Argument(help: "Model file written by `bottleneck train`.")
    var model: String

    @Argument(help: "Feature store directory.")
    var features: String

    @Option(help: "Comma-separated splits to evaluate (default: val,test), or 'all'.")
    var split: String?

    @Option(help: "Directory for report.json, confusion.csv and confusion.png.")
    var out: String?

    @Option(help: "Top-k accuracies to report (comma-separated integers in 1...1000).")
    var topK: String = "1,3,5"

    @Flag(help: "Evaluate even if the store's backbone identity differs from the model's.")
    var ignoreBackbone = false

    func validate() throws {
        _ = try ValueRanges.integers(topK, ValueRanges.top, "--top-k")
    }

    func run() throws {
        let m = try ClassifierModel.load(from: URL(fileURLWithPath: model))
        let store = try FeatureStore.load(from: URL(fileURLWithPath: features))
        if !ignoreBackbone, let b = m.backbone {
            let diffs = b.mismatches(with: BackboneInfo(storeMeta: store.meta))
            guard diffs.isEmpty else {
                throw ValidationError("features in \(features) come from a different backbone than the model:\n  "
                                      + diffs.joined(separator: "\n  ") + "\nre-extract with the model's backbone, or pass --ignore-backbone")
            }
        }
        guard store.dimension == m.dimension else {
            throw HeadError.dimensionMismatch(expected: m.dimension, got: store.dimension, context: features)
        }
        let (rows, paths, what) = try selectRows(store, m)
        let data = LabeledRows(store: store, rows: rows, paths: paths)
        guard !data.labels.isEmpty else { throw HeadError.emptyData(context: "\(features): \(what) has no labeled rows") }
        // Store class index -> model class index, by name.
        var map: [Int: Int] = [:]
        for l in Set(data.labels) {
            guard let j = m.classNames.firstIndex(of: store.classes[l]) else { throw HeadError.unknownClassName(store.classes[l]) }
            map[l] = j
        }
        let truth = data.labels.map { map[$0]! }
        let pred = try m.predict(data.x)
        let scores = try m.classScores(data.x)
        let report = try ClassificationReport.compute(trueLabels: truth, predicted: pred, classNames: m.classNames,
                                                      scores: scores, topK: try ValueRanges.integers(topK, ValueRanges.top, "--top-k"))
        print("evaluated \(report.n) rows (\(what)) with \(m.head.kindName), C=\(m.config.C)")
        print(report.textTable())
        print("confusion matrix (rows: true, columns: predicted)")
        print(report.confusionText())
        if let o = out {
            let dir = URL(fileURLWithPath: o)
            do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw HeadError.io(path: o, reason: "cannot create output directory: \(error.localizedDescription)")
            }
            try AtomicFile.write(try report.jsonData(), to: dir.appendingPathComponent("report.json"))
            try AtomicFile.write(report.confusionCSV(), to: dir.appendingPathComponent("confusion.csv"))
            try ConfusionHeatmap.write(confusion: report.confusion, classNames: m.classNames,
                                       to: dir.appendingPathComponent("confusion.png"))
            print("wrote report.json, confusion.csv, confusion.png to \(o)")
        }
    }

    private func selectRows(_ store: FeatureStore, _ m: ClassifierModel) throws -> ([Int], [String], String) {
        if split == "all" {
            let s = LabeledRows.select(store) { _ in true }
            return (s.rows, s.paths, "all rows")
        }
        if let sp = split {
            let names = Set(sp.split(separator: ",").map { String($0) })
            let s = LabeledRows.select(store) { names.contains($0.split) }
            guard !s.rows.isEmpty else {
                throw ValidationError("no rows in split(s) \(sp); the store has: \(store.splitNames.joined(separator: ", "))")
            }
            return (s.rows, s.paths, "split \(sp)")
        }
        let s = LabeledRows.select(store) { $0.split == "val" || $0.split == "test" }
        if !s.rows.isEmpty { return (s.rows, s.paths, "val/test splits") }
        if let hp = m.holdoutPaths, !hp.isEmpty {
            let wanted = Set(hp)
            let h = LabeledRows.select(store) { wanted.contains($0.path) }
            guard h.rows.count == wanted.count else {
                throw ValidationError("the store lacks \(wanted.count - h.rows.count) of the model's held-out images; pass --split")
            }
            return (h.rows, h.paths, "rows held out at training")
        }
        throw ValidationError("\(features) has no val or test split and the model recorded no holdout; pass --split all or a split name")
    }
}
