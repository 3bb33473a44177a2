import Foundation
import XCTest
import BottleneckCore
import BottleneckTestSupport

/// `.npy` parsing through ``ByteReader``: impossible headers are refused with the byte offset, and
/// no truncation or byte flip of a valid file crashes the parser (issue 27, finding 10).
final class NumpyHostileTests: XCTestCase {
    private func refusal(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> MalformedBytes? {
        do { _ = try NumpyArray(npyData: Data(bytes), name: "x.npy"); XCTFail("accepted", file: file, line: line) }
        catch let e as MalformedBytes { return e } catch { XCTFail("untyped error \(error)", file: file, line: line) }
        return nil
    }

    func testOverflowingShapeProductIsRefused() throws {
        let e = try XCTUnwrap(refusal(HostileStores.overflowingShapeNpy))
        XCTAssertEqual(e.path, "x.npy")
        XCTAssertTrue(e.reason.contains("more elements than can be addressed"), e.description)
        // A product that fits Int but times the element size does not.
        let times8 = HostileStores.npy(dict: "{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }")
        XCTAssertTrue(try XCTUnwrap(refusal(times8)).reason.contains("more elements"))
        // A dimension that does not fit Int at all.
        let huge = HostileStores.npy(dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }")
        XCTAssertTrue(try XCTUnwrap(refusal(huge)).reason.contains("too large"))
    }

    func testDeclaredDataLongerThanTheFileIsRefusedWithOffset() throws {
        let a = Array(NumpyArray(float32: [1, 2, 3, 4], shape: [2, 2]).encoded())
        let e = try XCTUnwrap(refusal(Array(a.dropLast(3))))
        XCTAssertEqual(e.kind, .truncated)
        XCTAssertEqual(e.offset, a.count - 16, "the offset is where the data section starts")
        XCTAssertTrue(e.reason.contains("needs 16 data bytes, the file holds 13"), e.description)
    }

    func testHeaderSyntaxErrorsNameTheirOffset() throws {
        let badKey = HostileStores.npy(dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1, }")
        XCTAssertNotNil(refusal(badKey))
        let dup = HostileStores.npy(dict: "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }")
        XCTAssertTrue(try XCTUnwrap(refusal(dup)).reason.contains("duplicate key"))
        let negative = HostileStores.npy(dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }")
        let e = try XCTUnwrap(refusal(negative))
        XCTAssertEqual(e.offset, 10 + "{'descr': '<f4', 'fortran_order': False, 'shape': (".utf8.count)
        let bigHeader = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 2, 0, 0xFF, 0xFF, 0xFF, 0x7F] as [UInt8]
        XCTAssertTrue(try XCTUnwrap(refusal(bigHeader)).reason.contains("limit"))
    }

    func testFileReaderChecksSizeBeforeReading() throws {
        let dir = try Mutations.scratchDirectory("npy")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("big.npy")
        try Data(HostileStores.npy(dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000), }")).write(to: url)
        XCTAssertThrowsError(try NumpyArray(contentsOf: url)) { e in
            XCTAssertTrue("\(e)".contains("big.npy") && "\(e)".contains("4000000000000 data bytes"), "\(e)")
        }
        XCTAssertThrowsError(try NumpyArray(contentsOf: dir)) { e in XCTAssertTrue("\(e)".contains("not a regular file"), "\(e)") }
    }

    func testTruncationsAndFlipsNeverCrash() throws {
        var total = 0, accepted = 0
        for (k, file) in HostileStores.validNpyFiles().enumerated() {
            let original = try NumpyArray(npyData: Data(file.bytes))
            for c in Mutations.cases(of: file.bytes, count: 1000, seed: 27_000 + UInt64(k)) {
                total += 1
                do {
                    let a = try NumpyArray(npyData: Data(c.bytes))
                    // An accepted array is self-consistent and every accessor works.
                    XCTAssertEqual(a.bytes.count, a.count * a.dtype.size, "\(file.name) \(c.label)")
                    _ = a.floats; _ = a.doubles; _ = a.ints
                    accepted += 1
                } catch is MalformedBytes {} catch { XCTFail("\(file.name) \(c.label): untyped error \(error)") }
            }
            XCTAssertEqual(original.encoded().count > 0, true)
        }
        XCTAssertEqual(total, 5000)
        XCTAssertLessThan(accepted, total / 2)
    }
}
