import ArgumentParser
import BottleneckCore
import BottleneckHeads
import BottleneckImage
import BottleneckModels
import BottleneckPipeline
import BottleneckTensor
import BottleneckTraining
import Dispatch
import Foundation

/// `bottleneck benchmark`: frozen features vs fine-tuning vs raw pixels on one dataset, in one report.
struct BenchmarkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "benchmark",
        abstract: "Compare a raw-pixel baseline, every head on frozen features at several cuts, and fine-tuning.",
        discussion: """
        All settings use the same split: DIR's train split against val (or test), else a stratified 20% holdout (seed 0). Features are extracted once per cut (pool avg) into REPORT_DIR/features/ and reused on re-runs.

        Each head's C is chosen by 5-fold CV on the training images; --seeds repeats that with differently shuffled folds (and solver seeds), so the ± reflects the model-selection randomness, not a different split.

        Fine-tuning (--finetune K,...) trains the top K stages plus a new linear head (SGD momentum 0.9, cosine schedule, flip + random-resized-crop) once per seed.

        Writes REPORT_DIR/report.md, report.json, accuracy_by_cut.png and confusion_best.png, and flags settings the raw baseline beats (negative transfer).
        """)

    @Argument(help: "Dataset folder: DIR/train|val/<class>/*.jpg or DIR/<class>/*.jpg.")
    var dir: String

    @OptionGroup var checkpoint: CheckpointOptions

    @Option(help: "Comma-separated heads: logreg, linear-svm, rbf-svm, linear-kernel-svm.")
    var heads: String = "logreg,linear-svm,rbf-svm"

    @Option(help: "Comma-separated cuts (stages removed from the top; 1 drops only the classifier).")
    var cuts: String = "1,2,3"

    @Option(help: "Comma-separated fine-tuning depths K (stages trained with the head; 0 = head only), 'none', or 'auto' (0,1,2 for every model).")
    var finetune: String = "auto"

    @Option(name: .customLong("finetune-epochs"), help: "Epochs per fine-tuning run.")
    var finetuneEpochs: Int = 5

    @Option(name: .customLong("finetune-lr"), help: "Fine-tuning base learning rate.")
    var finetuneLR: Float = 0.01

    @Option(help: "Repetitions per setting (CV fold shuffling, solver and fine-tuning seeds 0..<N).")
    var seeds: Int = 3

    @Option(name: .customLong("C"), help: "C grid for the heads, chosen per seed by cross-validation.")
    var cValues: String = "0.01,0.1,1,10"

    @Option(help: "Cross-validation folds for the C grid search.")
    var cv: Int = 5

    @Option(help: "Report directory (default: benchmark/<DIR name>-<model>).")
    var out: String?

    @OptionGroup var threadOptions: ThreadOptions

    @Flag(help: "Print only the final table.")
    var quiet = false

    func validate() throws {
        _ = try parsedHeads()
        let stageCount = try checkpoint.architecture().stages.count
        let c = try parsedInts(cuts, flag: "--cuts")
        guard !c.isEmpty, c.allSatisfy({ $0 >= 1 && $0 < stageCount }) else {
            throw ValidationError("--cuts must be values in 1...\(stageCount - 1) for \(checkpoint.model) (see `bottleneck models`)")
        }
        let k = try parsedFinetune()
        guard k.allSatisfy({ $0 >= 0 && $0 < stageCount }) else {
            throw ValidationError("--finetune depths must be in 0...\(stageCount - 1)")
        }
        guard seeds >= 1 else { throw ValidationError("--seeds must be at least 1") }
        guard finetuneEpochs >= 1 else { throw ValidationError("--finetune-epochs must be at least 1") }
        guard finetuneLR > 0, finetuneLR.isFinite else { throw ValidationError("--finetune-lr must be positive") }
        guard let cs = parseList(cValues), !cs.isEmpty, cs.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw ValidationError("--C must be a comma-separated list of positive numbers, e.g. 0.01,0.1,1,10")
        }
        guard cv >= 2 else { throw ValidationError("--cv must be at least 2") }
        try ValueRanges.check(seeds, ValueRanges.seeds, "--seeds")
        try ValueRanges.check(finetuneEpochs, ValueRanges.epochs, "--finetune-epochs")
        _ = try ValueRanges.grid(cValues, "--C")
        try ValueRanges.check(cv, ValueRanges.cvFolds, "--cv")
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw ValidationError("\(dir) is not a directory: pass the dataset folder (DIR/train|val/<class>/ or DIR/<class>/)")
        }
    }

    func run() throws {
        let started = DispatchTime.now()
        let engine = threadOptions.configuredEngine()
        let model = checkpoint.model
        let dataset = URL(fileURLWithPath: dir).standardizedFileURL
        let reportDir = URL(fileURLWithPath: out ?? "benchmark/\(dataset.lastPathComponent)-\(model)").standardizedFileURL
        try FeatureExtractor.validateOutput(reportDir, dataset: dataset)
        var options = TransferBenchmarkOptions()
        options.heads = try parsedHeads()
        options.seeds = seeds
        options.Cs = parseList(cValues)!
        options.cvFolds = cv
        if let t = threadOptions.threads { options.extraction.decoderThreads = max(1, t - 1) }
        let bench = TransferBenchmark(dataset: dataset, reportDirectory: reportDir, options: options)
        bench.log = { line in if !quiet { FileHandle.standardOutput.write(Data((line + "\n").utf8)) } }

        let weightsURL = checkpoint.weights.map { URL(fileURLWithPath: $0) }
        let network = BenchmarkNetwork(
            name: model, architecture: try checkpoint.architecture(),
            frozenBackbone: { cut in
                let pretrained = try PretrainedModel.load(model: model, weights: weightsURL, selection: .cut(cut), pool: .avg,
                                                          options: engine)
                return try NetworkBackbone(pretrained: pretrained, selection: .cut(cut))
            },
            fineTuneWeights: {
                let url = try checkpoint.checkpointURL()
                return (try Checkpoint(contentsOf: url), url.path)
            })
        var fineTune = FineTuneBenchmarkOptions()
        fineTune.depths = try parsedFinetune()
        fineTune.epochs = finetuneEpochs
        fineTune.learningRate = finetuneLR
        fineTune.engine = engine
        let rows = try bench.run(network: network, cuts: try parsedInts(cuts, flag: "--cuts"), fineTune: fineTune)

        var notes = [
            "Seed-dependent: the order of the CV folds used to choose C (StratifiedKFold shuffled with the seed), the linear SVM's coordinate order, and fine-tuning's shuffling and augmentation. Fixed across seeds: the train/test split, the features, logistic regression's and the RBF SVM's solvers. A std of 0 means every seed chose the same C.",
            "Train time: scaler + \(cv)-fold CV over C ∈ {\(cValues)} + final fit, per seed (fine-tuning: all epochs incl. decoding and per-epoch validation).",
            "Inference images/s: end-to-end per image — decode + preprocess + backbone (extraction wall time / images) + scaler + head; for fine-tuned networks, decode + forward on the test images. Measured on a shared machine, so absolute speeds are lower bounds.",
        ]
        notes += bench.notes
        notes.append(fineTune.note)
        let depths = fineTune.depths
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        let report = BenchmarkReport(rows: rows, classes: bench.classes, split: bench.split!, facts: [
            ("dataset", dataset.path), ("model", model), ("seeds", String(seeds)), ("heads", heads), ("cuts", cuts),
            ("finetune", depths.isEmpty ? "none" : depths.map { String($0) }.joined(separator: ",")),
            ("C grid", cValues), ("cv folds", String(cv)), ("raw baseline", "\(options.rawGrid)x\(options.rawGrid) area-averaged pixels + logreg"),
            ("wall seconds", String(format: "%.1f", elapsed)), ("cpu seconds", String(format: "%.1f", processCPUSeconds())),
            ("threads", String(engine.threads)),
        ], notes: notes)
        try report.write(to: reportDir)
        print(report.markdown().components(separatedBy: "\n## Notes")[0])
        print("report: \(reportDir.appendingPathComponent("report.md").path)")
    }

    private func parsedHeads() throws -> [HeadKind] {
        let names = heads.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let kinds = names.compactMap(HeadKind.init(rawValue:))
        guard !names.isEmpty, kinds.count == names.count else {
            throw ValidationError("--heads must list heads from: \(HeadKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return kinds
    }

    private func parsedInts(_ s: String, flag: String) throws -> [Int] {
        var out: [Int] = []
        for part in s.split(separator: ",") {
            guard let v = Int(part.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("\(flag) must be comma-separated integers, e.g. 1,2,3")
            }
            if !out.contains(v) { out.append(v) }
        }
        return out
    }

    private func parsedFinetune() throws -> [Int] {
        let s = finetune.trimmingCharacters(in: .whitespaces)
        if s == "auto" { return FineTuneBenchmarkOptions.automaticDepths(for: try checkpoint.architecture().family) }
        return s == "none" || s.isEmpty ? [] : try parsedInts(s, flag: "--finetune")
    }

    /// User + system CPU time of this process so far, seconds.
    private func processCPUSeconds() -> Double {
        Double(clock()) / Double(CLOCKS_PER_SEC)
    }
}
