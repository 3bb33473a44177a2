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
        XCTAssertEqual(thrown as? ImageDecodingError, .tooManyScans(path: "scans.jpg", limit: DecodeOptions.standardMaxJPEGScans))
        let message = "\(thrown.map { "\($0)" } ?? "")"
        XCTAssertTrue(message.hasPrefix("scans.jpg: ") && message.contains("more than 100 scans"), message)
    }

    /// The scan limit is exact and configurable, and scans hidden behind a segment whose payload
    /// holds an end-of-image byte pair are still counted (the walk skips segments by length).
    func testScanLimitIsExactAndCountsPastTablePayloads() throws {
        let progressive = try fixture("jpeg_progressive.jpg")
        let original = HostileImages.scans(of: progressive).scans.count
        XCTAssertGreaterThan(original, 2)
        let reference = try ImageDecoder.decode(data: Data(progressive), name: "ok.jpg")
        let atLimit = HostileImages.jpegRepeatingScan(progressive, totalScans: 40)
        let limit40 = DecodeOptions(maxJPEGScans: 40), limit39 = DecodeOptions(maxJPEGScans: 39)
        let decoded = try ImageDecoder.decode(data: Data(atLimit), name: "40.jpg", options: limit40)
        XCTAssertEqual([decoded.width, decoded.height], [reference.width, reference.height])
        XCTAssertThrowsError(try ImageDecoder.decode(data: Data(atLimit), name: "40.jpg", options: limit39)) {
            XCTAssertEqual($0 as? ImageDecodingError, .tooManyScans(path: "40.jpg", limit: 39))
        }
        // A comment segment holding FF D9 ("end of image") before the extra scans.
        let firstScan = HostileImages.scans(of: atLimit).scans[0]
        let comment: [UInt8] = [0xFF, 0xFE, 0x00, 0x06, 0xFF, 0xD9, 0xFF, 0xD9]
        let hidden = Array(atLimit[..<firstScan.upperBound]) + comment + Array(atLimit[firstScan.upperBound...])
        XCTAssertThrowsError(try ImageDecoder.decode(data: Data(hidden), name: "hidden.jpg", options: limit39)) {
            XCTAssertEqual($0 as? ImageDecodingError, .tooManyScans(path: "hidden.jpg", limit: 39))
        }
        // Header-only reading is not limited by scans.
        XCTAssertEqual(try ImageDecoder.inspect(data: Data(hidden), name: "hidden.jpg").width, reference.width)
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
        let size = (5 << 30) + (try fixture("jpeg_exif6_xmp8.jpg")).count
        var thrown: Error?
        let decodeTime = try seconds { XCTAssertThrowsError(try ImageDecoder.decode(contentsOf: url)) { thrown = $0 } }
        XCTAssertLessThan(decodeTime, 1.0, "refusing a 5 GiB file took \(decodeTime) s")
        XCTAssertEqual(thrown as? ImageDecodingError, .fileTooLarge(path: url.path, bytes: size, limit: 256 << 20))
        let message = "\(thrown.map { "\($0)" } ?? "")"
        XCTAssertTrue(message.hasPrefix(url.path + ": file is 5.0 GiB (\(size) bytes)") && message.contains("limit of 256 MiB"), message)

        // The same for a PNG (IHDR and the chunks before IDAT are all that inspect reads).
        let png = dir.appendingPathComponent("tail.png")
        try Data(try fixture("png_exif_orient6.png")).write(to: png)
        try HostileImages.appendSparseTail(to: png, bytes: 5 << 30)
        let pngTime = try seconds { XCTAssertEqual(try ImageDecoder.inspect(contentsOf: png).orientation, 6) }
        XCTAssertLessThan(pngTime, 1.0, "inspect of a 5 GiB PNG took \(pngTime) s")
        let grown = maxRSSBytes() - rssBefore
        XCTAssertLessThan(grown, 64 << 20, "peak RSS grew by \(grown >> 20) MiB")
    }

    /// The byte limit applies to files and in-memory images, is exact, and its process-wide
    /// default is what new options start with.
    func testByteLimitIsExactAndConfigurable() throws {
        let dir = try Mutations.scratchDirectory("byte-limit")
        defer { try? FileManager.default.removeItem(at: dir) }
        let jpeg = try fixture("jpeg_baseline.jpg")
        let url = dir.appendingPathComponent("padded.jpg")
        let padded = jpeg + [UInt8](repeating: 0, count: 4096 - jpeg.count)  // junk after EOI is tolerated
        try Data(padded).write(to: url)
        XCTAssertEqual(try ImageDecoder.decode(contentsOf: url, options: DecodeOptions(maxFileBytes: 4096)).width, 45)
        XCTAssertThrowsError(try ImageDecoder.decode(contentsOf: url, options: DecodeOptions(maxFileBytes: 4095))) {
            XCTAssertEqual($0 as? ImageDecodingError, .fileTooLarge(path: url.path, bytes: 4096, limit: 4095))
        }
        XCTAssertThrowsError(try ImageDecoder.decode(data: Data(padded), name: "mem.jpg", options: DecodeOptions(maxFileBytes: 4000))) {
            XCTAssertEqual($0 as? ImageDecodingError, .fileTooLarge(path: "mem.jpg", bytes: 4096, limit: 4000))
        }
        let saved = DecodeOptions.defaultMaxFileBytes
        defer { DecodeOptions.defaultMaxFileBytes = saved }
        XCTAssertEqual(saved, DecodeOptions.standardMaxFileBytes)
        DecodeOptions.defaultMaxFileBytes = 1000
        XCTAssertEqual(DecodeOptions().maxFileBytes, 1000)
        XCTAssertThrowsError(try ImageDecoder.decode(contentsOf: url)) {
            XCTAssertEqual($0 as? ImageDecodingError, .fileTooLarge(path: url.path, bytes: 4096, limit: 1000))
        }
        // inspect reads only headers and is not limited by size.
        XCTAssertEqual(try ImageDecoder.inspect(contentsOf: url).width, 45)
    }

    /// Sizes and limits from the environment: parsed with binary suffixes, applied to the
    /// process-wide defaults, and a malformed value is refused naming the variable (changing nothing).
    func testEnvironmentSettings() throws {
        XCTAssertEqual(DecodeLimitSettings.parseByteSize("1048576"), 1 << 20)
        XCTAssertEqual(DecodeLimitSettings.parseByteSize("512K"), 512 << 10)
        XCTAssertEqual(DecodeLimitSettings.parseByteSize("256m"), 256 << 20)
        XCTAssertEqual(DecodeLimitSettings.parseByteSize("2GiB"), 2 << 30)
        XCTAssertEqual(DecodeLimitSettings.parseByteSize("1 GB"), 1 << 30)
        for bad in ["", "0", "-5", "12X", "G", "1.5G", "99999999999999999999", "9000000000T"] {
            XCTAssertNil(DecodeLimitSettings.parseByteSize(bad), bad)
        }
        let savedBytes = DecodeOptions.defaultMaxFileBytes, savedScans = DecodeOptions.defaultMaxJPEGScans
        let savedMemory = DecodeMemoryBudget.shared.capacity
        defer {
            DecodeOptions.defaultMaxFileBytes = savedBytes
            DecodeOptions.defaultMaxJPEGScans = savedScans
            DecodeMemoryBudget.shared.capacity = savedMemory
        }
        XCTAssertEqual(savedMemory, DecodeMemoryBudget.defaultCapacity)
        XCTAssertThrowsError(try DecodeLimitSettings.apply(environment: [
            "BOTTLENECK_MAX_IMAGE_BYTES": "64M", "BOTTLENECK_MAX_JPEG_SCANS": "many",
        ])) {
            XCTAssertEqual("\($0)", "BOTTLENECK_MAX_JPEG_SCANS=many: expected a whole number of scans, at least 1")
        }
        XCTAssertEqual(DecodeOptions.defaultMaxFileBytes, savedBytes, "a refused environment changes nothing")
        try DecodeLimitSettings.apply(environment: [
            "BOTTLENECK_MAX_IMAGE_BYTES": "64M", "BOTTLENECK_DECODE_MEMORY": "512M", "BOTTLENECK_MAX_JPEG_SCANS": "30",
        ])
        XCTAssertEqual(DecodeOptions().maxFileBytes, 64 << 20)
        XCTAssertEqual(DecodeOptions().maxJPEGScans, 30)
        XCTAssertEqual(DecodeMemoryBudget.shared.capacity, 512 << 20)
        XCTAssertTrue(DecodeOptions().memoryBudget === DecodeMemoryBudget.shared)
    }
}
