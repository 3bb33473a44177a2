import Foundation
import XCTest
@testable import BottleneckPipeline

final class DatasetScannerTests: XCTestCase {
    func testClassFolderLayoutSniffsContentAndListsSkipped() throws {
        let root = try TestData.tempDir("scan-class")
        defer { try? FileManager.default.removeItem(at: root) }
        try TestData.makeClassTree(root, classes: ["cats", "dogs"], perClass: 2)
        // An image without an extension is found by its magic bytes; a text file is skipped.
        try TestData.writePPM(root.appendingPathComponent("dogs/no_extension"), seed: 99)
        try Data("hello".utf8).write(to: root.appendingPathComponent("dogs/README.txt"))
        try Data("x".utf8).write(to: root.appendingPathComponent("cats/.DS_Store"))
        try FileManager.default.createDirectory(at: root.appendingPathComponent(".cache"), withIntermediateDirectories: true)
        try TestData.writePPM(root.appendingPathComponent(".cache/hidden.ppm"), seed: 3)
        // A corrupt file with an image extension is a candidate (it fails later, with a reason).
        try Data("not really".utf8).write(to: root.appendingPathComponent("cats/broken.jpg"))

        let scan = try DatasetScanner.scan(root)
        XCTAssertEqual(scan.layout, .classFolders)
        XCTAssertEqual(scan.entries.map(\.path), ["cats/broken.jpg", "cats/img_000.ppm", "cats/img_001.ppm",
                                                  "dogs/img_000.ppm", "dogs/img_001.ppm", "dogs/no_extension"])
        XCTAssertEqual(scan.entries.map(\.label), ["cats", "cats", "cats", "dogs", "dogs", "dogs"])
        XCTAssertEqual(Set(scan.entries.map(\.split)), [""])
        XCTAssertEqual(scan.classes, ["cats", "dogs"])
        XCTAssertEqual(scan.skipped, [SkippedFile(path: ".cache", reason: "hidden"),
                                      SkippedFile(path: "cats/.DS_Store", reason: "hidden"),
                                      SkippedFile(path: "dogs/README.txt", reason: "not an image")])
        XCTAssertEqual(scan.labelIndex("dogs"), 1)
        XCTAssertEqual(scan.labelIndex("birds"), -1)
    }

    func testSplitLayoutKeepsSplitsAndClassesUnion() throws {
        let root = try TestData.tempDir("scan-split")
        defer { try? FileManager.default.removeItem(at: root) }
        try TestData.makeClassTree(root, prefix: "train", classes: ["ants", "bees"], perClass: 2)
        try TestData.makeClassTree(root, prefix: "val", classes: ["ants", "wasps"], perClass: 1)
        try TestData.makeClassTree(root, prefix: "test", classes: ["bees"], perClass: 1)
        let scan = try DatasetScanner.scan(root)
        XCTAssertEqual(scan.layout, .splitClassFolders)
        XCTAssertEqual(scan.splits, ["test", "train", "val"])
        XCTAssertEqual(scan.classes, ["ants", "bees", "wasps"])
        XCTAssertEqual(scan.entries.map(\.path).first, "test/bees/img_000.ppm")
        XCTAssertEqual(scan.entries.filter { $0.split == "train" }.map(\.label), ["ants", "ants", "bees", "bees"])
        XCTAssertEqual(scan.entries.filter { $0.split == "val" }.map(\.label), ["ants", "wasps"])
    }

    func testFlatLayoutAndByteWiseOrder() throws {
        let root = try TestData.tempDir("scan-flat")
        defer { try? FileManager.default.removeItem(at: root) }
        for (i, name) in ["b.ppm", "B.ppm", "a.ppm", "é.ppm", "Z.ppm", "a1.ppm", "a_.ppm"].enumerated() {
            try TestData.writePPM(root.appendingPathComponent(name), seed: UInt64(i))
        }
        let scan = try DatasetScanner.scan(root)
        XCTAssertEqual(scan.layout, .flat)
        // UTF-8 byte order: uppercase before lowercase, '1' (0x31) before '_' (0x5F), 'é' (0xC3 0xA9) last.
        XCTAssertEqual(scan.entries.map(\.path), ["B.ppm", "Z.ppm", "a.ppm", "a1.ppm", "a_.ppm", "b.ppm", "é.ppm"])
        XCTAssertTrue(scan.entries.allSatisfy { $0.label.isEmpty && $0.split.isEmpty })
        XCTAssertEqual(scan.classes, [])
    }

    func testFingerprintChangesWhenAFileChanges() throws {
        let root = try TestData.tempDir("scan-fp")
        defer { try? FileManager.default.removeItem(at: root) }
        try TestData.makeClassTree(root, classes: ["a"], perClass: 3)
        let fp1 = try DatasetScanner.scan(root).listFingerprint
        XCTAssertEqual(fp1, try DatasetScanner.scan(root).listFingerprint)
        try TestData.writePPM(root.appendingPathComponent("a/img_001.ppm"), width: 50, height: 50, seed: 1234)
        XCTAssertNotEqual(fp1, try DatasetScanner.scan(root).listFingerprint)
    }

    func testMissingDirectoryIsATypedError() {
        XCTAssertThrowsError(try DatasetScanner.scan(URL(fileURLWithPath: "/nonexistent/bn-dataset"))) { error in
            guard case PipelineError.invalidDataset(let path, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, "/nonexistent/bn-dataset")
        }
    }

    func testCSVRoundTripWithAwkwardFields() throws {
        let fields = ["plain", "with,comma", "with \"quote\"", "multi\nline", ""]
        let line = fields.map(TextFormat.csvField).joined(separator: ",") + "\n"
        XCTAssertEqual(try TextFormat.parseCSV("a,b,c,d,e\n" + line), [["a", "b", "c", "d", "e"], fields])
    }
}
