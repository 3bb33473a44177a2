import BottleneckCore
import BottleneckImage
import BottleneckTestSupport
import Foundation
import XCTest

/// Resource limits of the decoder (issue 27 findings 5-7): decode work, bytes read, memory.
final class DecodeLimitTests: XCTestCase {
    func fixture(_ file: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: try Fixture.url("decode", file))) }

    func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    func maxRSSBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int(usage.ru_maxrss) * 1024
    }

    /// Finding 5: a progressive JPEG whose scans repeat thousands of times is refused before
    /// decoding instead of costing one pass over the image per scan.
    func testJPEGWithThousandsOfScansIsRefusedQuickly() throws {
        let progressive = try fixture("jpeg_progressive.jpg")
        // 2000x2000 frame: libjpeg visits 62,500 blocks per component in every scan.
        let hostile = HostileImages.jpegRepeatingScan(HostileImages.settingJPEGFrameSize(progressive, width: 2000, height: 2000),
                                                      totalScans: 5000)
        XCTAssertEqual(HostileImages.scans(of: hostile).scans.count, 5000)
        var thrown: Error?
        let elapsed = try seconds {
            XCTAssertThrowsError(try ImageDecoder.decode(data: Data(hostile), name: "scans.jpg")) { thrown = $0 }
        }
        XCTAssertLessThan(elapsed, 1.0, "refusing a 5000-scan JPEG took \(elapsed) s")
        let message = "\(thrown.map { "\($0)" } ?? "")"
        XCTAssertTrue(message.hasPrefix("scans.jpg: ") && message.contains("scans"), message)
    }

    /// Finding 6: `inspect` of a JPEG followed by a 5 GiB hole reads only the headers, and decoding
    /// it is refused by the byte limit before anything is read.
    func testHugeFileIsNeverReadWhole() throws {
        let dir = try Mutations.scratchDirectory("decode-limits")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("tail.jpg")
        try Data(try fixture("jpeg_exif6_xmp8.jpg")).write(to: url)
        try HostileImages.appendSparseTail(to: url, bytes: 5 << 30)
        let rssBefore = maxRSSBytes()
        var info: ImageInfo?
        let inspectTime = try seconds { info = try ImageDecoder.inspect(contentsOf: url) }
        XCTAssertEqual(info?.width, 45)
        XCTAssertEqual(info?.orientation, 6)
        XCTAssertLessThan(inspectTime, 1.0, "inspect of a 5 GiB file took \(inspectTime) s")
        var thrown: Error?
        let decodeTime = try seconds { XCTAssertThrowsError(try ImageDecoder.decode(contentsOf: url)) { thrown = $0 } }
        XCTAssertLessThan(decodeTime, 1.0, "refusing a 5 GiB file took \(decodeTime) s")
        let message = "\(thrown.map { "\($0)" } ?? "")"
        XCTAssertTrue(message.hasPrefix(url.path + ": ") && message.contains("limit"), message)
        let grown = maxRSSBytes() - rssBefore
        XCTAssertLessThan(grown, 64 << 20, "peak RSS grew by \(grown >> 20) MiB")
    }
}
