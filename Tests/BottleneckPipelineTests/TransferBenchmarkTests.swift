import BottleneckCore
import BottleneckHeads
import Foundation
import XCTest
@testable import BottleneckPipeline

/// End-to-end checks of the frozen-feature benchmark on tiny generated datasets (raw-pixel backbones only,
/// so no weights are needed): report files, `report.json` structure, real accuracies, split handling.
final class TransferBenchmarkTests: XCTestCase {
    /// Writes a P6 image whose colour depends on the class: "red" images are red-dominant, "blue" ones
    /// blue-dominant, with per-pixel noise and a seeded brightness so no two images are equal.
    private func writeImage(_ url: URL, red: Bool, seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let w = 28 + Int(seed % 9), h = 24 + Int(seed % 7)
        var data = Data("P6\n\(w) \(h)\n255\n".utf8)
        let level = 120 + Int(rng.next() % 100)
        var px = [UInt8](repeating: 0, count: w * h * 3)
        for i in 0..<(w * h) {
            let n = Int(rng.next() % 60)
            let strong = UInt8(min(255, level + n)), weak = UInt8(min(255, level / 3 + Int(rng.next() % 60)))
            px[i * 3] = red ? strong : weak
            px[i * 3 + 1] = UInt8(min(255, 40 + n))
            px[i * 3 + 2] = red ? weak : strong
        }
        data.append(contentsOf: px)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url)
    }

    private func makeDataset(_ root: URL, splits: [(String, Int)]) throws {
        var seed: UInt64 = 11
        for (split, perClass) in splits {
            for cls in ["blue", "red"] {
                for i in 0..<perClass {
                    var dir = root
                    if !split.isEmpty { dir = dir.appendingPathComponent(split) }
                    try writeImage(dir.appendingPathComponent(cls).appendingPathComponent("im\(i).ppm"), red: cls == "red", seed: seed)
                    seed &+= 7919
                }
            }
        }
    }

    private func options() -> TransferBenchmarkOptions {
        var o = TransferBenchmarkOptions()
        o.seeds = 2
        o.Cs = [0.1, 1]
        o.cvFolds = 3
        o.extraction.batchSize = 4
        o.extraction.decoderThreads = 1
        return o
    }

    func testReportOnSplitDatasetHasRealRowsAndFiles() throws {
        let root = try TestData.tempDir("bench")
        defer { try? FileManager.default.removeItem(at: root) }
        let data = root.appendingPathComponent("data"), out = root.appendingPathComponent("report")
        try makeDataset(data, splits: [("train", 12), ("val", 6)])
        let bench = TransferBenchmark(dataset: data, reportDirectory: out, options: options())
        var rows = try bench.evaluate(backbone: RawPixelBackbone(preset: .imagenet, grid: 4), cacheName: "raw4",
                                      setting: .rawPixels, cut: nil, heads: [.logreg])
        rows += try bench.evaluate(backbone: RawPixelBackbone(preset: .imagenet, grid: 8), cacheName: "raw8",
                                   setting: .frozen, cut: 1, heads: [.logreg, .linearSVM, .rbfSVM])
        XCTAssertEqual(bench.split?.description, "train split vs val split")
        XCTAssertEqual(bench.split?.trainPaths.count, 24)
        XCTAssertEqual(bench.split?.testPaths.count, 12)
        XCTAssertEqual(bench.classes, ["blue", "red"])

        let report = BenchmarkReport(rows: rows, classes: bench.classes, split: bench.split!,
                                     facts: [("model", "raw-pixels")], notes: ["test note"])
        try report.write(to: out)
        for f in ["report.md", "report.json", "accuracy_by_cut.png", "confusion_best.png"] {
            let bytes = try Data(contentsOf: out.appendingPathComponent(f))
            XCTAssertGreaterThan(bytes.count, 100, f)
            if f.hasSuffix(".png") { XCTAssertEqual(Array(bytes.prefix(4)), [0x89, 0x50, 0x4E, 0x47], f) }
        }
        // Features were cached under the report directory, once per feature set.
        XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("features/raw8/features.npy").path))

        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report.json"))) as! [String: Any]
        let jsonRows = try XCTUnwrap(json["rows"] as? [[String: Any]])
        XCTAssertEqual(jsonRows.count, 4)
        XCTAssertEqual(jsonRows.map { $0["setting"] as? String }, ["raw-pixels", "frozen", "frozen", "frozen"])
        XCTAssertEqual(jsonRows.map { $0["head"] as? String }, ["logreg", "logreg", "linear-svm", "rbf-svm"])
        XCTAssertTrue(jsonRows[0]["cut"] is NSNull)
        XCTAssertEqual(jsonRows[1]["cut"] as? Int, 1)
        for r in jsonRows {
            XCTAssertEqual(r["unfrozen"] as? Int, 0)
            let mean = try XCTUnwrap(r["accuracy_mean"] as? Double), std = try XCTUnwrap(r["accuracy_std"] as? Double)
            let accs = try XCTUnwrap(r["accuracies"] as? [Double])
            XCTAssertEqual(accs.count, 2)
            for a in accs + [mean] { XCTAssertTrue(a.isFinite && a >= 0 && a <= 1, "accuracy \(a) out of [0, 1]") }
            XCTAssertTrue(std.isFinite && std >= 0 && std <= 0.5)
            XCTAssertEqual(mean, accs.reduce(0, +) / 2, accuracy: 1e-12)
            // 12 test images: every accuracy is a multiple of 1/12.
            for a in accs { XCTAssertEqual((a * 12).rounded(), a * 12, accuracy: 1e-9) }
            let train = try XCTUnwrap(r["train_seconds"] as? Double)
            XCTAssertTrue(train.isFinite && train >= 0)
            let speed = try XCTUnwrap(r["inference_images_per_second"] as? Double)
            XCTAssertTrue(speed.isFinite && speed > 0)
            let confusion = try XCTUnwrap(r["confusion"] as? [[Int]])
            XCTAssertEqual(confusion.flatMap { $0 }.reduce(0, +), 12)
            XCTAssertEqual(confusion.map { $0.reduce(0, +) }, [6, 6])
            XCTAssertEqual(Double(confusion[0][0] + confusion[1][1]) / 12, accs[0], accuracy: 1e-12)
        }
        // The classes differ by colour, so the linear heads must find it (a label or row mix-up would not).
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(jsonRows[1]["accuracy_mean"] as? Double), 0.9)
        XCTAssertNotNil(json["best"] as? String)

        // Re-running reuses the cached features and gives the same accuracies.
        let again = TransferBenchmark(dataset: data, reportDirectory: out, options: options())
        let rerun = try again.evaluate(backbone: RawPixelBackbone(preset: .imagenet, grid: 8), cacheName: "raw8",
                                       setting: .frozen, cut: 1, heads: [.logreg])
        XCTAssertEqual(rerun[0].accuracies, rows[1].accuracies)
    }

    func testUnsplitDatasetUsesStratifiedHoldout() throws {
        let root = try TestData.tempDir("bench-holdout")
        defer { try? FileManager.default.removeItem(at: root) }
        let data = root.appendingPathComponent("data")
        try makeDataset(data, splits: [("", 15)])
        let bench = TransferBenchmark(dataset: data, reportDirectory: root.appendingPathComponent("r"), options: options())
        let rows = try bench.evaluate(backbone: RawPixelBackbone(preset: .imagenet, grid: 4), cacheName: "raw4",
                                      setting: .rawPixels, cut: nil, heads: [.logreg])
        let split = try XCTUnwrap(bench.split)
        XCTAssertTrue(split.description.contains("holdout"), split.description)
        XCTAssertEqual(split.testPaths.count, 6)  // round(0.2 * 15) = 3 per class
        XCTAssertEqual(split.trainPaths.count, 24)
        XCTAssertTrue(Set(split.trainPaths).isDisjoint(with: split.testPaths))
        XCTAssertEqual(rows[0].confusion.flatMap { $0 }.reduce(0, +), 6)
    }

    func testNegativeTransferIsFlagged() throws {
        func row(_ setting: BenchmarkSetting, _ cut: Int?, _ accs: [Double]) -> BenchmarkRow {
            BenchmarkRow(setting: setting, head: "logreg", cut: cut, unfrozen: 0, accuracies: accs, trainSeconds: [0.1],
                         inferenceImagesPerSecond: 10, featureDimension: 4, chosenC: [1], confusion: [[1, 0], [0, 1]])
        }
        let report = BenchmarkReport(rows: [row(.rawPixels, nil, [0.8, 0.8]), row(.frozen, 1, [0.9, 1.0]), row(.frozen, 2, [0.6, 0.7])],
                                     classes: ["a", "b"], split: BenchmarkSplit(trainPaths: ["x"], testPaths: ["y"], description: "d"),
                                     facts: [], notes: [])
        XCTAssertFalse(report.isNegativeTransfer(report.rows[1]))
        XCTAssertTrue(report.isNegativeTransfer(report.rows[2]))
        XCTAssertEqual(report.best?.cut, 1)
        XCTAssertEqual(report.rows[1].accuracyStd, 0.05, accuracy: 1e-12)
        let md = report.markdown()
        XCTAssertTrue(md.contains("frozen cut 2 logreg (0.6500)"), md)
        let json = try JSONSerialization.jsonObject(with: report.json()) as! [String: Any]
        let flags = (json["rows"] as! [[String: Any]]).map { $0["negative_transfer"] as! Bool }
        XCTAssertEqual(flags, [false, false, true])
    }
}
