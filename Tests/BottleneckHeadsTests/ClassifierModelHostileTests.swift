import Foundation
import XCTest
import BottleneckHeads
import BottleneckTestSupport

/// Saved classifier models are validated explicitly on load (this module runs without bounds
/// checks in release builds): declared shapes, indices and numbers that prediction relies on are
/// checked, so a damaged or crafted model file is refused instead of reading out of bounds.
final class ClassifierModelHostileTests: XCTestCase {
    private let x = Matrix(rows: 9, cols: 2, values: [0, 0, 0, 1, 1, 0, 5, 5, 5, 6, 6, 5, 0, 9, 1, 9, 0, 8])
    private let y = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    private let names = ["ant", "bee", "wasp"]

    private func model(_ kind: HeadKind) throws -> ClassifierModel {
        let scaler = try StandardScaler.fit(x)
        var cfg = HeadConfig(kind: kind)
        cfg.probability = kind == .rbfSVM
        let head = try cfg.fit(try scaler.transform(x), labels: y, classCount: 3)
        return ClassifierModel(classNames: names, scaler: scaler, head: head, config: cfg)
    }

    private func encoded(_ m: ClassifierModel) throws -> Data {
        let dir = try Mutations.scratchDirectory("model-enc")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("m.json")
        try m.save(to: url)
        return try Data(contentsOf: url)
    }

    /// The refusal reason for model bytes `data` (fails the test when they load).
    private func refusal(_ data: Data, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let dir = try Mutations.scratchDirectory("model")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("m.json")
        try data.write(to: url)
        do { _ = try ClassifierModel.load(from: url) } catch let HeadError.invalidModel(path, reason) {
            XCTAssertEqual(path, url.path, file: file, line: line)
            return reason
        }
        XCTFail("model was accepted", file: file, line: line)
        return ""
    }

    func testDeclaredMatrixShapeMustMatchItsValues() throws {
        let text = String(decoding: try encoded(try model(.logreg)), as: UTF8.self)
        XCTAssertTrue(text.contains("\"coef\":{\"cols\":2,\"rows\":3,"), text)
        for rows in ["4611686018427387904", "4", "-3"] {
            let bad = text.replacingOccurrences(of: "\"coef\":{\"cols\":2,\"rows\":3,", with: "\"coef\":{\"cols\":2,\"rows\":\(rows),")
            let reason = try refusal(Data(bad.utf8))
            XCTAssertTrue(reason.contains("declares \(rows) x 2 but stores 6 values"), reason)
        }
    }

    func testNonFiniteParametersAreRefused() throws {
        var m = try model(.linearSVM)
        guard case .linearSVM(var svm) = m.head else { return XCTFail() }
        svm.intercept[1] = .infinity
        m.head = .linearSVM(svm)
        XCTAssertTrue(try refusal(try encoded(m)).contains("linear SVM intercept[1] is inf"))
        var l = try model(.logreg)
        guard case .logreg(var lr) = l.head else { return XCTFail() }
        lr.coef.values[4] = .nan
        l.head = .logreg(lr)
        XCTAssertTrue(try refusal(try encoded(l)).contains("coef[4] is nan"))
        var s = try model(.logreg)
        s.scaler.scale[0] = 0
        XCTAssertTrue(try refusal(try encoded(s)).contains("scale[0] is 0.0"))
    }

    func testKernelPairsAndSupportIndicesAreChecked() throws {
        let base = try model(.rbfSVM)
        guard case .kernelSVM(let svm) = base.head else { return XCTFail() }
        func refused(_ change: (inout KernelSVM) -> Void) throws -> String {
            var k = svm
            change(&k)
            var m = base
            m.head = .kernelSVM(k)
            return try refusal(try encoded(m))
        }
        XCTAssertTrue(try refused { $0.pairs[0].classA = -1 }.contains("0 <= a < b < 3"))
        XCTAssertTrue(try refused { $0.pairs[1] = $0.pairs[0] }.contains("each pair appear once"))
        XCTAssertTrue(try refused { $0.pairs[2].supportIndices[0] = 1_000_000 }.contains("support index 1000000 is outside"))
        XCTAssertTrue(try refused { $0.pairs[0].coefficients.removeLast() }.contains("support indices but"))
        XCTAssertTrue(try refused { $0.pairs[0].rho = .nan }.contains("rho[0] is nan"))
        XCTAssertTrue(try refused { $0.pairs[0].probB = nil }.contains("only one of probA and probB"))
        XCTAssertTrue(try refused { $0.pairs.removeLast() }.contains("2 pair machines"))
    }

    func testDuplicateClassNamesAreRefused() throws {
        var m = try model(.logreg)
        m.classNames[2] = "ant"
        XCTAssertTrue(try refusal(try encoded(m)).contains("not distinct"))
    }

    func testTruncationsAndFlipsOfSavedModelsNeverCrash() throws {
        let dir = try Mutations.scratchDirectory("model-fuzz")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("m.json")
        var total = 0, loaded = 0
        for (k, kind) in HeadKind.allCases.enumerated() {
            let bytes = [UInt8](try encoded(try model(kind)))
            for c in Mutations.cases(of: bytes, count: 600, seed: 2727 + UInt64(k)) {
                total += 1
                try Data(c.bytes).write(to: url)
                do {
                    let m = try ClassifierModel.load(from: url)
                    // A model that loads must predict without trapping (a typed error is fine).
                    do { _ = try m.predict(x); _ = try m.classScores(x) } catch is HeadError {}
                    loaded += 1
                } catch is HeadError {} catch { XCTFail("\(kind) \(c.label): untyped error \(error)") }
            }
        }
        XCTAssertEqual(total, 2400)
        XCTAssertLessThan(loaded, total)
    }
}
