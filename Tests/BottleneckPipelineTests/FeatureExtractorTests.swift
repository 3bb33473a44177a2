import Foundation
import XCTest
import BottleneckCore
import BottleneckImage
@testable import BottleneckPipeline

/// A backbone that delegates to the raw-pixel baseline but throws on call number `failOnCall`,
/// leaving a partial run behind exactly as a crash between batches would. `concurrent` makes the
/// extractor call it from several threads (slices of batches) instead of one.
final class FailingBackbone: FeatureBackbone, @unchecked Sendable {
    let inner = RawPixelBackbone()
    let failOnCall: Int
    let concurrent: Bool
    private let lock = NSLock()
    private var calls = 0
    init(failOnCall: Int, concurrent: Bool = false) { self.failOnCall = failOnCall; self.concurrent = concurrent }
    var supportsConcurrentSlices: Bool { concurrent }
    var featureDimension: Int { inner.featureDimension }
    var preset: PreprocessPreset { inner.preset }
    var identity: [String: String] { inner.identity }
    struct Crash: Error {}
    func features(_ input: UnsafePointer<Float>, batch: Int, into output: UnsafeMutablePointer<Float>) throws {
        lock.lock(); calls += 1; let call = calls; lock.unlock()
        if call == failOnCall { throw Crash() }
        try inner.features(input, batch: batch, into: output)
    }
}

final class FeatureExtractorTests: XCTestCase {
    func extractor(batch: Int = 4, threads: Int = 1, shard: ShardSpec? = nil, resume: Bool = false,
                   backbone: FeatureBackbone = RawPixelBackbone()) -> FeatureExtractor {
        var o = ExtractionOptions()
        o.batchSize = batch; o.decoderThreads = threads; o.shard = shard; o.resume = resume
        return FeatureExtractor(backbone: backbone, options: o)
    }

    /// Features of one image computed alone: decode, preprocess, backbone with batch 1.
    func featuresAlone(_ url: URL, backbone: RawPixelBackbone) throws -> [Float] {
        let img = try ImageDecoder.decode(contentsOf: url, options: DecodeOptions(reducedDCTMinimumShorterSide: nil))
        let pre = Preprocessor(preset: backbone.preset)
        var input = [Float](repeating: 0, count: pre.outputCount)
        input.withUnsafeMutableBufferPointer { pre.write(img, into: $0.baseAddress!) }
        var out = [Float](repeating: 0, count: backbone.featureDimension)
        try input.withUnsafeBufferPointer { i in try out.withUnsafeMutableBufferPointer { try backbone.features(i.baseAddress!, batch: 1, into: $0.baseAddress!) } }
        return out
    }

    func testRawPixelBackboneAveragesCells() throws {
        let b = RawPixelBackbone(preset: .imagenet, grid: 2)
        let c = b.inputSide
        var input = [Float](repeating: 0, count: 3 * c * c)
        // Channel 1: left half 1, right half 3 -> cells (1, 3, 1, 3).
        for y in 0..<c { for x in 0..<c { input[c * c + y * c + x] = x < c / 2 ? 1 : 3 } }
        var out = [Float](repeating: -1, count: 12)
        try b.features(input, batch: 1, into: &out)
        XCTAssertEqual(Array(out[0..<4]), [0, 0, 0, 0])
        XCTAssertEqual(Array(out[4..<8]), [1, 3, 1, 3])
        XCTAssertEqual(b.featureDimension, 12)
        XCTAssertEqual(RawPixelBackbone().featureDimension, 768)
    }

    func testCorruptFilesAreReportedAndGoodOnesExtracted() throws {
        let root = try TestData.tempDir("corrupt")
        let out = try TestData.tempDir("corrupt-out").appendingPathComponent("store")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: out.deletingLastPathComponent()) }
        try TestData.makeClassTree(root, classes: ["alpha", "beta", "gamma"], perClass: 8)
        var rng = SplitMix64(seed: 42)
        let random = Data((0..<3000).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
        let goodPPM = try Data(contentsOf: root.appendingPathComponent("alpha/img_000.ppm"))
        let corrupt: [(String, Data)] = [
            ("alpha/random.jpg", random),
            ("alpha/empty.png", Data()),
            ("alpha/text.jpeg", Data("this is not a picture\n".utf8)),
            ("beta/truncated.ppm", goodPPM.prefix(40)),
            ("beta/jpeg_header_only.jpg", Data([0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10]) + random.prefix(200)),
            ("beta/png_sig_garbage.png", Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) + random.prefix(100)),
            ("beta/anim.gif", Data("GIF89a".utf8) + random.prefix(50)),
            ("gamma/bad_header.ppm", Data("P6\nxx yy\n255\n".utf8)),
            ("gamma/zero.ppm", Data("P6\n0 0\n255\n".utf8)),
            ("gamma/random_noext", Data([0xFF, 0xD8, 0xFF]) + random.suffix(500)),
            ("gamma/bmp.bmp", Data("BM".utf8) + random.prefix(60)),
            ("gamma/webp.webp", Data("RIFF".utf8) + Data([0, 0, 0, 0]) + Data("WEBP".utf8) + random.prefix(30)),
        ]
        for (p, d) in corrupt { try d.write(to: root.appendingPathComponent(p)) }

        let result = try extractor(batch: 5, threads: 2).extract(dataset: root, to: out)
        XCTAssertEqual(result.imageCount, 36)
        XCTAssertEqual(result.extracted, 24)
        XCTAssertFalse(result.allFailed)
        XCTAssertEqual(Set(result.failures.map(\.path)), Set(corrupt.map(\.0)))
        for f in result.failures { XCTAssertFalse(f.reason.isEmpty, f.path) }

        let store = try FeatureStore.load(from: out)
        XCTAssertEqual(store.records.count, 36)
        for r in store.records {
            let isCorrupt = corrupt.contains { $0.0 == r.path }
            XCTAssertEqual(r.failure != nil, isCorrupt, r.path)
            XCTAssertEqual(r.row == nil, isCorrupt, r.path)
        }
        // Every good image's row equals the image extracted alone, in index.csv order, with its label.
        let backbone = RawPixelBackbone()
        for r in store.records {
            guard let row = r.row else { continue }
            let alone = try featuresAlone(root.appendingPathComponent(r.path), backbone: backbone)
            XCTAssertEqual(Array(store.features[row * 768..<(row + 1) * 768]), alone, r.path)
            XCTAssertEqual(store.classes[store.labels[row]], r.label)
        }
        let csv = try String(contentsOf: out.appendingPathComponent("index.csv"), encoding: .utf8)
        XCTAssertTrue(csv.hasPrefix("row,path,split,label,status\n"))
        XCTAssertTrue(csv.contains(",alpha/empty.png,,alpha,error: "))
    }

    func testSplitStoreFilesAreConsistentAndNumpyShaped() throws {
        let root = try TestData.tempDir("splits")
        let out = try TestData.tempDir("splits-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: out) }
        try TestData.makeClassTree(root, prefix: "train", classes: ["ants", "bees"], perClass: 5)
        try TestData.makeClassTree(root, prefix: "val", classes: ["ants", "bees"], perClass: 3, seed: 77)
        try Data("junk".utf8).write(to: root.appendingPathComponent("train/ants/bad.jpg"))
        try Data("notes".utf8).write(to: root.appendingPathComponent("notes.md"))
        let result = try extractor(batch: 3).extract(dataset: root, to: out)
        XCTAssertEqual(result.extracted, 16)
        XCTAssertEqual(result.skipped.map(\.path), ["notes.md"])

        let features = try NumpyArray(contentsOf: out.appendingPathComponent("features.npy"))
        XCTAssertEqual(features.shape, [16, 768])
        XCTAssertEqual(features.dtype, .float32)
        let raw = try Data(contentsOf: out.appendingPathComponent("features.npy"))
        XCTAssertEqual(Array(raw.prefix(8)), [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])  // NumPy format 1.0
        XCTAssertEqual(try NumpyArray(contentsOf: out.appendingPathComponent("labels.npy")).dtype, .int64)
        XCTAssertEqual(try String(contentsOf: out.appendingPathComponent("classes.json"), encoding: .utf8), "[\"ants\", \"bees\"]\n")

        let store = try FeatureStore.load(from: out)
        XCTAssertEqual(store.splitNames, ["train", "val"])
        for name in ["train", "val"] {
            let s = try XCTUnwrap(store.split(name))
            let f = try NumpyArray(contentsOf: out.appendingPathComponent("features_\(name).npy"))
            let l = try NumpyArray(contentsOf: out.appendingPathComponent("labels_\(name).npy"))
            XCTAssertEqual(f.shape, [s.count, 768])
            XCTAssertEqual(f.floats, s.features)
            XCTAssertEqual(l.ints, s.labels)
            XCTAssertEqual(s.labels, s.paths.map { $0.contains("/ants/") ? 0 : 1 })
        }
        XCTAssertEqual(store.split("train")?.count, 10)
        let meta = store.meta
        XCTAssertEqual(meta["model"], "raw-pixels")
        XCTAssertEqual(meta["image_count"], "17")
        XCTAssertEqual(meta["failures"], "1")
        XCTAssertEqual(meta["preset"], PreprocessPreset.imagenet.name)
        XCTAssertNotNil(meta["wall_seconds"])
    }

    func testRerunWithNothingChangedIsUpToDateAndAChangeRedoesIt() throws {
        let root = try TestData.tempDir("uptodate")
        let out = try TestData.tempDir("uptodate-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: out) }
        try TestData.makeClassTree(root, classes: ["a", "b"], perClass: 4)
        let first = try extractor().extract(dataset: root, to: out)
        XCTAssertFalse(first.upToDate)
        let before = try TestData.storeFiles(out)
        let again = try extractor().extract(dataset: root, to: out)
        XCTAssertTrue(again.upToDate)
        XCTAssertEqual(again.extracted, 8)
        // A different batch size changes nothing in the output, so it is still current.
        XCTAssertTrue(try extractor(batch: 7).extract(dataset: root, to: out).upToDate)
        try TestData.writePPM(root.appendingPathComponent("b/new.ppm"), seed: 555)
        let redo = try extractor().extract(dataset: root, to: out)
        XCTAssertFalse(redo.upToDate)
        XCTAssertEqual(redo.extracted, 9)
        XCTAssertNotEqual(try TestData.storeFiles(out)["features.npy"], before["features.npy"])
    }

    func testOutputInsideDatasetIsRefused() throws {
        let root = try TestData.tempDir("inside")
        defer { try? FileManager.default.removeItem(at: root) }
        try TestData.makeClassTree(root, classes: ["a"], perClass: 1)
        XCTAssertThrowsError(try extractor().extract(dataset: root, to: root.appendingPathComponent("a/feats"))) { e in
            guard case PipelineError.invalidOutput = e else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try extractor().extract(dataset: root, to: root))
    }

    func testDefaultOutputDirectory() throws {
        let base = URL(fileURLWithPath: "/work/x")
        let d = FeatureExtractor.defaultOutputDirectory(dataset: URL(fileURLWithPath: "/data/flowers/"),
                                                        identity: ["model": "resnet50", "cut": "1"], shard: nil, base: base)
        XCTAssertEqual(d.path, "/work/x/features/flowers/resnet50-cut1")
        let s = FeatureExtractor.defaultOutputDirectory(dataset: URL(fileURLWithPath: "/data/flowers"),
                                                        identity: RawPixelBackbone().identity, shard: try ShardSpec(parsing: "2/4"), base: base)
        XCTAssertEqual(s.path, "/work/x/features/flowers/raw-pixels-16x16/shard-2-of-4")
    }

    func testShardsMergedEqualASingleRun() throws {
        let root = try TestData.tempDir("shards")
        let work = try TestData.tempDir("shards-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: work) }
        try TestData.makeClassTree(root, prefix: "train", classes: ["x", "y", "z"], perClass: 6)
        try TestData.makeClassTree(root, prefix: "val", classes: ["x", "y", "z"], perClass: 2, seed: 5)
        try Data("bad".utf8).write(to: root.appendingPathComponent("train/y/corrupt.jpg"))
        let single = work.appendingPathComponent("single")
        try extractor(batch: 4).extract(dataset: root, to: single)
        var shardDirs: [URL] = []
        for i in [2, 0, 1] {  // order of running does not matter
            let d = work.appendingPathComponent("shard\(i)")
            let r = try extractor(batch: 4, shard: try ShardSpec(index: i, count: 3)).extract(dataset: root, to: d)
            XCTAssertEqual(r.imageCount, try ShardSpec(index: i, count: 3).range(total: 25, batchSize: 4).count)
            shardDirs.append(d)
        }
        let merged = work.appendingPathComponent("merged")
        XCTAssertEqual(try ShardMerger.merge(shardDirs, into: merged), 25)
        XCTAssertEqual(try TestData.storeFiles(merged), try TestData.storeFiles(single))
        XCTAssertEqual(try TestData.metaWithoutTiming(merged), try TestData.metaWithoutTiming(single))
        // A merged store counts as current for the single-run command.
        XCTAssertTrue(try extractor().extract(dataset: root, to: merged).upToDate)
        // Missing shards are refused.
        XCTAssertThrowsError(try ShardMerger.merge(Array(shardDirs.prefix(2)), into: work.appendingPathComponent("bad"))) { e in
            guard case PipelineError.incompatibleShards = e else { return XCTFail("\(e)") }
        }
    }

    /// Shard ranges are cut at batch boundaries: shards extracted with different `--batch` are refused
    /// by name (meta.json records `batch`), even where their ranges happen to line up.
    func testShardsWithDifferentBatchSizesAreRefused() throws {
        let root = try TestData.tempDir("shards-batch")
        let work = try TestData.tempDir("shards-batch-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: work) }
        try TestData.makeClassTree(root, classes: ["x", "y"], perClass: 8)
        var dirs: [URL] = []
        for (i, batch) in [(0, 4), (1, 8)] {
            let d = work.appendingPathComponent("shard\(i)")
            try extractor(batch: batch, shard: try ShardSpec(index: i, count: 2)).extract(dataset: root, to: d)
            dirs.append(d)
        }
        XCTAssertThrowsError(try ShardMerger.merge(dirs, into: work.appendingPathComponent("merged"))) { e in
            guard case PipelineError.incompatibleShards(_, let reason) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(reason.contains("'batch'"), reason)
        }
    }

    func testShardRangesCoverTheListInWholeBatches() throws {
        for total in [0, 1, 7, 25, 100] {
            for n in 1...5 {
                for b in [1, 3, 4, 16] {
                    let ranges = try (0..<n).map { try ShardSpec(index: $0, count: n).range(total: total, batchSize: b) }
                    XCTAssertEqual(ranges.first?.lowerBound, 0)
                    XCTAssertEqual(ranges.last?.upperBound, total)
                    for (a, c) in zip(ranges, ranges.dropFirst()) { XCTAssertEqual(a.upperBound, c.lowerBound) }
                    for r in ranges where r.upperBound < total { XCTAssertEqual(r.upperBound % b, 0, "total \(total) n \(n) b \(b)") }
                }
            }
        }
        XCTAssertEqual(try ShardSpec(index: 1, count: 3).range(total: 25, batchSize: 4), 8..<16)
        XCTAssertThrowsError(try ShardSpec(parsing: "3/3"))
        XCTAssertThrowsError(try ShardSpec(parsing: "1-3"))
    }

    func testResumeAfterACrashRedoesOnlyTheTornBatchAndIsByteIdentical() throws {
        let root = try TestData.tempDir("resume")
        let work = try TestData.tempDir("resume-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: work) }
        try TestData.makeClassTree(root, classes: ["p", "q"], perClass: 11)
        try Data("nope".utf8).write(to: root.appendingPathComponent("p/zz_bad.png"))
        let clean = work.appendingPathComponent("clean")
        try extractor(batch: 3).extract(dataset: root, to: clean)

        // The crash comes from a backbone called one batch at a time, then from one called by two
        // threads on slices of batches (the clean and resumed runs use the raw-pixel backbone, which
        // runs slices too: the modes must agree byte for byte).
        for concurrent in [false, true] {
            let out = work.appendingPathComponent("crashed-\(concurrent)")
            let failing = FailingBackbone(failOnCall: 4, concurrent: concurrent)
            XCTAssertThrowsError(try extractor(batch: 3, backbone: failing).extract(dataset: root, to: out))
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("meta.json").path))
            // Simulate a crash mid-write of the next batch: stray rows bytes and a torn journal line.
            let partial = out.appendingPathComponent(".partial")
            let rowsFH = try FileHandle(forWritingTo: partial.appendingPathComponent("rows.f32"))
            rowsFH.seekToEndOfFile(); rowsFH.write(Data(repeating: 0xAB, count: 1000)); try rowsFH.close()
            let jFH = try FileHandle(forWritingTo: partial.appendingPathComponent("journal.jsonl"))
            jFH.seekToEndOfFile(); jFH.write(Data("{\"done\": 12, \"rows\"".utf8)); try jFH.close()

            let resumed = try extractor(batch: 3, resume: true).extract(dataset: root, to: out)
            if concurrent {
                // Two slices per batch, started in any order across batches: calls 1-4 cannot
                // complete two batches, and the first may or may not be committed before the error.
                XCTAssertTrue([0, 3].contains(resumed.resumedImages), "\(resumed.resumedImages)")
            } else {
                XCTAssertEqual(resumed.resumedImages, 9)  // three batches of 3 were committed before the crash
            }
            XCTAssertEqual(try TestData.storeFiles(out), try TestData.storeFiles(clean))
            XCTAssertEqual(try TestData.metaWithoutTiming(out), try TestData.metaWithoutTiming(clean))
            XCTAssertFalse(FileManager.default.fileExists(atPath: partial.path))
        }
    }

    func testResumeRefusesAPartialRunFromOtherInputs() throws {
        let root = try TestData.tempDir("resume-other")
        let out = try TestData.tempDir("resume-other-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: out) }
        try TestData.makeClassTree(root, classes: ["p"], perClass: 6)
        XCTAssertThrowsError(try extractor(batch: 2, backbone: FailingBackbone(failOnCall: 2)).extract(dataset: root, to: out))
        try TestData.writePPM(root.appendingPathComponent("p/extra.ppm"), seed: 9)
        XCTAssertThrowsError(try extractor(batch: 2, resume: true).extract(dataset: root, to: out)) { e in
            guard case PipelineError.cannotResume = e else { return XCTFail("\(e)") }
        }
        // Without --resume it starts over and succeeds.
        XCTAssertEqual(try extractor(batch: 2).extract(dataset: root, to: out).extracted, 7)
    }

    func testProgressIsReportedPerBatch() throws {
        let root = try TestData.tempDir("progress")
        let out = try TestData.tempDir("progress-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: out) }
        try TestData.makeClassTree(root, classes: ["a"], perClass: 10)
        final class Box: @unchecked Sendable { var seen: [Int] = [] }
        let box = Box()
        var o = ExtractionOptions(); o.batchSize = 4; o.decoderThreads = 2
        o.progress = { box.seen.append($0.done) }
        try FeatureExtractor(backbone: RawPixelBackbone(), options: o).extract(dataset: root, to: out)
        XCTAssertEqual(box.seen, [0, 4, 8, 10])
    }
}
