import Foundation
import XCTest
@testable import BottleneckPipeline

final class DatasetCatalogTests: XCTestCase {
    func testCommittedManifestMatchesTheCompiledCatalog() throws {
        let file = TestData.packageRoot.appendingPathComponent("Datasets/manifest.json")
        let committed = try Data(contentsOf: file)
        XCTAssertEqual(String(decoding: committed, as: UTF8.self), String(decoding: try DatasetCatalog.manifestJSON(), as: UTF8.self),
                       "regenerate with: bottleneck datasets list --json > Datasets/manifest.json")
        let names = DatasetCatalog.all.map(\.name)
        XCTAssertEqual(names, ["hymenoptera", "oxford17", "oxford102", "caltech101", "pets", "cub200"])
        for d in DatasetCatalog.all {
            for f in d.files {
                if let h = f.sha256 { XCTAssertEqual(h.count, 64); XCTAssertTrue(h.allSatisfy(\.isHexDigit)) }
                if let m = f.md5 { XCTAssertEqual(m.count, 32) }
                XCTAssertTrue(f.url.hasPrefix("https://"), f.url)
                if f.sha256 == nil { XCTAssertNotNil(f.note, "\(d.name)/\(f.filename) needs a note saying why there is no sha256") }
            }
        }
    }

    func testPetsLayoutFollowsTheOfficialLists() throws {
        let staging = try TestData.tempDir("pets-staging")
        let dest = try TestData.tempDir("pets-dest")
        defer { try? FileManager.default.removeItem(at: staging); try? FileManager.default.removeItem(at: dest) }
        let ann = staging.appendingPathComponent("annotations"), img = staging.appendingPathComponent("images")
        try FileManager.default.createDirectory(at: ann, withIntermediateDirectories: true)
        for (i, n) in ["Abyssinian_1", "Abyssinian_2", "great_pyrenees_10", "great_pyrenees_11"].enumerated() {
            try TestData.writePPM(img.appendingPathComponent(n + ".jpg"), seed: UInt64(i))
        }
        try "#comment\nAbyssinian_1 1 1 1\ngreat_pyrenees_10 16 2 8\n".write(to: ann.appendingPathComponent("trainval.txt"), atomically: true, encoding: .utf8)
        try "Abyssinian_2 1 1 1\ngreat_pyrenees_11 16 2 8\n".write(to: ann.appendingPathComponent("test.txt"), atomically: true, encoding: .utf8)
        try DatasetFetcher.layOut(recipe: "pets", staging: staging, destination: dest)
        let scan = try DatasetScanner.scan(dest)
        XCTAssertEqual(scan.layout, .splitClassFolders)
        XCTAssertEqual(scan.entries.map(\.path), ["test/Abyssinian/Abyssinian_2.jpg", "test/great_pyrenees/great_pyrenees_11.jpg",
                                                  "train/Abyssinian/Abyssinian_1.jpg", "train/great_pyrenees/great_pyrenees_10.jpg"])
    }

    func testCUBLayoutUsesTrainTestSplit() throws {
        let staging = try TestData.tempDir("cub-staging")
        let dest = try TestData.tempDir("cub-dest")
        defer { try? FileManager.default.removeItem(at: staging); try? FileManager.default.removeItem(at: dest) }
        let root = staging.appendingPathComponent("CUB_200_2011")
        let files = ["001.Black_footed_Albatross/a.jpg", "001.Black_footed_Albatross/b.jpg", "002.Laysan_Albatross/c.jpg"]
        for (i, f) in files.enumerated() { try TestData.writePPM(root.appendingPathComponent("images/" + f), seed: UInt64(i)) }
        try "1 \(files[0])\n2 \(files[1])\n3 \(files[2])\n".write(to: root.appendingPathComponent("images.txt"), atomically: true, encoding: .utf8)
        try "1 1\n2 0\n3 1\n".write(to: root.appendingPathComponent("train_test_split.txt"), atomically: true, encoding: .utf8)
        try DatasetFetcher.layOut(recipe: "cub", staging: staging, destination: dest)
        let scan = try DatasetScanner.scan(dest)
        XCTAssertEqual(scan.entries.map(\.path), ["test/001.Black_footed_Albatross/b.jpg", "train/001.Black_footed_Albatross/a.jpg",
                                                  "train/002.Laysan_Albatross/c.jpg"])
    }

    func testTreeLayoutFromALocalZipAndInstructionsWithoutNetwork() throws {
        let work = try TestData.tempDir("tree")
        defer { try? FileManager.default.removeItem(at: work) }
        let src = work.appendingPathComponent("src/hymenoptera_data")
        try TestData.makeClassTree(src, prefix: "train", classes: ["ants", "bees"], perClass: 2)
        try TestData.makeClassTree(src, prefix: "val", classes: ["ants", "bees"], perClass: 1)
        let archives = work.appendingPathComponent("downloads")
        try FileManager.default.createDirectory(at: archives, withIntermediateDirectories: true)
        // A tarball stands in for the zip (the extractor dispatches on the name); `tar` is always present.
        let spec = DatasetSpec(name: "t", title: "t", homepage: "https://example.invalid", classes: 2, images: 6,
                               files: [DatasetFile(url: "https://example.invalid/t.tar", filename: "t.tar", sha256: nil, md5: nil, note: "test")],
                               recipe: "tree", splits: "train/val", manual: [])
        try DatasetFetcher.run("tar", ["-cf", archives.appendingPathComponent("t.tar").path, "-C", work.appendingPathComponent("src").path, "hymenoptera_data"])
        let dest = work.appendingPathComponent("out")
        let f = DatasetFetcher(spec: spec, destination: dest, archives: archives)
        XCTAssertTrue(f.missingFiles.isEmpty)
        try f.verify()
        try f.extractAndLayOut()
        let scan = try DatasetScanner.scan(dest)
        XCTAssertEqual(scan.splits, ["train", "val"])
        XCTAssertEqual(scan.entries.count, 6)

        let missing = DatasetFetcher(spec: DatasetCatalog.spec(named: "pets")!, destination: work.appendingPathComponent("pets"))
        XCTAssertEqual(missing.missingFiles.count, 2)
        XCTAssertTrue(missing.instructions.contains("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz"))
        XCTAssertTrue(missing.instructions.contains(work.appendingPathComponent("pets/.downloads/annotations.tar.gz").path))
    }

    func testVerifyRejectsAWrongChecksum() throws {
        let work = try TestData.tempDir("verify")
        defer { try? FileManager.default.removeItem(at: work) }
        try Data("abc".utf8).write(to: work.appendingPathComponent("x.bin"))
        let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        func spec(_ h: String) -> DatasetSpec {
            DatasetSpec(name: "x", title: "x", homepage: "", classes: 1, images: 1,
                        files: [DatasetFile(url: "https://example.invalid/x.bin", filename: "x.bin", sha256: h, md5: nil, note: nil)],
                        recipe: "tree", splits: "", manual: [])
        }
        XCTAssertNoThrow(try DatasetFetcher(spec: spec(good), destination: work, archives: work).verify())
        XCTAssertThrowsError(try DatasetFetcher(spec: spec(String(repeating: "0", count: 64)), destination: work, archives: work).verify())
    }
}
