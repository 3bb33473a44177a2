import BottleneckHeads
import BottleneckImage
import BottleneckModels
import BottleneckTensor
import BottleneckTraining
import Dispatch
import Foundation

/// What one benchmark row measures; the raw value is the `setting` column of `report.md` / `report.json`.
public enum BenchmarkSetting: String, Sendable, CaseIterable {
    /// Logistic regression on area-averaged pixels: the no-transfer baseline.
    case rawPixels = "raw-pixels"
    /// A head on frozen features of a cut network.
    case frozen
    /// The top K stages trained with a new linear head.
    case finetune
}

/// The pretrained network a transfer benchmark compares, as the two halves need it.
public struct BenchmarkNetwork {
    /// Model name, used in feature-cache names (`<name>-cut<k>-avg`).
    public var name: String
    /// The architecture fine-tuning trains the top of.
    public var architecture: Architecture
    /// Builds the frozen backbone with `cut` stages removed from the top, average-pooled.
    public var frozenBackbone: (_ cut: Int) throws -> FeatureBackbone
    /// Loads the weights fine-tuning starts from, with the name errors should report for them.
    public var fineTuneWeights: () throws -> (weights: WeightSource, sourceName: String)

    /// Creates the description; the closures run only when their half of the benchmark does.
    public init(name: String, architecture: Architecture, frozenBackbone: @escaping (Int) throws -> FeatureBackbone,
                fineTuneWeights: @escaping () throws -> (weights: WeightSource, sourceName: String)) {
        self.name = name; self.architecture = architecture
        self.frozenBackbone = frozenBackbone; self.fineTuneWeights = fineTuneWeights
    }
}

/// Settings of the fine-tuning half of the benchmark. Every other training setting is ``FineTuneConfig``'s
/// default: SGD momentum 0.9, weight decay 1e-4, cosine schedule, batch 16, flip + random-resized-crop,
/// frozen BatchNorm, zero-initialised head.
public struct FineTuneBenchmarkOptions: Sendable {
    /// Depths K to fine-tune (stages trained with the head; 0 = head only), each once per seed. Empty: not run.
    public var depths: [Int] = []
    /// Epochs per fine-tuning run.
    public var epochs: Int = 5
    /// Base learning rate.
    public var learningRate: Float = 0.01
    /// Engine settings of the frozen prefix's network.
    public var engine = EngineOptions.default

    /// Defaults: not run; 5 epochs at learning rate 0.01 when depths are given.
    public init() {}

    /// The depths `bottleneck benchmark --finetune auto` runs for `family`: 0, 1 and 2.
    public static func automaticDepths(for family: ModelFamily) -> [Int] {
        family.automaticFineTuneDepths
    }

    /// The report note describing the recipe, or why fine-tuning did not run.
    public var note: String {
        if depths.isEmpty {
            return "Fine-tuning: not run (--finetune none)."
        }
        return String(format: "Fine-tuning recipe: SGD momentum 0.9, weight decay 1e-4, lr %g cosine, batch 16, %d epochs, flip + random-resized-crop, BatchNorm frozen, head initialised to zero; accuracy after the last epoch.", Double(learningRate), epochs)
    }
}

/// Index of the largest score, the first one on ties; 0 for an empty list.
public func argmax(_ scores: [Float]) -> Int {
    var best = 0
    for (j, v) in scores.enumerated() where v > scores[best] { best = j }
    return best
}

/// Confusion matrix `[true][predicted]` over `classCount` classes of paired predictions and labels,
/// each in `0..<classCount`.
public func confusionMatrix(predicted: [Int], labels: [Int], classCount: Int) -> [[Int]] {
    var confusion = [[Int]](repeating: [Int](repeating: 0, count: classCount), count: classCount)
    for (p, l) in zip(predicted, labels) { confusion[l][p] += 1 }
    return confusion
}

extension TransferBenchmark {
    /// Runs both halves: the raw-pixel baseline (on the first cut's preprocessing), every head on frozen
    /// features at every cut, then fine-tuning at `fineTune.depths` on the same split.
    /// - Returns: baseline row first, then frozen rows by cut and head, then one row per depth.
    /// - Throws: errors of the backbone closures, extraction, fitting or fine-tuning, each naming its file.
    public func run(network: BenchmarkNetwork, cuts: [Int], fineTune: FineTuneBenchmarkOptions) throws -> [BenchmarkRow] {
        var rows = try evaluateFrozen(network: network, cuts: cuts)
        if !fineTune.depths.isEmpty { rows += try evaluateFineTuning(network: network, options: fineTune) }
        return rows
    }

    /// The frozen half: the raw-pixel baseline (logreg on the network's exact input preprocessing) and
    /// ``TransferBenchmarkOptions/heads`` on each cut's average-pooled features. Fixes ``split``.
    public func evaluateFrozen(network: BenchmarkNetwork, cuts: [Int]) throws -> [BenchmarkRow] {
        var rows: [BenchmarkRow] = []
        for cut in cuts {
            let backbone = try network.frozenBackbone(cut)
            if rows.isEmpty {
                let raw = RawPixelBackbone(preset: backbone.preset, grid: options.rawGrid)
                rows += try evaluate(backbone: raw, cacheName: "raw-pixels-\(options.rawGrid)x\(options.rawGrid)-\(backbone.preset.name)",
                                     setting: .rawPixels, cut: nil, heads: [.logreg])
            }
            rows += try evaluate(backbone: backbone, cacheName: "\(network.name)-cut\(cut)-avg", setting: .frozen, cut: cut,
                                 heads: options.heads)
        }
        return rows
    }

    /// The fine-tuning half: for every depth K, fine-tunes the top K stages plus a new linear head once per
    /// seed (`0..<options.seeds`) on ``split``'s train images and scores the last epoch on its test images.
    /// Seed 0's fine-tuned network also gives the confusion matrix and the inference speed, measured as the frozen
    /// rows' are: the fine-tuned backbone (base weights overlaid with the trained stages, cut at the feature
    /// stage) extracts the dataset through the same `FeatureExtractor` (cached under
    /// `features/<name>-finetune-k<K>`), then the trained head scores the test rows.
    /// - Precondition: the split is fixed, i.e. ``evaluateFrozen(network:cuts:)`` or ``evaluate`` ran first.
    /// - Throws: ``PipelineError/invalidDataset(path:reason:)`` when no split is fixed or its test side is
    ///   empty; the training module's errors otherwise.
    public func evaluateFineTuning(network: BenchmarkNetwork, options fineTune: FineTuneBenchmarkOptions) throws -> [BenchmarkRow] {
        guard let split else {
            throw PipelineError.invalidDataset(path: dataset.path, reason: "fine-tuning needs the split of a frozen feature set; evaluate one first")
        }
        let classCount = classes.count
        let (source, sourceName) = try network.fineTuneWeights()
        let scan = try DatasetScanner.scan(dataset)
        var labelOf: [String: Int] = [:]
        for e in scan.entries { labelOf[e.path] = scan.labelIndex(e.label) }
        func items(_ paths: [String]) -> [LabeledImage] {
            paths.compactMap { p in labelOf[p].map { LabeledImage(path: dataset.appendingPathComponent(p).path, label: $0) } }
        }
        let train = items(split.trainPaths), test = items(split.testPaths)
        var rows: [BenchmarkRow] = []
        for k in fineTune.depths {
            var accs: [Double] = [], secs: [Double] = []
            var confusion: [[Int]] = []
            var imagesPerSecond = 0.0
            var path = ""
            var headInputs = 0
            for s in 0..<options.seeds {
                var config = FineTuneConfig()
                config.unfreeze = k
                config.epochs = fineTune.epochs
                config.learningRate = fineTune.learningRate
                config.seed = UInt64(s)
                config.engine = fineTune.engine
                let tuner = try FineTuner(architecture: network.architecture, weights: source, classCount: classCount,
                                          config: config, sourceName: sourceName)
                headInputs = tuner.top.features
                let t0 = DispatchTime.now()
                let report = try tuner.train(train: train, validation: test)
                secs.append(Self.seconds(since: t0))
                guard let acc = report.epochs.last?.validationAccuracy else {
                    throw PipelineError.invalidDataset(path: dataset.path, reason: "fine-tuning K=\(k) produced no validation accuracy: the test side of the split is empty")
                }
                accs.append(acc)
                path = report.path.rawValue
                if s == 0 {
                    let (rate, predicted, labels) = try extractFineTuned(tuner, base: source, sourceName: sourceName,
                                                                         cacheName: "\(network.name)-finetune-k\(k)")
                    imagesPerSecond = rate
                    confusion = confusionMatrix(predicted: predicted, labels: labels, classCount: classCount)
                }
                log?(String(format: "  finetune K=%d seed %d: accuracy %.4f, %.1f s (%@)", k, s, acc, secs.last!, path))
            }
            rows.append(BenchmarkRow(setting: .finetune, head: "linear", cut: 1, unfrozen: k, accuracies: accs, trainSeconds: secs,
                                     inferenceImagesPerSecond: imagesPerSecond, featureDimension: headInputs, chosenC: [],
                                     confusion: confusion, note: "frozen prefix: \(path)"))
        }
        return rows
    }

    /// Runs `tuner`'s fine-tuned backbone on the engine and pipeline the frozen rows use (see
    /// ``evaluateFineTuning(network:options:)``) and scores the test rows with its head.
    /// - Returns: images per second (extraction wall time per image plus the head's time per test image), the
    ///   predicted classes of the test rows and their labels.
    private func extractFineTuned(_ tuner: FineTuner, base: WeightSource, sourceName: String,
                                  cacheName: String) throws -> (imagesPerSecond: Double, predicted: [Int], labels: [Int]) {
        let tuned = OverlayWeights(base: base, overrides: StateDictFile(state: StateDict(tuner.top.stageParameters)))
        let selection = StageSelection.layer(tuner.top.featureStage)
        let network = try Network(architecture: tuner.architecture, weights: tuned, cut: selection, pool: .avg,
                                  sourceName: sourceName, options: tuner.config.engine)
        let backbone = try NetworkBackbone(network: network, selection: selection, weightsSHA256: "finetuned:\(cacheName)")
        let out = reportDirectory.appendingPathComponent("features").appendingPathComponent(cacheName)
        // The trained weights differ from run to run: never reuse an earlier extraction.
        try? FileManager.default.removeItem(at: out)
        log?("extracting \(cacheName) features (\(backbone.featureDimension)-d) into \(out.path)")
        let result = try FeatureExtractor(backbone: backbone, options: options.extraction).extract(dataset: dataset, to: out)
        let (_, test) = try splitRows(try FeatureStore.load(from: out))
        let (weight, bias) = tuner.head
        let d = tuner.top.features, k = tuner.classCount
        let t0 = DispatchTime.now()
        let predicted = (0..<test.x.rows).map { r in
            argmax((0..<k).map { c in
                var acc = Double(bias.value[c])
                for j in 0..<d { acc += Double(weight.value[c * d + j]) * test.x[r, j] }
                return Float(acc)
            })
        }
        let headPerImage = Self.seconds(since: t0) / Double(max(1, test.labels.count))
        let perImage = (result.extracted > 0 ? result.wallSeconds / Double(result.extracted) : 0) + headPerImage
        return (perImage > 0 ? 1 / perImage : 0, predicted, test.labels)
    }
}
