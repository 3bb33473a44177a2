import Foundation
import BottleneckCore
import BottleneckImage
import BottleneckTensor

/// Settings for one extraction run.
public struct ExtractionOptions: Sendable {
    /// Images per backbone call (and per journaled batch), in ``batchSizeRange``. Default 16.
    public var batchSize: Int = 16
    /// Accepted ``batchSize`` values: larger batches stop paying off long before this, and the
    /// batch ring (see ``ringBudgetBytes``) and network activations grow with it (1024 images at
    /// 224 px are 600 MiB of input alone).
    public static let batchSizeRange = 1...1024
    /// Accepted ``decoderThreads`` values: one thread per core is the useful maximum; this bound only
    /// keeps a typo from starting thousands of threads.
    public static let decoderThreadsRange = 1...1024
    /// Most bytes the ring of preprocessed batches may take: `(decoderThreads + 2) x batchSize` images
    /// plus their feature rows. 4 GiB holds e.g. 64 threads x batch 256 at 224 px; beyond it the run is
    /// refused before allocating, with the numbers, instead of failing an allocation part-way.
    public var ringBudgetBytes: Int = 4 << 30
    /// Decoder threads feeding the backbone; default: all cores but one (at least 1). With a backbone
    /// that supports concurrent slices (EfficientNet-Lite, raw pixels) the pipeline instead runs
    /// this many plus one workers that each both decode and run the network (see ``FeatureExtractor``).
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
/// Pipeline: threads claim images in list order, decode and preprocess them straight into a ring
/// of `decoderThreads + 2` batch buffers, and run the backbone on each completed batch; the calling
/// thread appends finished batches' rows, in order, to a journaled partial file. With a backbone
/// that supports concurrent slices, `decoderThreads + 1` threads each do both jobs, with
/// single-threaded kernels (no core runs two threads); otherwise `decoderThreads` threads decode and
/// one more runs the backbone, which uses the kernel threads inside.
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

    /// Bytes of the batch ring for the current options, refused when over ``ExtractionOptions/ringBudgetBytes``.
    /// - Throws: ``PipelineError/invalidArgument(_:)`` naming the batch size, threads and budget.
    func ringBytes() throws -> Int {
        let perImage = CheckedSize.add(Preprocessor(preset: backbone.preset).outputCount, backbone.featureDimension)
            .flatMap { CheckedSize.multiply($0, MemoryLayout<Float>.size) }
        let slots = CheckedSize.add(options.decoderThreads, 2)
        guard let perImage, let slots, let images = CheckedSize.multiply(slots, options.batchSize),
              let total = CheckedSize.multiply(images, perImage), total <= options.ringBudgetBytes else {
            throw PipelineError.invalidArgument(
                "batch \(options.batchSize) with \(options.decoderThreads) decoder threads needs more than the "
                + "\(options.ringBudgetBytes >> 20) MiB batch-buffer budget ((threads + 2) x batch images in flight); use a smaller --batch or --threads")
        }
        return total
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
        guard ExtractionOptions.batchSizeRange.contains(options.batchSize) else {
            throw PipelineError.invalidArgument("batch size \(options.batchSize) is out of range \(ExtractionOptions.batchSizeRange)")
        }
        guard ExtractionOptions.decoderThreadsRange.contains(options.decoderThreads) else {
            throw PipelineError.invalidArgument("decoder threads \(options.decoderThreads) is out of range \(ExtractionOptions.decoderThreadsRange)")
        }
        _ = try ringBytes()
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
                                    shardRange: options.shard == nil ? nil : range, batchSize: options.batchSize)
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
        let indexURL = out.appendingPathComponent("index.csv")
        let bytes: [UInt8]
        do { bytes = [UInt8](try Data(contentsOf: indexURL)) } catch {
            throw PipelineError.malformedStore(path: indexURL.path, reason: "unreadable: \(error.localizedDescription)")
        }
        let records = try FeatureStore.parseIndex(bytes, path: indexURL.path)
        let fails = records.compactMap { r in r.failure.map { (path: r.path, reason: $0) } }
        return ExtractionResult(outputDirectory: out, imageCount: records.count, extracted: records.count - fails.count,
                                failures: fails, skipped: scan.skipped, dimension: backbone.featureDimension,
                                wallSeconds: 0, upToDate: true, resumedImages: 0)
    }

    /// Work shared by the pipeline's threads, guarded by `cond`: a ring of batch slots that workers
    /// decode into, network slices of fully decoded batches waiting for a thread, and finished
    /// batches waiting to be committed in order. Batch `k` lives in slot `k % slots`.
    private final class Ring: @unchecked Sendable {
        let cond = NSCondition()
        let slots: Int
        let batchSize: Int
        let imageFloats: Int
        let dimension: Int
        /// `slots x batchSize` preprocessed images.
        let images: UnsafeMutablePointer<Float>
        /// `slots x batchSize` feature rows.
        let rows: UnsafeMutablePointer<Float>
        /// The batch each slot holds or will hold next.
        var slotBatch: [Int]
        /// Images of the slot's batch decoded (or failed) so far.
        var slotDecoded: [Int]
        /// Why the image at each position failed, or nil.
        var slotFailure: [[String?]]
        /// Images that decoded; once the whole batch is in they are compacted to the front.
        var slotRows: [Int]
        /// Network slices of the slot queued or running.
        var slotSlicesLeft: [Int]
        /// The slot's rows are complete and may be committed.
        var slotReady: [Bool]
        /// Network slices ready to run, oldest first.
        var queuedSlices: [(slot: Int, images: Range<Int>)] = []
        /// Batches whose slices have been queued (or that needed none).
        var batchesQueued = 0
        /// Next image to claim, counted from the first one not done before this run.
        var nextImage = 0
        /// The first error any thread hit; everyone stops.
        var failure: Error?

        init(slots: Int, batchSize: Int, imageFloats: Int, dimension: Int) {
            self.slots = slots; self.batchSize = batchSize; self.imageFloats = imageFloats; self.dimension = dimension
            images = .allocate(capacity: slots * batchSize * imageFloats)
            rows = .allocate(capacity: slots * batchSize * dimension)
            slotBatch = Array(0..<slots)
            slotDecoded = Array(repeating: 0, count: slots)
            slotFailure = Array(repeating: Array(repeating: nil, count: batchSize), count: slots)
            slotRows = Array(repeating: 0, count: slots)
            slotSlicesLeft = Array(repeating: 0, count: slots)
            slotReady = Array(repeating: false, count: slots)
        }
        deinit { images.deallocate(); rows.deallocate() }
        func image(slot: Int, position: Int) -> UnsafeMutablePointer<Float> { images + (slot * batchSize + position) * imageFloats }
        func row(slot: Int, position: Int) -> UnsafeMutablePointer<Float> { rows + (slot * batchSize + position) * dimension }

        /// Records the first error and wakes everyone so they stop.
        func fail(_ error: Error) {
            cond.lock()
            if failure == nil { failure = error is PipelineError ? error : PipelineError.backbone(reason: "\(error)") }
            cond.broadcast()
            cond.unlock()
        }
    }

    /// Everything the pipeline's threads read, immutable once they start.
    private final class PipelineContext: @unchecked Sendable {
        let ring: Ring
        let backbone: FeatureBackbone
        let entries: [DatasetEntry]
        let root: URL
        let decodeOptions: DecodeOptions
        /// The images still to do, cut into journaled batches (indices into `entries`).
        let batches: [Range<Int>]
        let batchStarts: [Int]
        /// Images done before this run.
        let firstDone: Int
        /// Network calls per batch: one per worker when the backbone runs concurrent slices, else 1.
        let slicesPerBatch: Int
        init(ring: Ring, backbone: FeatureBackbone, entries: [DatasetEntry], root: URL, decodeOptions: DecodeOptions,
             batches: [Range<Int>], firstDone: Int, slicesPerBatch: Int) {
            self.ring = ring; self.backbone = backbone; self.entries = entries; self.root = root; self.decodeOptions = decodeOptions
            self.batches = batches; batchStarts = batches.map(\.lowerBound); self.firstDone = firstDone
            self.slicesPerBatch = slicesPerBatch
        }
    }

    /// Runs the remaining batches and commits them to `run` in order.
    ///
    /// Threads: when the backbone supports concurrent slices, `decoderThreads + 1` workers each
    /// decode images and run network slices with single-threaded kernels, so every core does one
    /// thing at a time and no thread waits for another between layers. Otherwise `decoderThreads`
    /// workers decode while one more runs whole batches through the backbone, which uses the
    /// kernel threads inside. Either way the calling thread only commits finished batches (file
    /// writes and fsync) and reports progress.
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

        let concurrent = backbone.supportsConcurrentSlices
        let ring = Ring(slots: options.decoderThreads + 2, batchSize: B,
                        imageFloats: Preprocessor(preset: backbone.preset).outputCount, dimension: backbone.featureDimension)
        let ctx = PipelineContext(ring: ring, backbone: backbone, entries: entries, root: root, decodeOptions: decodeOptions(), batches: batches,
                                  firstDone: firstDone, slicesPerBatch: concurrent ? options.decoderThreads + 1 : 1)
        let finished = DispatchGroup()
        let roles: [(decodes: Bool, runsNetwork: Bool)] = concurrent
            ? Array(repeating: (true, true), count: options.decoderThreads + 1)
            : Array(repeating: (true, false), count: options.decoderThreads) + [(false, true)]
        for role in roles {
            finished.enter()
            let thread = Thread {
                defer { finished.leave() }
                let work = { FeatureExtractor.work(ctx, decodes: role.decodes, runsNetwork: role.runsNetwork) }
                if concurrent { TensorThreads.withSingleThreadedKernels(work) } else { work() }
            }
            thread.stackSize = 8 << 20
            thread.start()
        }

        var processed = 0
        for (k, batch) in batches.enumerated() {
            let slot = k % ring.slots
            ring.cond.lock()
            while !ring.slotReady[slot] && ring.failure == nil { ring.cond.wait() }
            // After another thread's error, batches finished before it are still committed, so a
            // resumed run redoes as little as possible.
            if !ring.slotReady[slot] { ring.cond.unlock(); break }
            let rowCount = ring.slotRows[slot]
            let batchFailures = (0..<batch.count).compactMap { p in ring.slotFailure[slot][p].map { (batch.lowerBound + p, $0) } }
            ring.cond.unlock()
            do {
                try run.commitBatch(rows: ring.row(slot: slot, position: 0), rowCount: rowCount, imageCount: batch.count,
                                    batchFailures: batchFailures, seconds: priorSeconds + Date().timeIntervalSince(started))
            } catch {
                ring.fail(error)
                break
            }
            ring.cond.lock()
            ring.slotBatch[slot] = k + ring.slots
            ring.slotDecoded[slot] = 0
            ring.slotReady[slot] = false
            for p in 0..<B { ring.slotFailure[slot][p] = nil }
            ring.cond.broadcast()
            ring.cond.unlock()
            processed += batch.count
            failuresSoFar += batchFailures.count
            report(done: firstDone + processed, total: total, failures: failuresSoFar, processed: processed, started: started)
            if options.batchDelaySeconds > 0 { Thread.sleep(forTimeInterval: options.batchDelaySeconds) }
        }
        finished.wait()
        if let e = ring.failure { throw e }
    }

    /// One pipeline thread: takes network slices (if `runsNetwork`, first, since they free slots)
    /// or the next image to decode (if `decodes` and its slot is free) until no work is left.
    private static func work(_ ctx: PipelineContext, decodes: Bool, runsNetwork: Bool) {
        enum Work { case decode(index: Int, batch: Int), slice(slot: Int, images: Range<Int>) }
        let ring = ctx.ring
        let pre = Preprocessor(preset: ctx.backbone.preset)
        let remaining = ctx.entries.count - ctx.firstDone
        var k = 0  // batch of the next image; images are claimed in order, so it only moves forward
        while true {
            var next: Work? = nil
            ring.cond.lock()
            while next == nil {
                if ring.failure != nil { ring.cond.unlock(); return }
                if runsNetwork, !ring.queuedSlices.isEmpty {
                    let s = ring.queuedSlices.removeFirst()
                    next = .slice(slot: s.slot, images: s.images)
                    break
                }
                let moreImages = ring.nextImage < remaining
                if decodes && moreImages {
                    let index = ctx.firstDone + ring.nextImage
                    while k + 1 < ctx.batchStarts.count && ctx.batchStarts[k + 1] <= index { k += 1 }
                    if ring.slotBatch[k % ring.slots] == k {
                        ring.nextImage += 1
                        next = .decode(index: index, batch: k)
                        break
                    }
                }
                let moreSlices = runsNetwork && ring.batchesQueued < ctx.batches.count
                if !moreSlices && !(decodes && moreImages) { ring.cond.unlock(); return }
                ring.cond.wait()
            }
            ring.cond.unlock()

            switch next! {
            case let .decode(index, batch):
                let slot = batch % ring.slots, position = index - ctx.batches[batch].lowerBound
                let failure = decode(ctx.entries[index], root: ctx.root, options: ctx.decodeOptions, with: pre,
                                     into: ring.image(slot: slot, position: position))
                ring.cond.lock()
                ring.slotFailure[slot][position] = failure
                ring.slotDecoded[slot] += 1
                let complete = ring.slotDecoded[slot] == ctx.batches[batch].count
                ring.cond.unlock()
                if complete { queueSlices(ctx, slot: slot, count: ctx.batches[batch].count) }
            case let .slice(slot, images):
                do {
                    try ctx.backbone.features(ring.image(slot: slot, position: images.lowerBound), batch: images.count,
                                              into: ring.row(slot: slot, position: images.lowerBound))
                } catch {
                    ring.fail(error)
                    return
                }
                ring.cond.lock()
                ring.slotSlicesLeft[slot] -= 1
                if ring.slotSlicesLeft[slot] == 0 { ring.slotReady[slot] = true; ring.cond.broadcast() }
                ring.cond.unlock()
            }
        }
    }

    /// Called by the thread that decoded a batch's last image: moves the decoded images to the
    /// front of the slot (the backbone sees a dense batch) and queues the network slices.
    private static func queueSlices(_ ctx: PipelineContext, slot: Int, count: Int) {
        let ring = ctx.ring
        // No other thread touches a slot between its last decode and its slices being queued.
        var decoded = 0
        for position in 0..<count where ring.slotFailure[slot][position] == nil {
            if decoded != position {
                ring.image(slot: slot, position: decoded).update(from: ring.image(slot: slot, position: position), count: ring.imageFloats)
            }
            decoded += 1
        }
        let slices = min(decoded, ctx.slicesPerBatch)
        ring.cond.lock()
        ring.slotRows[slot] = decoded
        ring.slotSlicesLeft[slot] = slices
        for s in 0..<slices { ring.queuedSlices.append((slot, s * decoded / slices ..< (s + 1) * decoded / slices)) }
        if slices == 0 { ring.slotReady[slot] = true }
        ring.batchesQueued += 1
        ring.cond.broadcast()
        ring.cond.unlock()
    }

    /// Decodes and preprocesses one image into `destination`; returns why it failed, or nil.
    /// An entry the scanner could not use fails with the scanner's reason. A name that is not valid
    /// UTF-8 is opened by its bytes and decoded through the open descriptor.
    private static func decode(_ entry: DatasetEntry, root: URL, options: DecodeOptions, with pre: Preprocessor,
                               into destination: UnsafeMutablePointer<Float>) -> String? {
        if let failure = entry.failure { return failure }
        var url = root.appendingPathComponent(entry.path)
        var descriptor: Int32 = -1
        defer { if descriptor >= 0 { close(descriptor) } }
        if let raw = entry.rawPath {
            let path = (Array(root.path.utf8) + [0x2F] + raw).map { CChar(bitPattern: $0) } + [0]
            descriptor = open(path, O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else { return "cannot open: \(String(cString: strerror(errno)))" }
            url = URL(fileURLWithPath: FeatureExtractor.descriptorPath(descriptor))
        }
        do {
            // The decode's memory stays reserved in the shared budget until the image is released
            // (after preprocessing), so decoder threads together never exceed the budget.
            let img = try ImageDecoder.decode(contentsOf: url, options: options.holdingMemoryUntilImageReleased)
            // Preprocessing has no error path; never hand it a degenerate image.
            if img.width < 1 || img.height < 1 || img.pixels.count < img.width * img.height * 3 {
                return "decoded image is empty (\(img.width)x\(img.height))"
            }
            pre.write(img, into: destination)
            return nil
        } catch {
            let text = FeatureExtractor.reason(error, path: url.path)
            return descriptor >= 0 ? text.replacingOccurrences(of: url.path, with: entry.path) : text
        }
    }

    /// A path that opens the same file as descriptor `fd` (Linux `/proc/self/fd`, BSD and macOS `/dev/fd`).
    static func descriptorPath(_ fd: Int32) -> String {
        #if os(Linux)
        return "/proc/self/fd/\(fd)"
        #else
        return "/dev/fd/\(fd)"
        #endif
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
