import Foundation
import XCTest
import BottleneckCore

final class CoreTests: XCTestCase {
    func testSHA256KnownVectors() {
        XCTAssertEqual(SHA256.hex(Data()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(Data("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Data(repeating: UInt8(ascii: "a"), count: 1_000_000)
        XCTAssertEqual(SHA256.hex(long), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // Chunked updates across block boundaries give the same digest.
        var s = SHA256()
        let bytes = [UInt8](long)
        var i = 0
        for step in [1, 63, 65, 127, 1000] where i < bytes.count {
            bytes[i..<min(i + step, bytes.count)].withUnsafeBytes { s.update($0) }; i += step
        }
        bytes[i...].withUnsafeBytes { s.update($0) }
        XCTAssertEqual(s.finalize(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    func testNumpyRoundTripAndHeaderAlignment() throws {
        let a = NumpyArray(float32: [1, 2, 3, 4, 5, 6], shape: [2, 3])
        let data = a.encoded()
        let headerLen = Int(data[8]) | Int(data[9]) << 8
        XCTAssertEqual((10 + headerLen) % 64, 0)
        let b = try NumpyArray(npyData: data)
        XCTAssertEqual(b.shape, [2, 3])
        XCTAssertEqual(b.floats, [1, 2, 3, 4, 5, 6])
        let header = String(decoding: data[10..<(10 + headerLen)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"))
        XCTAssertThrowsError(try NumpyArray(npyData: data.prefix(data.count - 1)))
        XCTAssertThrowsError(try NumpyArray(npyData: Data("hello world".utf8)))
    }

    func testAtomicWriteReplaces() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bn-core-\(UUID())")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("sub/x.txt")
        try AtomicFile.write("one", to: url)
        try AtomicFile.write("two", to: url)
        XCTAssertEqual(try String(contentsOf: url, encoding: .utf8), "two")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path)
        XCTAssertEqual(leftovers, ["x.txt"])
    }

    func testSplitMixMatchesReferenceSequence() {
        // Reference values from the SplitMix64 paper's C code with seed 0 (also used by the Python scripts).
        var r = SplitMix64(seed: 0)
        XCTAssertEqual(r.next(), 0xE220_A839_7B1D_CDAF)
        XCTAssertEqual(r.next(), 0x6E78_9E6A_A1B9_65F4)
        var u = SplitMix64(seed: 42)
        for _ in 0..<1000 { let x = u.nextUniform(); XCTAssert(x >= 0 && x < 1) }
    }
}
