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
        All settings use the same split: DIR's train split against val (or test), else a stratified 20% holdout
        (seed 0). Features are extracted once per cut (pool avg) into REPORT_DIR/features/ and reused on re-runs.
        Each head's C is chosen by 5-fold CV on the training images; --seeds repeats that with differently shuffled
        folds (and solver seeds), so the ± reflects the model-selection randomness, not a different split.
        Fine-tuning (--finetune K,...) trains the top K stages plus a new linear head (SGD momentum 0.9, cosine
        schedule, flip + random-resized-crop) once per seed. Writes REPORT_DIR/report.md, report.json,
        accuracy_by_cut.png and confusion_best.png, and flags settings the raw baseline beats (negative transfer).
        """)

    @Argument(help: "Dataset folder: DIR/train|val/<class>/*.jpg or DIR/<class>/*.jpg.")
    var dir: String

    @Option(help: ArgumentHelp("Model: \(ModelZoo.names.joined(separator: ", ")).", valueName: "name"))
    var model: String = "efficientnet-lite0"

    @Option(help: ArgumentHelp("Checkpoint file (.pth or .safetensors) instead of the cached one.", valueName: "path"))
    var weights: String?

    @Option(help: "Comma-separated heads: logreg, linear-svm, rbf-svm, linear-kernel-svm.")
    var heads: String = "logreg,linear-svm,rbf-svm"

    @Option(help: "Comma-separated cuts (stages removed from the top; 1 drops only the classifier).")
    var cuts: String = "1,2,3"

    @Option(help: "Comma-separated fine-tuning depths K (stages trained with the head; 0 = head only), 'none', or 'auto' (0,1,2 for models that can be fine-tuned, 0 for inception_v3, none for VGG and MobileNetV2).")
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

    @Option(help: "Threads for decoding and the network (default: all cores).")
    var threads: Int?

    @Flag(help: "Print only the final table.")
    var quiet = false

    func validate() throws {
        guard ModelZoo.names.contains(model) else {
            throw ValidationError("unknown --model '\(model)'; choose one of: \(ModelZoo.names.joined(separator: ", "))")
        }
        _ = try parsedHeads()
        let stageCount = (try? ModelZoo.architecture(model))?.stages.count ?? Int.max
        let c = try parsedInts(cuts, flag: "--cuts")
        guard !c.isEmpty, c.allSatisfy({ $0 >= 1 && $0 < stageCount }) else {
            throw ValidationError("--cuts must be values in 1...\(stageCount - 1) for \(model) (see `bottleneck models`)")
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
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        try ValueRanges.check(seeds, ValueRanges.seeds, "--seeds")
        try ValueRanges.check(finetuneEpochs, ValueRanges.epochs, "--finetune-epochs")
        _ = try ValueRanges.grid(cValues, "--C")
        try ValueRanges.check(cv, ValueRanges.cvFolds, "--cv")
        if let t = threads { try ValueRanges.check(t, ValueRanges.threads, "--threads") }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw ValidationError("\(dir) is not a directory: pass the dataset folder (DIR/train|val/<class>/ or DIR/<class>/)")
        }
        if let w = weights, !FileManager.default.fileExists(atPath: w) { throw ValidationError("--weights \(w): no such file") }
    }

    func run() throws {
        let started = DispatchTime.now()
        let engine = EngineOptions.fromEnvironment(threads: threads)
        TensorThreads.configureBLAS(threads: engine.threads)
        let dataset = URL(fileURLWithPath: dir).standardizedFileURL
        let reportDir = URL(fileURLWithPath: out ?? "benchmark/\(dataset.lastPathComponent)-\(model)").standardizedFileURL
        try FeatureExtractor.validateOutput(reportDir, dataset: dataset)
        var options = TransferBenchmarkOptions()
        options.heads = try parsedHeads()
        options.seeds = seeds
        options.Cs = parseList(cValues)!
        options.cvFolds = cv
        if let t = threads { options.extraction.decoderThreads = max(1, t - 1) }
        let bench = TransferBenchmark(dataset: dataset, reportDirectory: reportDir, options: options)
        let say: (String) -> Void = { line in if !quiet { FileHandle.standardOutput.write(Data((line + "\n").utf8)) } }
        bench.log = say

        let weightsURL = weights.map { URL(fileURLWithPath: $0) }
        var rows: [BenchmarkRow] = []
        var baselineDone = false
        for cut in try parsedInts(cuts, flag: "--cuts") {
            let pretrained = try PretrainedModel.load(model: model, weights: weightsURL, selection: .cut(cut), pool: .avg,
                                                      options: engine)
            let backbone = try NetworkBackbone(pretrained: pretrained, selection: .cut(cut))
            if !baselineDone {
                // The baseline sees exactly the network's input (same resize, crop and normalisation).
                baselineDone = true
                let raw = RawPixelBackbone(preset: backbone.preset, grid: options.rawGrid)
                rows += try bench.evaluate(backbone: raw, cacheName: "raw-pixels-\(options.rawGrid)x\(options.rawGrid)-\(backbone.preset.name)",
                                           setting: "raw-pixels", cut: nil, heads: [.logreg])
            }
            rows += try bench.evaluate(backbone: backbone, cacheName: "\(model)-cut\(cut)-avg", setting: "frozen", cut: cut,
                                       heads: options.heads)
        }

        var notes = [
            "Seed-dependent: the order of the CV folds used to choose C (StratifiedKFold shuffled with the seed), the linear SVM's coordinate order, and fine-tuning's shuffling and augmentation. Fixed across seeds: the train/test split, the features, logistic regression's and the RBF SVM's solvers. A std of 0 means every seed chose the same C.",
            "Train time: scaler + \(cv)-fold CV over C ∈ {\(cValues)} + final fit, per seed (fine-tuning: all epochs incl. decoding and per-epoch validation).",
            "Inference images/s: end-to-end per image — decode + preprocess + backbone (extraction wall time / images) + scaler + head; for fine-tuned networks, decode + forward on the test images. Measured on a shared machine, so absolute speeds are lower bounds.",
        ]
        notes += bench.notes
        let depths = try parsedFinetune()
        if depths.isEmpty {
            notes.append("Fine-tuning: not run (--finetune none, or a VGG or MobileNetV2 model, whose fine-tuning is not supported).")
        } else {
            let split = bench.split!
            rows += try fineTuneRows(depths: depths, dataset: dataset, split: split, classCount: bench.classes.count, say: say)
            notes.append(String(format: "Fine-tuning recipe: SGD momentum 0.9, weight decay 1e-4, lr %g cosine, batch 16, %d epochs, flip + random-resized-crop, BatchNorm frozen, head initialised to zero; accuracy after the last epoch.", Double(finetuneLR), finetuneEpochs))
        }
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

    /// Fine-tunes the top K stages once per seed for every depth, on the benchmark's split.
    private func fineTuneRows(depths: [Int], dataset: URL, split: BenchmarkSplit, classCount: Int,
                              say: (String) -> Void) throws -> [BenchmarkRow] {
        let arch = try ModelZoo.architecture(model)
        let checkpointURL = try weights.map { URL(fileURLWithPath: $0) }
            ?? WeightCache.default.resolve(model: model, manifest: WeightManifest.bundled())
        let source = try Checkpoint(contentsOf: checkpointURL)
        let scan = try DatasetScanner.scan(dataset)
        var labelOf: [String: Int] = [:]
        for e in scan.entries { labelOf[e.path] = scan.labelIndex(e.label) }
        func items(_ paths: [String]) -> [LabeledImage] {
            paths.compactMap { p in labelOf[p].map { LabeledImage(path: dataset.appendingPathComponent(p).path, label: $0) } }
        }
        let train = items(split.trainPaths), test = items(split.testPaths)
        var rows: [BenchmarkRow] = []
        for k in depths {
            var accs: [Double] = [], secs: [Double] = []
            var confusion: [[Int]] = []
            var imagesPerSecond = 0.0
            var path = ""
            var headInputs = 0
            for s in 0..<seeds {
                var config = FineTuneConfig()
                config.unfreeze = k
                config.epochs = finetuneEpochs
                config.learningRate = finetuneLR
                config.seed = UInt64(s)
                config.engine = .fromEnvironment(threads: threads)
                let tuner = try FineTuner(architecture: arch, weights: source, classCount: classCount, config: config,
                                          sourceName: checkpointURL.path)
                headInputs = tuner.top.features
                let t0 = DispatchTime.now()
                let report = try tuner.train(train: train, validation: test)
                secs.append(Double(DispatchTime.now().uptimeNanoseconds - t0.uptimeNanoseconds) / 1e9)
                guard let acc = report.epochs.last?.validationAccuracy else {
                    throw ValidationError("fine-tuning K=\(k) produced no validation accuracy: the test side of the split is empty")
                }
                accs.append(acc)
                path = report.path.rawValue
                if s == 0 {
                    // Seed 0's predictions give the confusion matrix and the end-to-end inference speed.
                    let t1 = DispatchTime.now()
                    var images: [RGBImage] = [], labels: [Int] = []
                    for item in test {
                        guard let img = try? ImageDecoder.decode(contentsOf: URL(fileURLWithPath: item.path)) else { continue }
                        images.append(img); labels.append(item.label)
                    }
                    var predicted: [Int] = []
                    for b in stride(from: 0, to: images.count, by: 32) {
                        for scores in try tuner.logits(images: Array(images[b..<min(b + 32, images.count)])) {
                            var arg = 0
                            for (j, v) in scores.enumerated() where v > scores[arg] { arg = j }
                            predicted.append(arg)
                        }
                    }
                    let dt = Double(DispatchTime.now().uptimeNanoseconds - t1.uptimeNanoseconds) / 1e9
                    imagesPerSecond = dt > 0 ? Double(images.count) / dt : 0
                    confusion = [[Int]](repeating: [Int](repeating: 0, count: classCount), count: classCount)
                    for (p, l) in zip(predicted, labels) { confusion[l][p] += 1 }
                }
                say(String(format: "  finetune K=%d seed %d: accuracy %.4f, %.1f s (%@)", k, s, acc, secs.last!, path))
            }
            rows.append(BenchmarkRow(setting: "finetune", head: "linear", cut: 1, unfrozen: k, accuracies: accs, trainSeconds: secs,
                                     inferenceImagesPerSecond: imagesPerSecond, featureDimension: headInputs, chosenC: [],
                                     confusion: confusion, note: "frozen prefix: \(path)"))
        }
        return rows
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
        if s == "auto" {
            // Fine-tuning covers the EfficientNet-Lite and ResNet tops (TrainableTop); Inception-v3 trains only
            // its new head (K = 0). The default grid is 3 depths x seeds x 5 epochs.
            switch (try? ModelZoo.architecture(model))?.family {
            case "efficientnet-lite", "resnet": return [0, 1, 2]
            case "inception": return [0]
            default: return []
            }
        }
        return s == "none" || s.isEmpty ? [] : try parsedInts(s, flag: "--finetune")
    }

    /// User + system CPU time of this process so far, seconds.
    private func processCPUSeconds() -> Double {
        Double(clock()) / Double(CLOCKS_PER_SEC)
    }
}
