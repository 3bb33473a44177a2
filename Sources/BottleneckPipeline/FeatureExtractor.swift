import Foundation
import BottleneckCore
import BottleneckImage

/// Settings for one extraction run.
public struct ExtractionOptions: Sendable {
    /// Images per backbone call (and per journaled batch). Default 16.
    public var batchSize: Int = 16
    /// Decoder threads feeding the backbone; default: all cores but one (at least 1).
    public var decoderThreads: Int = max(1, ProcessInfo.processInfo.activeProcessorCount - 1)
    /// Extract only this shard of the sorted list; nil for all.
    public var shard: ShardSpec?
    /// Continue an interrupted run in the output directory instead of starting over.
    public var resume: Bool = false
    /// Let JPEG decoding scale by 1/2, 1/4, 1/8 in the DCT while the shorter side stays at least the
    /// preset's resize target: several times faster on large photos, not bit-identical to Pillow.
    public var fastDecode: Bool = false
    /// Testing hook: sleep this long after each committed batch (slows a run down so a test can kill it).
    public var batchDelaySeconds: Double = 0
    /// Called on the extraction thread after every batch.
    public var progress: (@Sendable (ExtractionProgress) -> Void)?

    /// Default options.
    public init() {}
}

/// A snapshot of a running extraction.
public struct ExtractionProgress: Sendable {
    /// Images finished (extracted or failed), including those done before a resume.
    public var done: Int
    /// Images in this run (this shard).
    public var total: Int
    /// Failures so far.
    public var failures: Int
    /// Seconds since this process started extracting.
    public var elapsedSeconds: Double
    /// Throughput of this process so far, images per second.
    public var imagesPerSecond: Double
    /// Estimated seconds left at the current rate (nil before the first batch).
    public var etaSeconds: Double?
}

/// What an extraction produced.
public struct ExtractionResult: Sendable {
    /// The store directory.
    public var outputDirectory: URL
    /// Images attempted (this shard).
    public var imageCount: Int
    /// Rows written to `features.npy`.
    public var extracted: Int
    /// Failed images: relative path and reason.
    public var failures: [(path: String, reason: String)]
    /// Files the scanner skipped (hidden, not images).
    public var skipped: [SkippedFile]
    /// Feature length D.
    public var dimension: Int
    /// Seconds spent, summed over resumed segments (0 when up to date).
    public var wallSeconds: Double
    /// True when the output was already current and nothing was done.
    public var upToDate: Bool
    /// Images recovered from an interrupted run.
    public var resumedImages: Int
    /// True when there were images and none could be extracted.
    public var allFailed: Bool { imageCount > 0 && extracted == 0 }
}

/// Turns a folder of images into a ``FeatureStore``.
///
/// Pipeline: `decoderThreads` threads claim images in list order, decode and preprocess them
/// straight into a ring of `decoderThreads + 2` batch buffers; the calling thread runs the
/// backbone on each completed batch in order and appends the rows to a journaled partial file.
/// Memory is O(ring x batch x 3·C²) plus O(N) for the file list, independent of image sizes
/// summed over the folder; the feature matrix is never held in memory (the final `features.npy`
/// is streamed from the partial rows file).
public final class FeatureExtractor {
    /// Version string written to `meta.json`.
    public static let toolVersion = "0.1.0"

    /// The network (or baseline) producing features.
    public let backbone: FeatureBackbone
    /// Run settings.
    public var options: ExtractionOptions

    /// Creates an extractor.
    public init(backbone: FeatureBackbone, options: ExtractionOptions = ExtractionOptions()) {
        self.backbone = backbone
        self.options = options
    }

    /// `features/<dataset name>/<model>-<cut or layer>/` under `base` (default: the current
    /// directory), plus `shard-<i>-of-<n>/` for a shard.
    public static func defaultOutputDirectory(dataset: URL, identity: [String: String], shard: ShardSpec?,
                                              base: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath)) -> URL {
        let model = identity["model"] ?? "model"
        let where_ = identity["cut"].map { "cut\($0)" } ?? identity["layer"] ?? "full"
        var url = base.appendingPathComponent("features").appendingPathComponent(dataset.standardizedFileURL.lastPathComponent)
            .appendingPathComponent("\(model)-\(where_)")
        if let s = shard { url.appendPathComponent("shard-\(s.index)-of-\(s.count)") }
        return url
    }

    /// Resolves symlinks of the longest existing prefix so `/tmp` vs `/private/tmp`-style aliases compare equal.
    static func canonicalPath(_ url: URL) -> String {
        var existing = url.standardizedFileURL
        var tail: [String] = []
        while !FileManager.default.fileExists(atPath: existing.path) && existing.path != "/" {
            tail.insert(existing.lastPathComponent, at: 0)
            existing.deleteLastPathComponent()
        }
        var p = existing.resolvingSymlinksInPath().path
        for t in tail { p += (p.hasSuffix("/") ? "" : "/") + t }
        return p
    }

    /// Checks that `out` is not `dataset` itself or inside it.
    public static func validateOutput(_ out: URL, dataset: URL) throws {
        let o = canonicalPath(out), d = canonicalPath(dataset)
        if o == d || o.hasPrefix(d.hasSuffix("/") ? d : d + "/") {
            throw PipelineError.invalidOutput(path: out.path, reason: "is inside the dataset \(dataset.path); choose --out outside it so features are never mistaken for images")
        }
    }

    /// Decode options the extractor uses for `preset` (fast or exact).
    func decodeOptions() -> DecodeOptions {
        guard options.fastDecode else { return DecodeOptions(reducedDCTMinimumShorterSide: nil) }
        // The decoder may shrink in the DCT as long as the resize step still only downsamples.
        return DecodeOptions(reducedDCTMinimumShorterSide: backbone.preset.resizeShorter)
    }

    /// Extracts features of every image under `dataset` into `out` (default:
    /// ``defaultOutputDirectory(dataset:identity:shard:base:)``).
    ///
    /// Returns at once when `out` already holds a store for exactly these files, backbone and
    /// options. With `options.resume`, continues a partial run left in `out`.
    /// - Throws: ``PipelineError`` for unusable inputs/outputs, I/O failures or a backbone error.
    ///   Individual images that fail to decode are not errors: they are recorded and skipped.
    @discardableResult
    public func extract(dataset: URL, to out: URL? = nil) throws -> ExtractionResult {
        guard options.batchSize >= 1 else { throw PipelineError.invalidArgument("batch size must be at least 1") }
        guard options.decoderThreads >= 1 else { throw PipelineError.invalidArgument("decoder threads must be at least 1") }
        let scan = try DatasetScanner.scan(dataset)
        guard !scan.entries.isEmpty else {
            throw PipelineError.invalidDataset(path: dataset.path, reason: "no images found (\(scan.skipped.count) files skipped); expected DIR/<class>/*.jpg, DIR/train|val|test/<class>/*.jpg or images directly in DIR")
        }
        let outURL = (out ?? FeatureExtractor.defaultOutputDirectory(dataset: dataset, identity: backbone.identity, shard: options.shard)).standardizedFileURL
        try FeatureExtractor.validateOutput(outURL, dataset: scan.root)

        let range = options.shard?.range(total: scan.entries.count, batchSize: options.batchSize) ?? 0..<scan.entries.count
        let entries = Array(scan.entries[range])
        let presetJSON: String = {
            let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
            return (try? enc.encode(backbone.preset)).map { SHA256.hex($0) } ?? backbone.preset.name
        }()
        let desc = StoreDescription(identity: backbone.identity, presetName: backbone.preset.name, presetFingerprint: presetJSON,
                                    dimension: backbone.featureDimension, decodeMode: options.fastDecode ? "fast" : "exact",
                                    layout: scan.layout, classes: scan.classes, skipped: scan.skipped,
                                    listFingerprint: scan.listFingerprint, shard: options.shard,
                                    shardRange: options.shard == nil ? nil : range)
        let fingerprint = desc.fingerprint

        if let meta = try? FeatureStore.readMeta(outURL.appendingPathComponent("meta.json")), meta["fingerprint"] == fingerprint,
           ["features.npy", "labels.npy", "index.csv", "classes.json"].allSatisfy({
               FileManager.default.fileExists(atPath: outURL.appendingPathComponent($0).path) }) {
            return try currentResult(outURL, scan: scan, meta: meta)
        }

        let D = backbone.featureDimension
        var partial: PartialRun? = nil
        if options.resume { partial = try PartialRun.open(in: outURL, fingerprint: fingerprint, dimension: D) }
        let resumed = partial?.imagesDone ?? 0
        let run = try partial ?? PartialRun.create(in: outURL, fingerprint: fingerprint, dimension: D, batchSize: options.batchSize)
        defer { run.close() }

        let started = Date()
        let priorSeconds = run.seconds
        try runPipeline(entries: entries, globalStart: range.lowerBound, root: scan.root, run: run, started: started)

        var failureByIndex: [Int: String] = [:]
        for (i, r) in run.failures { failureByIndex[i] = r }
        let records = entries.enumerated().map { i, e in
            IndexRecord(row: nil, path: e.path, split: e.split, label: e.label, failure: failureByIndex[i])
        }
        let wall = priorSeconds + Date().timeIntervalSince(started)
        let rows = try RowSource(segments: [.init(path: run.rowsPath, offset: 0, rows: run.rowsDone)], dimension: D)
        let written = try desc.writeStore(to: outURL, records: records, rows: rows, wallSeconds: wall)
        run.remove()
        let fails = written.compactMap { r in r.failure.map { (path: r.path, reason: $0) } }
        return ExtractionResult(outputDirectory: outURL, imageCount: written.count, extracted: written.count - fails.count,
                                failures: fails, skipped: scan.skipped, dimension: D, wallSeconds: wall,
                                upToDate: false, resumedImages: resumed)
    }

    private func currentResult(_ out: URL, scan: DatasetScan, meta: [String: String]) throws -> ExtractionResult {
        let csv = (try? String(contentsOf: out.appendingPathComponent("index.csv"), encoding: .utf8)) ?? ""
        let records = try FeatureStore.parseIndex(csv, path: out.appendingPathComponent("index.csv").path)
        let fails = records.compactMap { r in r.failure.map { (path: r.path, reason: $0) } }
        return ExtractionResult(outputDirectory: out, imageCount: records.count, extracted: records.count - fails.count,
                                failures: fails, skipped: scan.skipped, dimension: backbone.featureDimension,
                                wallSeconds: 0, upToDate: true, resumedImages: 0)
    }

    /// Shared state between decoder threads and the backbone stage, guarded by `cond`.
    private final class Ring: @unchecked Sendable {
        let cond = NSCondition()
        let slots: Int
        let imageFloats: Int
        let batchSize: Int
        let buffer: UnsafeMutablePointer<Float>
        var slotBatch: [Int]
        var slotFilled: [Int]
        var slotFailure: [[String?]]
        var nextImage = 0
        var aborted = false

        init(slots: Int, batchSize: Int, imageFloats: Int) {
            self.slots = slots; self.batchSize = batchSize; self.imageFloats = imageFloats
            buffer = .allocate(capacity: slots * batchSize * imageFloats)
            slotBatch = Array(0..<slots)
            slotFilled = Array(repeating: 0, count: slots)
            slotFailure = Array(repeating: Array(repeating: nil, count: batchSize), count: slots)
        }
        deinit { buffer.deallocate() }
        func image(slot: Int, position: Int) -> UnsafeMutablePointer<Float> { buffer + (slot * batchSize + position) * imageFloats }
    }

    private func runPipeline(entries: [DatasetEntry], globalStart: Int, root: URL, run: PartialRun, started: Date) throws {
        let total = entries.count
        let B = run.batchSize
        // Batches are aligned to multiples of B in the global list, so shards and resumed runs cut
        // batches at the same places as far as their ranges allow.
        var batches: [Range<Int>] = []
        var i = run.imagesDone
        while i < total {
            let g = globalStart + i
            let end = min(total, (g / B + 1) * B - globalStart)
            batches.append(i..<end); i = end
        }
        let firstDone = run.imagesDone
        let priorSeconds = run.seconds
        var failuresSoFar = run.failures.count
        report(done: firstDone, total: total, failures: failuresSoFar, processed: 0, started: started)
        guard !batches.isEmpty else { return }

        let imageFloats = Preprocessor(preset: backbone.preset).outputCount
        let ring = Ring(slots: options.decoderThreads + 2, batchSize: B, imageFloats: imageFloats)
        let D = backbone.featureDimension
        let rowsOut = UnsafeMutablePointer<Float>.allocate(capacity: B * D)
        defer { rowsOut.deallocate() }
        // Map a todo-list image to its batch: batches are contiguous, so keep a start table.
        let batchStarts = batches.map(\.lowerBound)
        let decodeOpts = decodeOptions()
        let preset = backbone.preset
        let finished = DispatchGroup()

        // Everything the decoder threads read, immutable after this point; the ring is lock-guarded.
        final class DecodeContext: @unchecked Sendable {
            let ring: Ring, entries: [DatasetEntry], batches: [Range<Int>], batchStarts: [Int]
            let root: URL, decodeOpts: DecodeOptions, preset: PreprocessPreset, total: Int, firstDone: Int
            init(ring: Ring, entries: [DatasetEntry], batches: [Range<Int>], batchStarts: [Int], root: URL,
                 decodeOpts: DecodeOptions, preset: PreprocessPreset, total: Int, firstDone: Int) {
                self.ring = ring; self.entries = entries; self.batches = batches; self.batchStarts = batchStarts; self.root = root
                self.decodeOpts = decodeOpts; self.preset = preset; self.total = total; self.firstDone = firstDone
            }
        }
        let ctx = DecodeContext(ring: ring, entries: entries, batches: batches, batchStarts: batchStarts, root: root,
                                decodeOpts: decodeOpts, preset: preset, total: total, firstDone: firstDone)
        for _ in 0..<options.decoderThreads {
            finished.enter()
            let t = Thread {
                defer { finished.leave() }
                let ring = ctx.ring, entries = ctx.entries, batches = ctx.batches, batchStarts = ctx.batchStarts
                let root = ctx.root, decodeOpts = ctx.decodeOpts, total = ctx.total, firstDone = ctx.firstDone
                let pre = Preprocessor(preset: ctx.preset)
                var k = 0
                while true {
                    ring.cond.lock()
                    if ring.aborted || firstDone + ring.nextImage >= total { ring.cond.unlock(); return }
                    let idx = firstDone + ring.nextImage
                    ring.nextImage += 1
                    while k + 1 < batchStarts.count && batchStarts[k + 1] <= idx { k += 1 }
                    let slot = k % ring.slots
                    while ring.slotBatch[slot] != k && !ring.aborted { ring.cond.wait() }
                    ring.cond.unlock()
                    if ring.aborted { return }
                    let pos = idx - batches[k].lowerBound
                    var failure: String? = nil
                    let url = root.appendingPathComponent(entries[idx].path)
                    do {
                        let img = try ImageDecoder.decode(contentsOf: url, options: decodeOpts)
                        // Preprocessing has no error path; never hand it a degenerate image.
                        if img.width < 1 || img.height < 1 || img.pixels.count < img.width * img.height * 3 {
                            failure = "decoded image is empty (\(img.width)x\(img.height))"
                        } else {
                            pre.write(img, into: ring.image(slot: slot, position: pos))
                        }
                    } catch {
                        failure = FeatureExtractor.reason(error, path: url.path)
                    }
                    ring.cond.lock()
                    ring.slotFailure[slot][pos] = failure
                    ring.slotFilled[slot] += 1
                    if ring.slotFilled[slot] == batches[k].count { ring.cond.broadcast() }
                    ring.cond.unlock()
                }
            }
            t.stackSize = 8 << 20
            t.start()
        }

        var processed = 0
        var pipelineError: Error? = nil
        for (k, batch) in batches.enumerated() {
            let slot = k % ring.slots
            ring.cond.lock()
            while ring.slotFilled[slot] < batch.count { ring.cond.wait() }
            let failuresHere = ring.slotFailure[slot]
            ring.cond.unlock()
            // Compact the decoded images to the front of the slot so the backbone sees a dense batch.
            var okCount = 0
            var batchFailures: [(Int, String)] = []
            for pos in 0..<batch.count {
                if let f = failuresHere[pos] { batchFailures.append((batch.lowerBound + pos, f)); continue }
                if okCount != pos {
                    ring.image(slot: slot, position: okCount).update(from: ring.image(slot: slot, position: pos), count: imageFloats)
                }
                okCount += 1
            }
            do {
                if okCount > 0 { try backbone.features(ring.image(slot: slot, position: 0), batch: okCount, into: rowsOut) }
                try run.commitBatch(rows: rowsOut, rowCount: okCount, imageCount: batch.count, batchFailures: batchFailures,
                                    seconds: priorSeconds + Date().timeIntervalSince(started))
            } catch {
                pipelineError = error is PipelineError ? error : PipelineError.backbone(reason: "\(error)")
            }
            ring.cond.lock()
            if pipelineError != nil { ring.aborted = true } else {
                ring.slotBatch[slot] = k + ring.slots
                ring.slotFilled[slot] = 0
                for p in 0..<B { ring.slotFailure[slot][p] = nil }
            }
            ring.cond.broadcast()
            ring.cond.unlock()
            if pipelineError != nil { break }
            processed += batch.count
            failuresSoFar += batchFailures.count
            report(done: firstDone + processed, total: total, failures: failuresSoFar, processed: processed, started: started)
            if options.batchDelaySeconds > 0 { Thread.sleep(forTimeInterval: options.batchDelaySeconds) }
        }
        finished.wait()
        if let e = pipelineError { throw e }
    }

    private func report(done: Int, total: Int, failures: Int, processed: Int, started: Date) {
        guard let cb = options.progress else { return }
        let elapsed = Date().timeIntervalSince(started)
        let rate = elapsed > 0 ? Double(processed) / elapsed : 0
        let eta: Double? = processed > 0 && rate > 0 ? Double(total - done) / rate : nil
        cb(ExtractionProgress(done: done, total: total, failures: failures, elapsedSeconds: elapsed, imagesPerSecond: rate, etaSeconds: eta))
    }

    /// The error's message without a leading "<path>: " (index.csv already names the file).
    static func reason(_ error: Error, path: String) -> String {
        var text = "\(error)"
        if text.hasPrefix(path + ": ") { text.removeFirst(path.count + 2) }
        return text.replacingOccurrences(of: "\n", with: " ")
    }
}
