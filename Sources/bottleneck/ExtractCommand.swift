import ArgumentParser
import BottleneckImage
import Foundation
import BottleneckPipeline
import BottleneckModels
import BottleneckTensor
import BottleneckHeads
import BottleneckTraining
import BottleneckCore

/// `bottleneck extract`: a folder of images to a feature store.
struct ExtractCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extract",
        abstract: "Extract bottleneck features for every image under DIR into a feature store.",
        discussion: """
        DIR is scanned recursively (by content, not only extension). Layouts: DIR/<class>/* (labels from folder names), DIR/train|val|test/<class>/* (splits kept) or a flat folder (no labels).

        Without --cut or --layer, features come from cut 1: everything but the classifier.

        OUT receives features.npy (N x D float32), index.csv, labels.npy, classes.json, meta.json, and features_<split>.npy / labels_<split>.npy when the dataset has splits. Images that fail to decode are recorded in index.csv and skipped. An interrupted run continues with --resume; running again with nothing changed returns at once.
        """)

    @Argument(help: "Folder of images.")
    var dir: String

    @Option(help: ArgumentHelp("Backbone: raw-pixels (3x16x16 area-averaged pixels, the no-transfer baseline) or one of \(ModelZoo.names.joined(separator: ", ")).", valueName: "name"))
    var model: String

    @Option(help: ArgumentHelp("A model saved by `bottleneck finetune`: extract with its fine-tuned backbone (its cut and pool), so `evaluate` can score it.", valueName: "model.json"))
    var finetuned: String?

    @Option(help: ArgumentHelp("Checkpoint file (.pth or .safetensors); default: the weight cache (see `bottleneck weights fetch`).", valueName: "path"))
    var weights: String?

    @OptionGroup var stage: StageOptions

    @Option(help: "Spatial pooling of the feature map (default avg).")
    var pool: Pooling?

    @Option(help: "Output directory (default: features/<DIR name>/<model>-<cut or layer>/ under the current directory).")
    var out: String?

    @Option(help: "Images per network call (\(ValueRanges.text(ValueRanges.batch))). Memory grows with --batch x (--threads + 2); a combination needing more than 4 GiB of batch buffers is refused.")
    var batch: Int = 16

    @Option(help: "Decoder threads (\(ValueRanges.text(ValueRanges.threads)); default: cores - 1, at least 1). With EfficientNet-Lite and raw-pixels, threads + 1 workers each decode and run the network instead.")
    var threads: Int?

    @Option(help: "Extract only shard i of n (0-based, e.g. 0/4) of the sorted file list; join shards with `bottleneck merge`.")
    var shard: String?

    @Flag(help: "Continue an interrupted run in OUT.")
    var resume = false

    @Flag(help: "Faster JPEG decoding by DCT scaling on large images (not bit-identical to Pillow).")
    var fastDecode = false

    @Flag(help: "Exit with status 1 if any image fails (unreadable folders and files count as failures).")
    var strict = false

    @Flag(help: "No progress output; only warnings and errors.")
    var quiet = false

    func validate() throws {
        try ValueRanges.check(batch, ValueRanges.batch, "--batch")
        if let t = threads { try ValueRanges.check(t, ValueRanges.threads, "--threads") }
        _ = try BackboneFactory.modelOptions(model: model, weights: weights, cut: stage.cut, layer: stage.layer, pool: pool)
        if let s = shard { do { _ = try ShardSpec(parsing: s) } catch { throw ValidationError("\(error)") } }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw ValidationError("\(dir) is not a directory: pass the folder that holds the images")
        }
    }

    func run() throws {
        let backbone: FeatureBackbone
        if let finetuned {
            let url = URL(fileURLWithPath: finetuned)
            guard let info = try ClassifierModel.load(from: url).backbone, info.model == model else {
                throw ValidationError("\(finetuned) was not fine-tuned from --model \(model)")
            }
            guard stage.cut == nil, stage.layer == nil, pool == nil else {
                throw ValidationError("--finetuned fixes the cut and pooling; drop --cut, --layer and --pool")
            }
            backbone = try BackboneFactory.make(for: info, modelFile: url, weights: weights)
        } else {
            backbone = try BackboneFactory.make(model: model, weights: weights, cut: stage.cut, layer: stage.layer, pool: pool)
        }
        var options = ExtractionOptions()
        options.batchSize = batch
        if let t = threads { options.decoderThreads = t }
        options.shard = try shard.map { try ShardSpec(parsing: $0) }
        options.resume = resume
        options.fastDecode = fastDecode
        if let ms = ProcessInfo.processInfo.environment["BOTTLENECK_EXTRACT_BATCH_DELAY_MS"].flatMap(Double.init) {
            options.batchDelaySeconds = ms / 1000  // testing hook: lets the kill-and-resume test interrupt a run mid-way
        }
        InterruptMessage.install()
        let printer = ProgressPrinter(quiet: quiet)
        options.progress = { p in printer.update(p) }
        let extractor = FeatureExtractor(backbone: backbone, options: options)
        let result: ExtractionResult
        do {
            result = try extractor.extract(dataset: URL(fileURLWithPath: dir), to: out.map { URL(fileURLWithPath: $0) })
        } catch {
            printer.finish()
            throw error
        }
        printer.finish()
        let outPath = result.outputDirectory.path
        if result.upToDate {
            if !quiet { pipelineLog("\(outPath) is up to date (\(result.extracted) of \(result.imageCount) images extracted); nothing to do") }
        } else if !quiet {
            let rate = result.wallSeconds > 0 ? Double(result.imageCount) / result.wallSeconds : 0  // over all resumed segments
            var line = "extracted \(result.extracted) of \(result.imageCount) images (\(result.dimension)-d), \(result.failures.count) failed, \(result.skipped.count) skipped"
            if result.resumedImages > 0 { line += ", \(result.resumedImages) recovered from the interrupted run" }
            pipelineLog(line + String(format: " in %.1f s (%.1f images/s) -> %@", result.wallSeconds, rate, outPath))
        }
        if !result.failures.isEmpty {
            pipelineLog("warning: \(result.failures.count) image(s) could not be extracted (listed in \(outPath)/index.csv):")
            for f in result.failures.prefix(20) { pipelineLog("  \(f.path): \(f.reason)") }
            if result.failures.count > 20 { pipelineLog("  ... and \(result.failures.count - 20) more") }
        }
        if result.allFailed {
            pipelineLog("error: every image failed to decode; check that DIR holds JPEG/PNG/PPM images")
            throw ExitCode(1)
        }
        if strict && !result.failures.isEmpty {
            pipelineLog("error: --strict and \(result.failures.count) image(s) failed")
            throw ExitCode(1)
        }
    }
}

/// Renders ``ExtractionProgress``: one rewritten line on a terminal, periodic log lines otherwise.
final class ProgressPrinter: @unchecked Sendable {
    private let quiet: Bool
    private let tty = isatty(STDERR_FILENO) != 0
    private var lastLog = Date.distantPast
    private var drewLine = false
    private let lock = NSLock()

    init(quiet: Bool) { self.quiet = quiet }

    func update(_ p: ExtractionProgress) {
        guard !quiet else { return }
        lock.lock(); defer { lock.unlock() }
        let eta = p.etaSeconds.map { String(format: "%d:%02d", Int($0) / 60, Int($0) % 60) } ?? "--:--"
        let text = String(format: "%d/%d images  %.1f img/s  ETA %@  %d failed", p.done, p.total, p.imagesPerSecond, eta, p.failures)
        if tty {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
            drewLine = true
        } else if Date().timeIntervalSince(lastLog) >= 5 || p.done == p.total {
            lastLog = Date()
            pipelineLog("extract: " + text)
        }
    }

    func finish() {
        lock.lock(); defer { lock.unlock() }
        if drewLine { FileHandle.standardError.write(Data("\n".utf8)); drewLine = false }
    }
}

/// Accepted ranges of numeric command-line values, checked in each command's `validate()` before
/// anything is sized from them: a typo such as `--batch 100000000000` is refused with the range
/// instead of aborting on an allocation. Each range is stated in its option's help or error.
enum ValueRanges {
    /// Images per network call (see ``ExtractionOptions/batchSizeRange``).
    static let batch = ExtractionOptions.batchSizeRange
    /// Worker threads (see ``ExtractionOptions/decoderThreadsRange``).
    static let threads = ExtractionOptions.decoderThreadsRange
    /// Ranks reported per image or as top-k accuracy: a ranking deeper than 1000 classes is never read.
    static let top = 1...1000
    /// Cross-validation folds: each fold refits the head; 100 is far past any useful estimate.
    static let cvFolds = 2...100
    /// Values in one `--C` or `--gamma` grid: each value costs a cross-validated fit.
    static let gridValues = 1...100
    /// Magnitudes accepted for C and gamma: the solvers overflow or stall far outside this.
    static let positive: ClosedRange<Double> = 1e-12...1e12
    /// Epochs of fine-tuning, repetitions and solver iterations: bounds only against typos.
    static let epochs = 1...100_000
    static let seeds = 1...1000
    static let iterations = 1...10_000_000

    /// `"a...b"`, as the help and errors print ranges.
    static func text(_ r: ClosedRange<Int>) -> String { "\(r.lowerBound)...\(r.upperBound)" }

    /// Throws a ``ValidationError`` naming `flag` and `range` unless `range` holds `value`.
    static func check(_ value: Int, _ range: ClosedRange<Int>, _ flag: String) throws {
        guard range.contains(value) else { throw ValidationError("\(flag) \(value) is out of range: use \(text(range))") }
    }

    /// A comma-separated grid of numbers in ``positive``, at most ``gridValues`` of them.
    static func grid(_ list: String, _ flag: String) throws -> [Double] {
        guard let values = parseList(list), !values.isEmpty, values.allSatisfy({ positive.contains($0) }) else {
            throw ValidationError("\(flag) must be a comma-separated list of numbers in \(positive.lowerBound)...\(positive.upperBound), e.g. 0.01,0.1,1,10")
        }
        try check(values.count, gridValues, "\(flag) list length")
        return values
    }

    /// A comma-separated list of integers in `range`, at most ``gridValues`` of them.
    static func integers(_ list: String, _ range: ClosedRange<Int>, _ flag: String) throws -> [Int] {
        let parts = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let values = parts.compactMap { Int($0) }
        guard !parts.isEmpty, values.count == parts.count, values.allSatisfy({ range.contains($0) }) else {
            throw ValidationError("\(flag) must be a comma-separated list of integers in \(text(range))")
        }
        try check(values.count, gridValues, "\(flag) list length")
        return values
    }
}

/// Writes a line to standard error.
func pipelineLog(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

/// Maps `--model`/`--weights`/`--cut`/`--layer`/`--pool` to a ``FeatureBackbone``: `raw-pixels` to the
/// built-in baseline, anything else through the shared ``ModelOptions`` (same validation and loading
/// as the other commands that run a network).
enum BackboneFactory {
    static func modelOptions(model: String, weights: String?, cut: Int?, layer: String?, pool: Pooling?) throws -> ModelOptions? {
        if model == RawPixelBackbone.modelName {
            if cut != nil || layer != nil || weights != nil || (pool != nil && pool != .avg) {
                throw ValidationError("raw-pixels takes no --weights, --cut, --layer or --pool (it always area-averages to 3x16x16)")
            }
            return nil
        }
        guard ModelZoo.names.contains(model) else {
            throw ValidationError("unknown --model '\(model)'; choose raw-pixels (baseline) or one of: \(ModelZoo.names.joined(separator: ", "))")
        }
        var args = ["--model", model]
        if let weights { args += ["--weights", weights] }
        if let cut { args += ["--cut", String(cut)] }
        if let layer { args += ["--layer", layer] }
        if let pool { args += ["--pool", pool.rawValue] }
        do { return try ModelOptions.parse(args) } catch {
            throw ValidationError(ModelOptions.message(for: error))
        }
    }

    static func make(model: String, weights: String?, cut: Int?, layer: String?, pool: Pooling?) throws -> FeatureBackbone {
        guard let options = try modelOptions(model: model, weights: weights, cut: cut, layer: layer, pool: pool) else {
            return RawPixelBackbone(preset: .imagenet, grid: 16)
        }
        // Default cut 1: everything but the classifier, i.e. the usual bottleneck features.
        return try NetworkBackbone(pretrained: options.loadModel(defaultCut: 1), selection: options.selection(defaultCut: 1))
    }

    /// Rebuilds the backbone a saved classifier was trained on (`cut N` / `layer X`, pool), including the
    /// fine-tuned stages when the model has a `.finetuned.safetensors` sidecar (named relative to `modelFile`).
    static func make(for info: BackboneInfo, modelFile: URL, weights: String?) throws -> FeatureBackbone {
        if info.model == RawPixelBackbone.modelName {
            return try make(model: info.model, weights: nil, cut: nil, layer: nil, pool: nil)
        }
        var cut: Int? = nil, layer: String? = nil
        if info.cut.hasPrefix("cut ") { cut = Int(info.cut.dropFirst(4)) }
        if info.cut.hasPrefix("layer ") { layer = String(info.cut.dropFirst(6)) }
        var pool: Pooling? = nil
        if !info.pool.isEmpty {
            guard let recorded = Pooling(rawValue: info.pool) else {
                throw ValidationError("\(modelFile.path) records pooling '\(info.pool)'; expected one of: \(Pooling.allValueStrings.joined(separator: ", "))")
            }
            pool = recorded
        }
        guard let sidecarName = info.extra["finetuned_weights"] else {
            return try make(model: info.model, weights: weights, cut: cut, layer: layer, pool: pool)
        }
        guard let options = try modelOptions(model: info.model, weights: weights, cut: cut, layer: layer, pool: pool) else {
            throw ValidationError("\(modelFile.path): a raw-pixels backbone cannot be fine-tuned")
        }
        let sidecar = modelFile.deletingLastPathComponent().appendingPathComponent(sidecarName)
        guard FileManager.default.fileExists(atPath: sidecar.path) else {
            throw ValidationError("\(modelFile.path) was fine-tuned but its weights file \(sidecar.path) is missing; keep it next to the model file")
        }
        let selection = options.selection(defaultCut: 1)
        // Resolve the base checkpoint without building a base-weights network that would be thrown away.
        let base = try PretrainedModel.resolveCheckpoint(model: options.model, weights: options.weights.map { URL(fileURLWithPath: $0) })
        let overlay = OverlayWeights(base: try Checkpoint(contentsOf: base.url), overrides: try StateDictFile(contentsOf: sidecar))
        let network = try Network(architecture: try ModelZoo.architecture(options.model), weights: overlay, cut: selection,
                                  pool: options.pool, sourceName: sidecar.path, options: .fromEnvironment())
        let identity = FineTunedIdentity.compose(base: base.weightsSHA256, sidecarSHA256: try SHA256.hex(fileAt: sidecar))
        return try NetworkBackbone(network: network, selection: selection, weightsSHA256: identity)
    }
}

/// On Ctrl-C, says how to continue before exiting. Nothing needs cleaning up: committed batches are
/// already durable in the journal, so the handler only writes a message and exits (status 130).
enum InterruptMessage {
    /// Preallocated so the handler only calls async-signal-safe `write` and `_exit`.
    nonisolated(unsafe) static let text: UnsafeMutableBufferPointer<UInt8> = {
        let bytes = Array("\ninterrupted: completed batches are saved; run the same command with --resume to continue\n".utf8)
        let buf = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: bytes.count)
        _ = buf.initialize(from: bytes)
        return buf
    }()

    static func install() {
        _ = text
        signal(SIGINT) { _ in
            _ = write(STDERR_FILENO, InterruptMessage.text.baseAddress, InterruptMessage.text.count)
            _exit(130)
        }
    }
}
