import Foundation
import XCTest
import BottleneckCore
import BottleneckTestSupport
@testable import BottleneckPipeline

/// Issue 27 findings 8-10: damaged feature stores are refused with errors naming the file, line or
/// row and the problem; nothing under a dataset folder is lost silently; no input crashes.
final class HostileInputTests: XCTestCase {
    private var scratch: [URL] = []
    override func tearDown() {
        for u in scratch { try? FileManager.default.removeItem(at: u) }
        scratch = []
    }
    private func temp(_ name: String) throws -> URL {
        let u = try TestData.tempDir(name)
        scratch.append(u)
        return u
    }

    /// Loads `store` written with `replacing` files and returns the refusal's text (fails when it loads).
    private func refusal(_ store: HostileStores.Store, replacing: [String: [UInt8]] = [:],
                         file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let dir = try temp("store")
        try store.write(to: dir, replacing: replacing)
        do {
            _ = try FeatureStore.load(from: dir)
            XCTFail("damaged store was accepted", file: file, line: line)
            return ""
        } catch let e as PipelineError {
            guard case .malformedStore = e else { XCTFail("unexpected \(e)", file: file, line: line); return "" }
            return e.description
        }
    }

    // MARK: finding 9 and 10: store consistency

    func testConsistentStoreLoads() throws {
        let dir = try temp("store-ok")
        try HostileStores.Store().write(to: dir)
        let s = try FeatureStore.load(from: dir)
        XCTAssertEqual(s.labels, [0, 1, 0, 1, 0, 1])
        XCTAssertEqual(s.records.count, 7)
        XCTAssertEqual(s.dimension, 4)
    }

    func testDuplicateIndexRowIsRefused() throws {
        var s = HostileStores.Store()
        // The line of row 1 again in place of row 2's: the line count still matches features.npy.
        s.indexLines[3] = s.indexLines[2]
        let text = try refusal(s)
        XCTAssertTrue(text.contains("index.csv: line 5: ") && text.contains("already listed on line 4"), text)
        s = HostileStores.Store()
        s.indexLines[3] = "1,b/other.ppm,,b,ok"  // same row number, different path
        XCTAssertTrue(try refusal(s).contains("line 5: row 1 is already listed on line 4"))
    }

    func testLabelDisagreeingWithLabelsNpyIsRefused() throws {
        var s = HostileStores.Store()
        s.labels[3] = 0  // index.csv says b (class 1)
        let text = try refusal(s)
        XCTAssertTrue(text.contains("index.csv") && text.contains("line 6: has label 'b' (class 1) but labels.npy row 3 holds 0"), text)
    }

    func testFloatLabelsAreRefused() throws {
        var s = HostileStores.Store()
        s.labelsFile = HostileStores.npy(dict: "{'descr': '<f8', 'fortran_order': False, 'shape': (6,), }",
                                         data: [0.0, 1.0, 0.5, 1.0, 0.0, 1.0].flatMap { v in (0..<8).map { UInt8(truncatingIfNeeded: v.bitPattern >> (8 * $0)) } })
        let text = try refusal(s)
        XCTAssertTrue(text.contains("labels.npy") && text.contains("<f8") && text.contains("integer"), text)
    }

    func testNegativeLabelsAreRefused() throws {
        var s = HostileStores.Store()
        s.labels[2] = -7
        let text = try refusal(s)
        XCTAssertTrue(text.contains("labels.npy") && text.contains("row 2 holds label -7"), text)
    }

    func testRowPastTheEndIsRefused() throws {
        var s = HostileStores.Store()
        s.indexLines[0] = "600,a/img_0.ppm,,a,ok"
        let text = try refusal(s)
        XCTAssertTrue(text.contains("line 2") && text.contains("row 600 is past the end of features.npy (6 rows)"), text)
    }

    func testNonNumericRowAndMissingRowAreRefused() throws {
        var s = HostileStores.Store()
        s.indexLines[0] = "zero,a/img_0.ppm,,a,ok"
        XCTAssertTrue(try refusal(s).contains("line 2: row 'zero' is not a row number"))
        s = HostileStores.Store()
        s.indexLines.remove(at: 0)
        XCTAssertTrue(try refusal(s).contains("features.npy row 0 is listed on no line"))
    }

    func testOverflowingNpyShapeIsRefused() throws {
        var s = HostileStores.Store()
        s.featuresFile = HostileStores.overflowingShapeNpy
        let text = try refusal(s)
        XCTAssertTrue(text.contains("features.npy") && text.contains("more elements than can be addressed"), text)
    }

    func testTruncationsAndFlipsOfStoreFilesNeverCrash() throws {
        let store = HostileStores.Store()
        let dir = try temp("store-fuzz")
        try store.write(to: dir)
        var refused = 0, loaded = 0
        for (k, (name, bytes)) in store.files.sorted(by: { $0.key < $1.key }).enumerated() {
            for c in Mutations.cases(of: bytes, count: 400, seed: 2700 + UInt64(k)) {
                try Data(c.bytes).write(to: dir.appendingPathComponent(name))
                do {
                    let s = try FeatureStore.load(from: dir)
                    // Whatever loads must be usable without trapping.
                    for split in [""] + s.splitNames { _ = s.split(split) }
                    _ = s.all
                    loaded += 1
                } catch is PipelineError { refused += 1 } catch {
                    XCTFail("\(name) \(c.label): untyped error \(error)")
                }
            }
            try Data(bytes).write(to: dir.appendingPathComponent(name))
        }
        XCTAssertEqual(refused + loaded, 2000)
        XCTAssertGreaterThan(refused, 1200, "most damage must be detected")
    }

    func testNpyHeaderReaderRefusesOverflowForTheShardMerger() throws {
        let dir = try temp("npy-header")
        let url = dir.appendingPathComponent("features.npy")
        try Data(HostileStores.overflowingShapeNpy).write(to: url)
        XCTAssertThrowsError(try NumpyHeader(contentsOf: url)) { e in
            XCTAssertTrue("\(e)".contains("features.npy") && "\(e)".contains("byte"), "\(e)")
        }
    }

    func testImpossibleShardMetaIsRefusedByMerge() throws {
        let shard = try temp("bad-shard")
        for block in ["{\"index\": 0, \"count\": -1, \"start\": 0, \"end\": 5}", "{\"index\": 0, \"count\": 1, \"start\": 9223372036854775807, \"end\": -9223372036854775808}"] {
            try Data("{\"format\": \"bottleneck-features-1\", \"dimension\": 4, \"layout\": \"flat\", \"shard\": \(block)}".utf8)
                .write(to: shard.appendingPathComponent("meta.json"))
            XCTAssertThrowsError(try ShardMerger.merge([shard], into: try temp("bad-shard-out"))) { e in
                XCTAssertTrue("\(e)".contains("is impossible"), "\(e)")
            }
        }
    }

    // MARK: finding 8: nothing lost while scanning

    func testUnreadableClassFolderStaysAClassAndIsRecordedAsAFailure() throws {
        let root = try temp("unreadable")
        let out = try temp("unreadable-out")
        try TestData.makeClassTree(root, classes: ["ants", "bees", "wasps"], perClass: 2)
        // The extractor writes as whoever runs it (nobody when the test runs as root).
        chmod(out.path, 0o777)
        var result: ExtractionResult? = nil
        var scan: DatasetScan? = nil
        let problem = try HostileStores.withUnreadableDirectory(root.appendingPathComponent("bees")) {
            scan = try DatasetScanner.scan(root)
            var o = ExtractionOptions(); o.batchSize = 2; o.decoderThreads = 1
            result = try FeatureExtractor(backbone: RawPixelBackbone(), options: o).extract(dataset: root, to: out.appendingPathComponent("s"))
        }
        if let problem { throw XCTSkip("cannot make a folder unreadable here: \(problem)") }
        let s = try XCTUnwrap(scan), r = try XCTUnwrap(result)
        XCTAssertEqual(s.classes, ["ants", "bees", "wasps"], "an unreadable class folder keeps its class index")
        let failed = try XCTUnwrap(s.entries.first { $0.path == "bees/" })
        XCTAssertEqual(failed.label, "bees")
        XCTAssertTrue(failed.failure?.hasPrefix("unreadable folder: ") == true, "\(failed)")
        XCTAssertEqual(r.extracted, 4)
        XCTAssertEqual(r.failures.map(\.path), ["bees/"])
        let store = try FeatureStore.load(from: out.appendingPathComponent("s"))
        XCTAssertEqual(store.classes, ["ants", "bees", "wasps"])
        XCTAssertEqual(store.records.first { $0.path == "bees/" }?.failure, failed.failure)
        XCTAssertEqual(store.labels, [0, 0, 2, 2])
    }

    func testBrokenAndLoopingLinksAreFailuresNotSkips() throws {
        let root = try temp("links")
        try TestData.makeClassTree(root, classes: ["a", "b"], perClass: 1)
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("c").path, withDestinationPath: "/nonexistent/bn-missing-folder")
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("a/loop.jpg").path, withDestinationPath: "loop.jpg")
        let scan = try DatasetScanner.scan(root)
        let failures = scan.entries.filter { $0.failure != nil }.map { "\($0.path): \($0.failure!)" }
        XCTAssertEqual(failures, ["a/loop.jpg: symbolic link loop", "c: broken symbolic link (its target does not exist)"])
        XCTAssertTrue(scan.skipped.isEmpty, "\(scan.skipped)")
        let out = try temp("links-out")
        var o = ExtractionOptions(); o.decoderThreads = 1
        let r = try FeatureExtractor(backbone: RawPixelBackbone(), options: o).extract(dataset: root, to: out)
        XCTAssertEqual(r.extracted, 2)
        XCTAssertEqual(r.failures.map(\.path), ["a/loop.jpg", "c"])
    }

    func testNonUTF8FileAndFolderNamesAreExtracted() throws {
        let root = try temp("non-utf8")
        try TestData.makeClassTree(root, classes: ["plain"], perClass: 1)
        let image = try Data(contentsOf: root.appendingPathComponent("plain/img_000.ppm"))
        // "caf\xE9" (Latin-1 é) as a class folder, holding a file whose name is also Latin-1.
        let folder = try HostileStores.makeDirectory(in: root, rawName: Array("caf".utf8) + [0xE9])
        try HostileStores.writeFile(inRawDirectory: folder, rawName: [0xFF, 0x5C] + Array(".ppm".utf8), bytes: image)
        // A Latin-1 file name in a valid class folder.
        try HostileStores.writeFile(inRawDirectory: Array(root.appendingPathComponent("plain").path.utf8),
                                    rawName: Array("na".utf8) + [0xEF] + Array("ve.ppm".utf8), bytes: image)
        let scan = try DatasetScanner.scan(root)
        XCTAssertEqual(scan.entries.map(\.path), ["caf\\xE9/\\xFF\\\\.ppm", "plain/img_000.ppm", "plain/na\\xEFve.ppm"])
        XCTAssertEqual(scan.classes, ["caf\\xE9", "plain"])
        XCTAssertTrue(scan.entries.allSatisfy { $0.failure == nil }, "\(scan.entries)")
        let out = try temp("non-utf8-out")
        var o = ExtractionOptions(); o.decoderThreads = 1
        let r = try FeatureExtractor(backbone: RawPixelBackbone(), options: o).extract(dataset: root, to: out)
        XCTAssertEqual(r.extracted, 3, "\(r.failures)")
        let store = try FeatureStore.load(from: out)
        XCTAssertEqual(store.labels, [0, 1, 1])
        // The same pixels give the same features whatever the file is called.
        let d = store.dimension
        XCTAssertEqual(Array(store.features[0..<d]), Array(store.features[d..<(2 * d)]))
    }

    func testEscapedNamesAreDistinct() {
        XCTAssertEqual(DatasetScanner.displayName(Array("plain.jpg".utf8)).text, "plain.jpg")
        XCTAssertFalse(DatasetScanner.displayName(Array("a\\b".utf8)).isEscaped)
        XCTAssertEqual(DatasetScanner.displayName([0x61, 0xE9, 0x5C]).text, "a\\xE9\\\\")
        XCTAssertNotEqual(DatasetScanner.displayName([0xE9, 0x5C, 0x78]).text, DatasetScanner.displayName([0xE9, 0x5C, 0x5C, 0x78]).text)
    }
}
