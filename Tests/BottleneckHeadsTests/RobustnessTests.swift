import Foundation
import XCTest
import BottleneckHeads
import BottleneckImage

/// Bad input must produce a typed ``HeadError`` (never a crash or a silently wrong model), and models round-trip.
final class RobustnessTests: XCTestCase {
    private let x = Matrix(rows: 6, cols: 2, values: [0, 0, 0, 1, 1, 0, 5, 5, 5, 6, 6, 5])
    private let y = [0, 0, 0, 1, 1, 1]
    private let kinds: [HeadKind] = HeadKind.allCases

    private func assertError(_ expected: (HeadError) -> Bool, _ body: () throws -> Void, _ msg: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        do { try body(); XCTFail("expected an error: \(msg)", file: file, line: line) } catch let e as HeadError {
            XCTAssertTrue(expected(e), "\(msg): unexpected \(e)", file: file, line: line)
            XCTAssertFalse(e.description.isEmpty)
        } catch { XCTFail("\(msg): non-HeadError \(error)", file: file, line: line) }
    }

    func testBadTrainingInputThrowsTypedErrors() {
        for kind in kinds {
            let cfg = HeadConfig(kind: kind)
            assertError({ if case .singleClass = $0 { return true }; return false },
                        { _ = try cfg.fit(x, labels: [0, 0, 0, 0, 0, 0], classCount: 2) }, "\(kind) single class")
            assertError({ if case .emptyClass(2, _) = $0 { return true }; return false },
                        { _ = try cfg.fit(x, labels: y, classCount: 3) }, "\(kind) empty class")
            assertError({ if case .unknownClass(7, 2) = $0 { return true }; return false },
                        { _ = try cfg.fit(x, labels: [0, 0, 7, 1, 1, 1], classCount: 2) }, "\(kind) unknown class")
            assertError({ if case .labelCountMismatch = $0 { return true }; return false },
                        { _ = try cfg.fit(x, labels: [0, 1], classCount: 2) }, "\(kind) label count")
            var nan = x; nan[3, 1] = .nan
            assertError({ if case .nonFinite(3, 1, _) = $0 { return true }; return false },
                        { _ = try cfg.fit(nan, labels: y, classCount: 2) }, "\(kind) NaN")
            var inf = x; inf[0, 0] = .infinity
            assertError({ if case .nonFinite(0, 0, _) = $0 { return true }; return false },
                        { _ = try cfg.fit(inf, labels: y, classCount: 2) }, "\(kind) Inf")
            var badC = cfg; badC.C = 0
            assertError({ if case .invalidParameter = $0 { return true }; return false },
                        { _ = try badC.fit(x, labels: y, classCount: 2) }, "\(kind) C = 0")
            assertError({ if case .emptyData = $0 { return true }; return false },
                        { _ = try cfg.fit(Matrix(rows: 0, cols: 2, values: []), labels: [], classCount: 2) }, "\(kind) empty")
        }
    }

    func testDimensionMismatchAtPredictAndScaler() throws {
        for kind in kinds {
            let head = try HeadConfig(kind: kind).fit(x, labels: y, classCount: 2)
            XCTAssertEqual(try head.predict(x), y, "\(kind) separable toy problem")
            assertError({ if case .dimensionMismatch(2, 3, _) = $0 { return true }; return false },
                        { _ = try head.predict(Matrix(zeros: 1, 3)) }, "\(kind) predict dims")
            var nan = x; nan[0, 0] = .nan
            assertError({ if case .nonFinite = $0 { return true }; return false }, { _ = try head.predict(nan) }, "\(kind) predict NaN")
        }
        let s = try StandardScaler.fit(x)
        assertError({ if case .dimensionMismatch(2, 5, _) = $0 { return true }; return false },
                    { _ = try s.transform(Matrix(zeros: 2, 5)) }, "scaler dims")
    }

    func testScalerConstantFeatureAndL2() throws {
        let m = Matrix(rows: 3, cols: 2, values: [1, 3, 2, 3, 3, 3])
        let s = try StandardScaler.fit(m)
        XCTAssertEqual(s.scale[1], 1)
        XCTAssertEqual(s.scale[0], (2.0 / 3).squareRoot(), accuracy: 1e-15)
        let t = try s.transform(m)
        XCTAssertEqual(t[0, 1], 0); XCTAssertEqual(t[2, 0], 1.224744871391589, accuracy: 1e-12)
        let n = Matrix(rows: 2, cols: 2, values: [3, 4, 0, 0]).l2RowNormalized()
        XCTAssertEqual(n.values, [0.6, 0.8, 0, 0])
    }

    func testModelSaveLoadRoundTripAndValidation() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("heads-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let scaler = try StandardScaler.fit(x)
        let xs = try scaler.transform(x)
        for kind in kinds {
            var cfg = HeadConfig(kind: kind)
            cfg.probability = kind == .rbfSVM
            let head = try cfg.fit(xs, labels: y, classCount: 2)
            let rep = try ClassificationReport.compute(trueLabels: y, predicted: try head.predict(xs), classNames: ["ant", "bee"])
            let model = ClassifierModel(classNames: ["ant", "bee"], scaler: scaler, head: head, config: cfg,
                                        trainingMetrics: ["train": rep],
                                        backbone: BackboneInfo(model: "efficientnet_lite0", weightsSHA256: "ab12", cut: "head",
                                                               pool: "avg", preprocessing: "imagenet"))
            let url = dir.appendingPathComponent("\(kind.rawValue).json")
            try model.save(to: url)
            let back = try ClassifierModel.load(from: url)
            XCTAssertEqual(back, model, "\(kind)")
            XCTAssertEqual(try back.predict(x), try model.predict(x))
            XCTAssertEqual(back.backbone?.model, "efficientnet_lite0")
        }
        // Corrupt: head dimension disagrees with the scaler.
        let head = try HeadConfig(kind: .logreg).fit(xs, labels: y, classCount: 2)
        let broken = ClassifierModel(classNames: ["a", "b"], scaler: .identity(dimension: 3), head: head, config: HeadConfig(kind: .logreg))
        let url = dir.appendingPathComponent("broken.json")
        try broken.save(to: url)
        assertError({ if case .invalidModel = $0 { return true }; return false }, { _ = try ClassifierModel.load(from: url) }, "dim check")
        // Unknown head type.
        var text = try String(contentsOf: dir.appendingPathComponent("logreg.json"), encoding: .utf8)
        text = text.replacingOccurrences(of: "\"logreg\":{", with: "\"mystery\":{")
        try text.write(to: url, atomically: true, encoding: .utf8)
        assertError({ if case .invalidModel = $0 { return true }; return false }, { _ = try ClassifierModel.load(from: url) }, "unknown head")
        assertError({ if case .io = $0 { return true }; return false },
                    { _ = try ClassifierModel.load(from: dir.appendingPathComponent("missing.json")) }, "missing file")
    }

    func testHoldoutSplitIsStratifiedAndDeterministic() throws {
        let labels = (0..<100).map { $0 % 3 == 0 ? 0 : ($0 % 3 == 1 ? 1 : 2) }
        let a = try StratifiedHoldout.split(labels: labels, fraction: 0.2, seed: 7)
        let b = try StratifiedHoldout.split(labels: labels, fraction: 0.2, seed: 7)
        XCTAssertEqual(a.train, b.train); XCTAssertEqual(a.test, b.test)
        XCTAssertEqual(Set(a.train).union(a.test), Set(0..<100)); XCTAssertTrue(Set(a.train).isDisjoint(with: a.test))
        for c in 0..<3 { XCTAssertEqual(a.test.filter { labels[$0] == c }.count, Int((0.2 * Double(labels.filter { $0 == c }.count)).rounded())) }
        XCTAssertThrowsError(try StratifiedHoldout.split(labels: labels, fraction: 1.5, seed: 0))
    }

    func testReportTextCSVAndJSON() throws {
        let rep = try ClassificationReport.compute(trueLabels: [0, 0, 1, 1, 2], predicted: [0, 1, 1, 1, 0], classNames: ["a", "b", "c"])
        XCTAssertEqual(rep.accuracy, 0.6, accuracy: 1e-15)
        XCTAssertEqual(rep.perClass[2].precision, 0); XCTAssertEqual(rep.perClass[1].precision, 2.0 / 3, accuracy: 1e-15)
        XCTAssertEqual(rep.confusionCSV(), "true\\predicted,a,b,c\na,1,1,0\nb,0,2,0\nc,1,0,0\n")
        XCTAssertTrue(rep.textTable().contains("macro avg"))
        let json = try JSONSerialization.jsonObject(with: rep.jsonData()) as! [String: Any]
        for key in ["accuracy", "macro_f1", "per_class", "n"] { XCTAssertNotNil(json[key], key) }
        XCTAssertThrowsError(try ClassificationReport.compute(trueLabels: [0, 5], predicted: [0, 0], classNames: ["a", "b"]))
    }
}

final class HeatmapTests: XCTestCase {
    /// The PNG decodes back (through BottleneckImage's decoder) to the rendered pixels, and colours encode fractions.
    func testConfusionHeatmapRendersAndWrites() throws {
        let cm = [[8, 2, 0], [0, 10, 0], [5, 0, 5]]
        let img = ConfusionHeatmap.render(confusion: cm, classNames: ["ants", "bees", "wasps"])
        XCTAssertEqual(img.pixels.count, img.width * img.height * 3)
        // Diagonal cell of a perfect row (fraction 1) is the darkest colour; an empty off-diagonal cell is near white.
        XCTAssertEqual(ConfusionHeatmap.colormap(1).0, 8)
        XCTAssertEqual(ConfusionHeatmap.colormap(0).0, 247)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("heatmap-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("confusion.png")
        try ConfusionHeatmap.write(confusion: cm, classNames: ["ants", "bees", "wasps"], to: url)
        let bytes = try Data(contentsOf: url)
        XCTAssertEqual(Array(bytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        XCTAssertEqual(try ImageDecoder.decode(contentsOf: url), img)
        // Count dark-blue pixels: only the (1,1) cell has fraction 1; (0,0) is 0.8, others lighter.
        var darkest = 0
        for i in stride(from: 0, to: img.pixels.count, by: 3) where img.pixels[i] == 8 && img.pixels[i + 2] == 107 { darkest += 1 }
        XCTAssertGreaterThan(darkest, 100)
    }
}
