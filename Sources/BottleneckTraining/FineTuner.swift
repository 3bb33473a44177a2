import BottleneckCore
import BottleneckHeads
import BottleneckImage
import BottleneckModels
import BottleneckTensor
import Foundation

/// One training or validation image: a file path and a class index.
public struct LabeledImage: Sendable, Equatable {
    /// Image file path.
    public var path: String
    /// Class index in `0..<classCount`.
    public var label: Int
    /// Creates an entry.
    public init(path: String, label: Int) {
        self.path = path
        self.label = label
    }
}

/// How the new linear head starts.
public enum HeadInitialization: String, Sendable, CaseIterable {
    /// All-zero weights and biases.
    case zero
    /// The multinomial logistic-regression solution (BottleneckHeads, C = 1, no scaling) on the frozen pooled
    /// features of the un-augmented training images.
    case logreg
}

/// Learning-rate schedule over epochs.
public enum ScheduleKind: String, Sendable, CaseIterable {
    /// `CosineAnnealingLR(T_max = epochs, eta_min = 0)`, stepped per epoch.
    case cosine
    /// `StepLR(step_size = max(1, epochs / 3), gamma = 0.1)`, stepped per epoch.
    case step
    /// Constant.
    case constant

    /// The closed-form schedule for a run of `epochs`.
    public func schedule(epochs: Int) -> LRSchedule {
        switch self {
        case .cosine: return .cosine(total: epochs, minimum: 0)
        case .step: return .step(every: max(1, epochs / 3), gamma: 0.1)
        case .constant: return .constant
        }
    }
}

/// Fine-tuning hyper-parameters.
public struct FineTuneConfig: Sendable {
    /// Feature stages trained with the head (see ``TrainableTop``).
    public var unfreeze = 2
    /// Passes over the training set.
    public var epochs = 5
    /// Base learning rate.
    public var learningRate: Float = 0.01
    /// Images per SGD step (the last batch of an epoch may be smaller).
    public var batchSize = 16
    /// SGD momentum.
    public var momentum: Float = 0.9
    /// L2 weight decay on every trainable parameter.
    public var weightDecay: Float = 1e-4
    /// Nesterov momentum.
    public var nesterov = false
    /// Learning-rate schedule.
    public var schedule: ScheduleKind = .cosine
    /// Augmentations of the training images.
    public var augment: AugmentationSet = [.flip, .crop]
    /// Head initialisation.
    public var headInit: HeadInitialization = .zero
    /// Train BatchNorm with batch statistics and update the running ones (default: frozen statistics).
    public var updateBatchNorm = false
    /// Seed of shuffling and augmentation.
    public var seed: UInt64 = 0
    /// Creates the default configuration.
    /// Engine settings of the frozen prefix's network (threads, fast paths).
    public var engine = EngineOptions.default

    public init() {}
}

/// How the frozen prefix was computed during training.
public enum PrefixPath: String, Sendable {
    /// No augmentation: prefix features computed once per image and cached in memory.
    case cached = "cached once per image (no augmentation)"
    /// Flip only: prefix features of each image and of its mirror computed once and cached; each epoch picks one.
    case cachedWithMirror = "cached once per image and per mirror image (flip only)"
    /// Crop augmentation: decoded images cached, prefix recomputed for every augmented batch.
    case recomputed = "recomputed for every augmented batch (crop)"
}

/// Per-epoch measurements.
public struct EpochReport: Sendable {
    /// 1-based epoch.
    public var epoch: Int
    /// Learning rate used.
    public var learningRate: Float
    /// Mean training loss over the epoch's batches (weighted by batch size).
    public var trainLoss: Double
    /// Training accuracy of the epoch's forward passes (augmented inputs, weights changing).
    public var trainAccuracy: Double
    /// Validation accuracy after the epoch (nil without a validation set).
    public var validationAccuracy: Double?
    /// Wall time of the epoch's training (augmentation, prefix, forward, backward, updates), seconds.
    public var seconds: Double
    /// Part of `seconds` spent in the frozen prefix.
    public var prefixSeconds: Double
}

/// Result of ``FineTuner/train(train:validation:progress:)``.
public struct FineTuneReport: Sendable {
    /// Which prefix path ran.
    public var path: PrefixPath
    /// Validation accuracy of the initial model (after head initialisation), if validating.
    public var initialValidationAccuracy: Double?
    /// One entry per epoch.
    public var epochs: [EpochReport]
    /// Seconds spent decoding images and filling caches before the first epoch.
    public var setupSeconds: Double
    /// Images that could not be decoded and were left out, with the reason.
    public var skipped: [(path: String, reason: String)]
}

/// Fine-tunes the top K stages of a pretrained network together with a new linear head.
///
/// The frozen prefix runs on BottleneckModels' inference `Network` (folded BN, no gradients); the top stages
/// and the head run as a `TrainingGraph` compiled from the same stage specifications, on the same kernels,
/// initialised from the same checkpoint. Caching: with no
/// augmentation or flip only, the prefix output of every training image (and of its mirror image, for flip)
/// is computed once and kept in memory — a conv net's output on a mirrored image is not the mirrored output
/// (TF-SAME padding is asymmetric), so the mirror is computed, not derived. With crop augmentation the decoded
/// images are kept and the prefix runs on every augmented batch. Validation features are cached once.
public final class FineTuner {
    /// Architecture being fine-tuned.
    public let architecture: Architecture
    /// The frozen part, ending at ``TrainableTop/prefixStage``.
    public let prefix: Network
    /// The trainable stages.
    public let top: TrainableTop
    /// Trainable stages and head as one differentiable model on prefix outputs (`top.graph`).
    public var model: TrainingGraph { top.graph }
    /// The new head's weight (`[classes, features]`, key `head.weight`) and bias.
    public var head: (weight: Parameter, bias: Parameter) { top.graph.headParameters! }
    /// Training settings.
    public let config: FineTuneConfig
    /// Input preprocessing of the architecture.
    public let preprocessor: Preprocessor
    /// Number of classes.
    public let classCount: Int

    /// Builds the prefix and the trainable top from a checkpoint.
    public init(architecture: Architecture, weights: WeightSource, classCount: Int, config: FineTuneConfig,
                sourceName: String = "weights") throws {
        guard classCount >= 2 else { throw TrainingError.invalidConfiguration("need at least 2 classes, got \(classCount)") }
        guard config.epochs >= 1, config.batchSize >= 1, config.learningRate > 0 else {
            throw TrainingError.invalidConfiguration("epochs, batch size and learning rate must be positive")
        }
        guard let preset = PreprocessPreset.named(architecture.presetName) else {
            throw TrainingError.invalidConfiguration("unknown preprocessing preset \(architecture.presetName)")
        }
        self.architecture = architecture
        self.config = config
        self.classCount = classCount
        preprocessor = Preprocessor(preset: preset)
        top = try TrainableTop(architecture: architecture, weights: weights, unfreeze: config.unfreeze, classCount: classCount,
                               sourceName: sourceName, options: config.engine)
        prefix = try Network(architecture: architecture, weights: weights, cut: .layer(top.prefixStage), pool: .none,
                             sourceName: sourceName, options: config.engine)
    }

    /// Per-image shape of the prefix output (`[C, H, W]` or `[D]`).
    public var prefixShape: [Int] {
        let s = architecture.inputSize
        return prefix.outputShape(height: s, width: s).dimensions
    }

    /// Trains on `train`, evaluating on `validation` after every epoch.
    /// - Throws: ``TrainingError`` when no training image decodes or labels are out of range.
    public func train(train: [LabeledImage], validation: [LabeledImage] = [],
                      progress: ((EpochReport) -> Void)? = nil) throws -> FineTuneReport {
        guard train.allSatisfy({ $0.label >= 0 && $0.label < classCount }),
              validation.allSatisfy({ $0.label >= 0 && $0.label < classCount }) else {
            throw TrainingError.invalidConfiguration("labels must be in 0..<\(classCount)")
        }
        let setupStart = Date()
        var skipped: [(String, String)] = []
        let (trainImages, trainKept) = decodeAll(train, skipped: &skipped)
        guard !trainKept.isEmpty else { throw TrainingError.data(path: "training set", reason: "no image could be decoded") }
        let labels = trainKept.map { $0.label }
        let path: PrefixPath = config.augment.contains(.crop) ? .recomputed
            : (config.augment.contains(.flip) ? .cachedWithMirror : .cached)
        let need = path != .recomputed || config.headInit == .logreg
        let plain = need ? try prefixFeatures(trainImages, mirrored: false) : []
        let mirrored = path == .cachedWithMirror ? try prefixFeatures(trainImages, mirrored: true) : []
        var valFeatures: [Float] = []
        var valLabels: [Int] = []
        if !validation.isEmpty {
            let (valImages, valKept) = decodeAll(validation, skipped: &skipped)
            valFeatures = try prefixFeatures(valImages, mirrored: false)
            valLabels = valKept.map { $0.label }
        }
        if config.headInit == .logreg { try initialiseHeadFromLogisticRegression(features: plain, labels: labels) }
        let setupSeconds = Date().timeIntervalSince(setupStart)
        let initialAccuracy = valLabels.isEmpty ? nil : try accuracy(features: valFeatures, labels: valLabels)

        model.training = true
        model.updatesBatchStatistics = config.updateBatchNorm
        let optimizer = SGD(parameters: model.trainableParameters, learningRate: config.learningRate,
                            momentum: config.momentum, weightDecay: config.weightDecay, nesterov: config.nesterov)
        let schedule = config.schedule.schedule(epochs: config.epochs)
        var rng = SplitMix64(seed: config.seed)
        let per = prefixShape.reduce(1, *)
        let side = architecture.inputSize
        var reports: [EpochReport] = []
        for epoch in 0..<config.epochs {
            let start = Date()
            var prefixTime = 0.0
            optimizer.learningRate = schedule.rate(base: config.learningRate, at: epoch)
            var order = Array(0..<labels.count)
            for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, rng.below(i + 1)) }
            var lossSum = 0.0, correct = 0
            // The prefix runs on chunks of whole SGD batches (it is frozen, so grouping does not change
            // its outputs' meaning, and larger batches run it faster); random draws stay in image order.
            for c0 in stride(from: 0, to: order.count, by: prefixChunk) {
                let chunk = Array(order[c0..<min(c0 + prefixChunk, order.count)])
                let features: [Float]
                switch path {
                case .cached, .cachedWithMirror:
                    var gathered: [Float] = []
                    gathered.reserveCapacity(chunk.count * per)
                    for i in chunk {
                        let useMirror = path == .cachedWithMirror && rng.nextUniform() < 0.5
                        gathered += (useMirror ? mirrored : plain)[i * per..<(i + 1) * per]
                    }
                    features = gathered
                case .recomputed:
                    let input = augmentedBatch(chunk.map { trainImages[$0] }, rng: &rng)
                    let t0 = Date()
                    features = prefix.forward(input, batch: chunk.count, height: side, width: side)
                    prefixTime += Date().timeIntervalSince(t0)
                }
                for b in stride(from: 0, to: chunk.count, by: config.batchSize) {
                    let n = min(config.batchSize, chunk.count - b)
                    let batchLabels = chunk[b..<(b + n)].map { labels[$0] }
                    optimizer.zeroGrad()
                    let logits = model.forward(Array(features[b * per..<(b + n) * per]), batch: n)
                    let (loss, grad) = try SoftmaxCrossEntropy.lossAndGradient(logits: logits, classes: classCount,
                                                                              labels: batchLabels)
                    _ = model.backward(grad)
                    optimizer.step()
                    model.parametersDidChange()
                    lossSum += loss * Double(n)
                    correct += zip(argmaxRows(logits, classes: classCount), batchLabels).filter { $0 == $1 }.count
                }
            }
            let seconds = Date().timeIntervalSince(start)
            let valAccuracy = valLabels.isEmpty ? nil : try accuracy(features: valFeatures, labels: valLabels)
            let report = EpochReport(epoch: epoch + 1, learningRate: optimizer.learningRate,
                                     trainLoss: lossSum / Double(labels.count),
                                     trainAccuracy: Double(correct) / Double(labels.count),
                                     validationAccuracy: valAccuracy, seconds: seconds, prefixSeconds: prefixTime)
            reports.append(report)
            progress?(report)
        }
        model.training = false
        return FineTuneReport(path: path, initialValidationAccuracy: initialAccuracy, epochs: reports,
                              setupSeconds: setupSeconds, skipped: skipped)
    }

    /// Images per prefix pass: whole SGD batches, at least 32 (the inference engine's batches run faster
    /// than 16-image ones; a 32-image chunk of Lite0's prefix output is 1.2 MB).
    private var prefixChunk: Int { config.batchSize * max(1, (32 + config.batchSize - 1) / config.batchSize) }

    /// `images` random-resized-cropped (and flipped, with `.flip`) into one preprocessed `[N][3][S][S]` batch:
    /// the random draws in image order (box, then flip), then the resampling in parallel.
    private func augmentedBatch(_ images: [RGBImage], rng: inout SplitMix64) -> [Float] {
        let side = architecture.inputSize, flips = config.augment.contains(.flip)
        let crops = images.map { img in
            let box = Augment.randomResizedCropBox(width: img.width, height: img.height, rng: &rng)
            return (image: img, box: box, flip: flips && rng.nextUniform() < 0.5)
        }
        var input = [Float](repeating: 0, count: images.count * 3 * side * side)
        input.withUnsafeMutableBufferPointer { dst in
            let base = dst.baseAddress!, mean = preprocessor.preset.mean, std = preprocessor.preset.std
            TensorThreads.run(pieces: crops.count, threads: config.engine.workers) { k in
                let crop = crops[k]
                crop.image.pixels.withUnsafeBufferPointer { px in
                    Augment.resizedCrop(pixels: px, width: crop.image.width, height: crop.image.height, box: crop.box,
                                        size: side, flip: crop.flip, mean: mean, std: std, into: base + k * 3 * side * side)
                }
            }
        }
        return input
    }

    /// Class scores `[N, classes]` for images (evaluation mode: frozen BN, center-crop preprocessing).
    public func logits(images: [RGBImage]) throws -> [[Float]] {
        let f = try prefixFeatures(images, mirrored: false)
        let n = images.count, k = classCount
        let out = try evalLogits(features: f, count: n)
        return (0..<n).map { Array(out[$0 * k..<($0 + 1) * k]) }
    }

    /// Current parameters of the trainable stages (checkpoint keys) and the head (`head.weight`, `head.bias`).
    public func stateDict() -> StateDict { StateDict(model.parameters) }

    // MARK: - Internals

    private func decodeAll(_ items: [LabeledImage], skipped: inout [(String, String)]) -> ([RGBImage], [LabeledImage]) {
        var images: [RGBImage] = []
        var kept: [LabeledImage] = []
        for item in items {
            do {
                let img = try ImageDecoder.decode(contentsOf: URL(fileURLWithPath: item.path))
                guard img.width > 0, img.height > 0 else { throw TrainingError.data(path: item.path, reason: "empty image") }
                images.append(img)
                kept.append(item)
            } catch {
                skipped.append((item.path, "\(error)"))
            }
        }
        return (images, kept)
    }

    /// Prefix outputs of center-cropped images (optionally mirrored before the prefix), concatenated.
    func prefixFeatures(_ images: [RGBImage], mirrored: Bool) throws -> [Float] {
        let side = architecture.inputSize, per = prefixShape.reduce(1, *)
        let chunk = max(config.batchSize, 16)
        var out = [Float](repeating: 0, count: images.count * per)
        for b in stride(from: 0, to: images.count, by: chunk) {
            let n = min(chunk, images.count - b)
            var input = [Float](repeating: 0, count: n * 3 * side * side)
            input.withUnsafeMutableBufferPointer { dst in
                for k in 0..<n {
                    let p = dst.baseAddress! + k * 3 * side * side
                    preprocessor.write(images[b + k], into: p)
                    if mirrored { Augment.flipHorizontally(p, channels: 3, height: side, width: side) }
                }
            }
            let f = prefix.forward(input, batch: n, height: side, width: side)
            out.replaceSubrange(b * per..<(b + n) * per, with: f)
        }
        return out
    }

    /// The graph's outputs (logits, or the features before the head) on prefix outputs, in evaluation
    /// mode, 32 at a time.
    private func evalOutputs(features: [Float], count: Int, includeHead: Bool = true) -> [Float] {
        let wasTraining = model.training
        model.training = false
        defer { model.training = wasTraining }
        let per = prefixShape.reduce(1, *)
        var out: [Float] = []
        for b in stride(from: 0, to: count, by: 32) {
            let n = min(32, count - b)
            out += model.forward(Array(features[b * per..<(b + n) * per]), batch: n, includeHead: includeHead)
        }
        return out
    }

    private func evalLogits(features: [Float], count: Int) throws -> [Float] { evalOutputs(features: features, count: count) }

    private func accuracy(features: [Float], labels: [Int]) throws -> Double {
        guard !labels.isEmpty else { return 0 }
        let logits = try evalLogits(features: features, count: labels.count)
        let pred = argmaxRows(logits, classes: classCount)
        return Double(zip(pred, labels).filter { $0 == $1 }.count) / Double(labels.count)
    }

    /// Fits logistic regression on the pooled features the (still pretrained) top produces and copies it into
    /// the head. Two classes: sklearn's single row w becomes rows (−w/2, +w/2), which gives the same softmax.
    private func initialiseHeadFromLogisticRegression(features: [Float], labels: [Int]) throws {
        let n = labels.count, d = top.features
        let pooled = evalOutputs(features: features, count: n, includeHead: false)
        let lr = try LogisticRegression.fit(Matrix(rows: n, cols: d, float32: pooled), labels: labels, classCount: classCount,
                                            options: .init(C: 1, maxIterations: 200))
        var w = [Float](repeating: 0, count: classCount * d), bias = [Float](repeating: 0, count: classCount)
        if lr.coef.rows == 1 {
            for j in 0..<d { w[j] = Float(-lr.coef[0, j] / 2); w[d + j] = Float(lr.coef[0, j] / 2) }
            bias = [Float(-lr.intercept[0] / 2), Float(lr.intercept[0] / 2)]
        } else {
            for c in 0..<classCount { for j in 0..<d { w[c * d + j] = Float(lr.coef[c, j]) } }
            bias = lr.intercept.map { Float($0) }
        }
        head.weight.value = w
        head.bias.value = bias
        model.parametersDidChange()
    }
}
