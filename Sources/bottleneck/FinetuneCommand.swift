import ArgumentParser
import BottleneckCore
import BottleneckModels
import BottleneckPipeline
import BottleneckTensor
import BottleneckTraining
import Foundation

/// `bottleneck finetune`: train a new linear head jointly with the top K stages of a pretrained network.
struct FinetuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune the top K stages of a pretrained CNN with a new linear head on DIR/train, validating on DIR/val.",
        discussion: """
        DIR holds train/<class>/* and optionally val/<class>/* images. Everything below the top K stages is frozen and run by the inference engine; the top K stages and the head train with SGD (momentum, weight decay, cosine or step schedule) on the same kernels. K counts the stages with parameters back from the classifier: ResNet layer groups, EfficientNet-Lite MBConv blocks (conv_head comes with the last), VGG fc7, fc6 and then convolutions, Inception-v3 Mixed blocks; a lone 1x1 projection stage and pooling stages train with the stage before them. BatchNorm keeps its pretrained statistics unless --update-bn is given.

        With --augment flip (or none) the frozen prefix is computed once per image (and once per mirror image) and cached in memory; with crop it is recomputed for every augmented batch. The run reports which path it took.

        --out MODEL writes a classifier model (JSON, the format of `bottleneck train`) on the fine-tuned features (the stage before the classifier: avgpool, or fc7 for VGG), plus MODEL.finetuned.safetensors with the trained stages' weights.
        """)

    @Argument(help: "Dataset folder with train/<class>/ and optionally val/<class>/ subfolders.")
    var dir: String

    @OptionGroup var checkpoint: CheckpointOptions

    @Option(help: "Stages to fine-tune with the head (0 trains the head only).")
    var unfreeze: Int = 2

    @Option(help: "Passes over the training set.")
    var epochs: Int = 5

    @Option(help: "Base learning rate.")
    var lr: Float = 0.01

    @Option(help: "Images per SGD step.")
    var batch: Int = 16

    @Option(help: "SGD momentum.")
    var momentum: Float = 0.9

    @Option(name: .customLong("weight-decay"), help: "L2 weight decay.")
    var weightDecay: Float = 1e-4

    @Option(help: "Learning-rate schedule over epochs: cosine, step (x0.1 every epochs/3) or constant.")
    var schedule: ScheduleKind = .cosine

    @Option(help: "Training augmentations: comma-separated flip, crop (random-resized crop), or none.")
    var augment: String = "flip,crop"

    @Option(name: .customLong("head-init"), help: "Head initialisation: zero or logreg (logistic regression on frozen features).")
    var headInit: HeadInitialization = .zero

    @Flag(name: .customLong("update-bn"), help: "Train BatchNorm with batch statistics and update its running statistics.")
    var updateBN = false

    @Option(help: "Seed for shuffling and augmentation.")
    var seed: UInt64 = 0

    @OptionGroup var threadOptions: ThreadOptions

    @Option(help: "Write the fine-tuned model here (plus MODEL.finetuned.safetensors).")
    var out: String?

    @Flag(help: "Print one JSON object per epoch and a JSON summary instead of text.")
    var json = false

    func validate() throws {
        guard unfreeze >= 0 else { throw ValidationError("--unfreeze must be 0 or more") }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be a positive number") }
        guard momentum >= 0, momentum < 1 else { throw ValidationError("--momentum must be in [0, 1)") }
        guard weightDecay >= 0 else { throw ValidationError("--weight-decay must be 0 or more") }
        try ValueRanges.check(batch, ValueRanges.batch, "--batch")
        try ValueRanges.check(epochs, ValueRanges.epochs, "--epochs")
        guard lr.isFinite, weightDecay.isFinite else { throw ValidationError("--lr and --weight-decay must be finite numbers") }
        do { _ = try AugmentationSet(parsing: augment) } catch { throw ValidationError("\(error)") }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw ValidationError("\(dir) is not a directory: pass the dataset folder that holds train/ (and val/)")
        }
    }

    func run() throws {
        let engine = threadOptions.configuredEngine()
        let model = checkpoint.model
        let arch = try checkpoint.architecture()
        let root = URL(fileURLWithPath: dir)
        let scan = try DatasetScanner.scan(root)
        let train = scan.entries.filter { $0.split == "train" }, val = scan.entries.filter { $0.split == "val" }
        guard !train.isEmpty else {
            throw ValidationError("\(dir) has no train/<class>/ images; lay the dataset out as DIR/train/<class>/*.jpg")
        }
        let classes = scan.classes
        let toItems = { (e: [DatasetEntry]) in e.map {
            LabeledImage(path: root.appendingPathComponent($0.path).path, label: scan.labelIndex($0.label))
        } }
        var config = FineTuneConfig()
        config.unfreeze = unfreeze
        config.epochs = epochs
        config.learningRate = lr
        config.batchSize = batch
        config.momentum = momentum
        config.weightDecay = weightDecay
        config.schedule = schedule
        config.augment = try AugmentationSet(parsing: augment)
        config.headInit = headInit
        config.updateBatchNorm = updateBN
        config.seed = seed
        config.engine = engine
        let url = try checkpoint.checkpointURL()
        let source = try Checkpoint(contentsOf: url)
        let tuner = try FineTuner(architecture: arch, weights: source, classCount: classes.count, config: config,
                                  sourceName: url.path)
        if !json {
            print("fine-tuning \(model): stages \(tuner.top.trainableStages.joined(separator: ", ")) + new head; frozen prefix ends at \(tuner.top.prefixStage)")
            print("\(train.count) training / \(val.count) validation images, \(classes.count) classes: \(classes.joined(separator: ", "))")
        }
        let report = try tuner.train(train: toItems(train), validation: toItems(val)) { e in
            if json {
                var o: [String: Any] = ["epoch": e.epoch, "lr": Double(e.learningRate), "loss": e.trainLoss,
                                        "train_accuracy": e.trainAccuracy, "seconds": e.seconds, "prefix_seconds": e.prefixSeconds]
                if let v = e.validationAccuracy { o["val_accuracy"] = v }
                Self.printJSON(o)
            } else {
                let v = e.validationAccuracy.map { String(format: "val acc %.4f", $0) } ?? "no validation set"
                print(String(format: "epoch %d/%d  lr %.5f  loss %.4f  train acc %.4f  %@  %.2f s (prefix %.2f s)",
                             e.epoch, epochs, Double(e.learningRate), e.trainLoss, e.trainAccuracy, v, e.seconds, e.prefixSeconds))
            }
            // Progress must show while a long run is redirected to a file (stdout is then fully buffered).
            fflush(nil)
        }
        let meanEpoch = report.epochs.map(\.seconds).reduce(0, +) / Double(report.epochs.count)
        var savedTo: String?
        if let out {
            let sha = (try? SHA256.hex(fileAt: url)) ?? "unknown"
            try tuner.save(to: URL(fileURLWithPath: out), classNames: classes, baseWeightsSHA256: sha, report: report)
            savedTo = out
        }
        for s in report.skipped { FileHandle.standardError.write(Data("skipped \(s.path): \(s.reason)\n".utf8)) }
        if json {
            var o: [String: Any] = ["summary": true, "model": model, "unfreeze": unfreeze, "prefix_path": report.path.rawValue,
                                    "mean_epoch_seconds": meanEpoch, "setup_seconds": report.setupSeconds,
                                    "skipped": report.skipped.count, "threads": engine.threads]
            if let v = report.epochs.last?.validationAccuracy { o["final_val_accuracy"] = v }
            if let v = report.initialValidationAccuracy { o["initial_val_accuracy"] = v }
            if let savedTo { o["model_file"] = savedTo }
            Self.printJSON(o)
        } else {
            print("frozen prefix: \(report.path.rawValue)")
            print(String(format: "mean epoch %.2f s; setup (decode + caches) %.2f s; %d image(s) skipped",
                         meanEpoch, report.setupSeconds, report.skipped.count))
            if let v = report.epochs.last?.validationAccuracy { print(String(format: "final validation accuracy %.4f", v)) }
            if let savedTo { print("saved \(savedTo) and \(savedTo).finetuned.safetensors") }
        }
    }

    /// Prints `o` as one line of JSON. A non-finite number (a diverged loss) becomes `null`: JSON has no
    /// NaN, and the line must not be lost.
    static func printJSON(_ o: [String: Any]) {
        let finite = o.mapValues { value -> Any in
            if let d = value as? Double, !d.isFinite { return NSNull() }
            return value
        }
        if let d = try? JSONSerialization.data(withJSONObject: finite, options: [.sortedKeys]),
           let s = String(data: d, encoding: .utf8) {
            print(s)
        }
    }
}
