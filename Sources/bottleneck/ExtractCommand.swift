import ArgumentParser
import BottleneckImage
import Foundation
import BottleneckPipeline

/// `bottleneck extract`: a folder of images to a feature store.
struct ExtractCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extract",
        abstract: "Extract bottleneck features for every image under DIR into a feature store.",
        discussion: """
        DIR is scanned recursively (by content, not only extension). Layouts: DIR/<class>/* (labels from
        folder names), DIR/train|val|test/<class>/* (splits kept) or a flat folder (no labels).
        OUT receives features.npy (N x D float32), index.csv, labels.npy, classes.json, meta.json and
        features_<split>.npy / labels_<split>.npy when the dataset has splits. Images that fail to decode
        are recorded in index.csv and skipped. An interrupted run continues with --resume; running again
        with nothing changed returns at once.
        """)

    @Argument(help: "Folder of images.")
    var dir: String

    @Option(help: "Backbone: a model from the zoo, or raw-pixels (3x16x16 area-averaged pixels, the no-transfer baseline).")
    var model: String

    @Option(help: "Cut the network N stages from the top (model-dependent).")
    var cut: Int?

    @Option(help: "Take features at this named layer instead of --cut.")
    var layer: String?

    @Option(help: "Spatial pooling of the feature map: avg, max or none.")
    var pool: String?

    @Option(help: "Output directory (default: features/<DIR name>/<model>-<cut or layer>/ under the current directory).")
    var out: String?

    @Option(help: "Images per network call.")
    var batch: Int = 16

    @Option(help: "Decoder threads (default: cores - 1, at least 1).")
    var threads: Int?

    @Option(help: "Extract only shard i of n (0-based, e.g. 0/4) of the sorted file list; join shards with `bottleneck merge`.")
    var shard: String?

    @Flag(help: "Continue an interrupted run in OUT.")
    var resume = false

    @Flag(help: "Faster JPEG decoding by DCT scaling on large images (not bit-identical to Pillow).")
    var fastDecode = false

    @Flag(help: "Exit with status 1 if any image fails.")
    var strict = false

    @Flag(help: "No progress output; only warnings and errors.")
    var quiet = false

    func validate() throws {
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        if let t = threads, t < 1 { throw ValidationError("--threads must be at least 1") }
        if cut != nil && layer != nil { throw ValidationError("give either --cut or --layer, not both") }
        if let c = cut, c < 0 { throw ValidationError("--cut must be 0 or more") }
        if let p = pool, !["avg", "max", "none"].contains(p) { throw ValidationError("--pool must be avg, max or none") }
        if let s = shard { do { _ = try ShardSpec(parsing: s) } catch { throw ValidationError("\(error)") } }
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw ValidationError("\(dir) is not a directory: pass the folder that holds the images")
        }
    }

    func run() throws {
        let backbone = try BackboneFactory.make(model: model, cut: cut, layer: layer, pool: pool)
        var options = ExtractionOptions()
        options.batchSize = batch
        if let t = threads { options.decoderThreads = t }
        options.shard = try shard.map { try ShardSpec(parsing: $0) }
        options.resume = resume
        options.fastDecode = fastDecode
        if let ms = ProcessInfo.processInfo.environment["BOTTLENECK_EXTRACT_BATCH_DELAY_MS"].flatMap(Double.init) {
            options.batchDelaySeconds = ms / 1000  // testing hook: lets the kill-and-resume test interrupt a run mid-way
        }
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
            let rate = result.wallSeconds > 0 ? Double(result.imageCount - result.resumedImages) / result.wallSeconds : 0
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

/// Writes a line to standard error.
func pipelineLog(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

/// Maps `--model`/`--cut`/`--layer`/`--pool` to a ``FeatureBackbone``.
enum BackboneFactory {
    static func make(model: String, cut: Int?, layer: String?, pool: String?) throws -> FeatureBackbone {
        if model == "raw-pixels" {
            if cut != nil || layer != nil || (pool != nil && pool != "avg") {
                throw ValidationError("raw-pixels takes no --cut, --layer or --pool (it always area-averages to 3x16x16)")
            }
            return RawPixelBackbone(preset: .imagenet, grid: 16)
        }
        throw ValidationError("model '\(model)' is not available in this build; available: raw-pixels")
    }
}
