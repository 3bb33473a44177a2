import BottleneckCore
import BottleneckImage
import Foundation
import XCTest

/// Broken inputs built in memory from the valid fixtures: each must produce the expected typed error
/// naming the file, without crashing and without allocating for absurd declared sizes.
final class CorruptInputTests: XCTestCase {
    enum Kind: String {
        case unreadable, empty, unsupportedFormat, corruptHeader, truncated, tooLarge, corruptData
        case fileTooLarge, tooManyScans, exceedsMemoryBudget
    }

    static func kind(of error: ImageDecodingError) -> Kind {
        switch error {
        case .unreadable: return .unreadable
        case .empty: return .empty
        case .unsupportedFormat: return .unsupportedFormat
        case .corruptHeader: return .corruptHeader
        case .truncated: return .truncated
        case .tooLarge: return .tooLarge
        case .corruptData: return .corruptData
        case .fileTooLarge: return .fileTooLarge
        case .tooManyScans: return .tooManyScans
        case .exceedsMemoryBudget: return .exceedsMemoryBudget
        }
    }

    func fixture(_ file: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: try Fixture.url("decode", file))) }

    /// Offset of the first marker segment of type `marker` (the 0xFF byte) in a JPEG.
    func jpegSegment(_ b: [UInt8], _ marker: UInt8) -> Int? {
        var pos = 2
        while pos + 4 <= b.count, b[pos] == 0xFF {
            if b[pos + 1] == marker { return pos }
            if b[pos + 1] == 0xDA { return nil }
            pos += 2 + (Int(b[pos + 2]) << 8 | Int(b[pos + 3]))
        }
        return nil
    }

    /// Offset of the first chunk of `type` (its length field) in a PNG.
    func pngChunk(_ b: [UInt8], _ type: String) -> Int? {
        var pos = 8
        while pos + 8 <= b.count {
            let len = Int(b[pos]) << 24 | Int(b[pos + 1]) << 16 | Int(b[pos + 2]) << 8 | Int(b[pos + 3])
            if String(decoding: b[(pos + 4)..<(pos + 8)], as: UTF8.self) == type { return pos }
            pos += 12 + len
        }
        return nil
    }

    /// Recomputes the CRC of the chunk at `pos` so that only the intended defect remains.
    func fixCRC(_ b: inout [UInt8], chunkAt pos: Int) {
        let len = Int(b[pos]) << 24 | Int(b[pos + 1]) << 16 | Int(b[pos + 2]) << 8 | Int(b[pos + 3])
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in b[(pos + 4)..<(pos + 8 + len)] {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        crc ^= 0xFFFF_FFFF
        let at = pos + 8 + len
        b[at] = UInt8(crc >> 24); b[at + 1] = UInt8((crc >> 16) & 0xFF); b[at + 2] = UInt8((crc >> 8) & 0xFF); b[at + 3] = UInt8(crc & 0xFF)
    }

    func setBE16(_ b: inout [UInt8], _ at: Int, _ v: Int) { b[at] = UInt8(v >> 8); b[at + 1] = UInt8(v & 0xFF) }
    func setBE32(_ b: inout [UInt8], _ at: Int, _ v: Int) { for i in 0..<4 { b[at + i] = UInt8((v >> (24 - 8 * i)) & 0xFF) } }

    func maxRSSBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int(usage.ru_maxrss) * 1024
    }

    func testCorruptSuite() throws {
        let jpeg = try fixture("jpeg_baseline.jpg")
        let progressive = try fixture("jpeg_progressive.jpg")
        let png = try fixture("png_rgb8.png")
        let interlaced = try fixture("png_interlaced_rgba16.png")
        let ppm = try fixture("ppm_rgb.ppm")
        var rng = SplitMix64(seed: 42)
        let sof = try XCTUnwrap(jpegSegment(jpeg, 0xC0))
        let sos = try XCTUnwrap(jpegSegment(jpeg, 0xDA))
        let idat = try XCTUnwrap(pngChunk(png, "IDAT"))

        var cases: [(String, [UInt8], Kind)] = []
        func add(_ name: String, _ bytes: [UInt8], _ kind: Kind) { cases.append((name, bytes, kind)) }

        add("zero-bytes.jpg", [], .empty)
        add("random.jpg", [0x13, 0x37] + (0..<4096).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, .unsupportedFormat)
        add("text-named.png", Array("this is not an image, just a renamed text file\n".utf8), .unsupportedFormat)
        add("real.gif", Array("GIF89a".utf8) + [1, 0, 1, 0, 0, 0, 0, 0x3B], .unsupportedFormat)
        add("real.bmp", Array("BM".utf8) + [UInt8](repeating: 0, count: 60), .unsupportedFormat)
        add("real.webp", Array("RIFF".utf8) + [30, 0, 0, 0] + Array("WEBPVP8 ".utf8) + [UInt8](repeating: 0, count: 20), .unsupportedFormat)
        add("real.tiff", [0x4D, 0x4D, 0x00, 0x2A, 0, 0, 0, 8, 0, 0], .unsupportedFormat)
        var badSig = png
        badSig[3] = 0x58
        add("bad-png-signature.png", badSig, .unsupportedFormat)

        // JPEG truncations: inside the signature, the marker segments, the scan, and just before EOI.
        for cut in [2, 3, 11, sof + 5, sos + 4, sos + 40, jpeg.count / 2, jpeg.count - 2, jpeg.count - 1] {
            add("jpeg-cut-\(cut).jpg", Array(jpeg[0..<cut]), .truncated)
        }
        add("progressive-cut-half.jpg", Array(progressive[0..<(progressive.count / 2)]), .truncated)
        add("progressive-cut-late.jpg", Array(progressive[0..<(progressive.count - 30)]), .truncated)
        var huge = jpeg
        setBE16(&huge, sof + 5, 65000); setBE16(&huge, sof + 7, 65000)
        add("sof-65000x65000.jpg", huge, .tooLarge)
        var zeroWidth = jpeg
        setBE16(&zeroWidth, sof + 7, 0)
        add("sof-zero-width.jpg", zeroWidth, .corruptHeader)
        var twoComponents = jpeg
        twoComponents[sof + 9] = 2
        add("sof-two-components.jpg", twoComponents, .corruptHeader)
        var twelveBit = jpeg
        twelveBit[sof + 4] = 12
        add("sof-12-bit.jpg", twelveBit, .unsupportedFormat)
        let sofLength = Int(jpeg[sof + 2]) << 8 | Int(jpeg[sof + 3])
        add("no-sof.jpg", Array(jpeg[0..<sof] + jpeg[(sof + 2 + sofLength)...]), .corruptHeader)
        add("bad-marker.jpg", [0xFF, 0xD8, 0xFF, 0x00, 0x00, 0x10] + Array(jpeg[20...]), .corruptHeader)
        add("eoi-only.jpg", [0xFF, 0xD8, 0xFF, 0xD9], .corruptHeader)
        var zeroLength = jpeg
        setBE16(&zeroLength, sof + 2, 0)
        add("segment-length-0.jpg", zeroLength, .corruptHeader)
        if let dht = jpegSegment(jpeg, 0xC4) {
            var bogus = jpeg
            for i in 0..<16 { bogus[dht + 5 + i] = 0xFF }  // code counts far beyond 256 symbols
            add("bogus-huffman.jpg", bogus, .corruptHeader)
        }
        var garbage = Array(jpeg[0..<(sos + 14)])
        garbage += (0..<3000).map { _ in UInt8(truncatingIfNeeded: rng.next() % 255) }  // never 0xFF: no markers
        add("garbage-after-header.jpg", garbage, .truncated)

        // PNG truncations and header defects.
        for cut in [4, 20, 33, idat + 30, png.count / 2, png.count - 20] {
            add("png-cut-\(cut).png", Array(png[0..<cut]), .truncated)
        }
        add("interlaced-cut-half.png", Array(interlaced[0..<(interlaced.count / 2)]), .truncated)
        var hugePNG = png
        setBE32(&hugePNG, 16, 100_000); setBE32(&hugePNG, 20, 100_000); fixCRC(&hugePNG, chunkAt: 8)
        add("ihdr-100000x100000.png", hugePNG, .tooLarge)
        var zeroPNG = png
        setBE32(&zeroPNG, 16, 0); fixCRC(&zeroPNG, chunkAt: 8)
        add("ihdr-zero-width.png", zeroPNG, .corruptHeader)
        var colorType5 = png
        colorType5[25] = 5; fixCRC(&colorType5, chunkAt: 8)
        add("ihdr-color-type-5.png", colorType5, .corruptHeader)
        var rgb4 = png
        rgb4[24] = 4; fixCRC(&rgb4, chunkAt: 8)
        add("ihdr-rgb-4-bit.png", rgb4, .corruptHeader)
        var ihdrCRC = png
        ihdrCRC[29] ^= 0xFF
        add("ihdr-bad-crc.png", ihdrCRC, .corruptHeader)
        var idatCRC = png
        idatCRC[idat + 8 + 50] ^= 0x55
        add("idat-bad-crc.png", idatCRC, .corruptData)
        var idatZlib = png
        for i in 0..<40 { idatZlib[idat + 8 + 2 + i] = 0xFF }  // invalid deflate block, CRC made valid
        fixCRC(&idatZlib, chunkAt: idat)
        add("idat-bad-deflate.png", idatZlib, .corruptData)

        // PPM / PGM.
        add("ppm-cut.ppm", Array(ppm[0..<(ppm.count - 7)]), .truncated)
        add("ppm-header-only.ppm", Array("P6\n45 29\n".utf8), .truncated)
        add("ppm-zero.ppm", Array("P6\n0 29\n255\n".utf8) + [1, 2, 3], .corruptHeader)
        add("ppm-maxval-1000.ppm", Array("P6\n2 2\n1000\n".utf8) + [UInt8](repeating: 0, count: 24), .unsupportedFormat)
        add("ppm-100000x100000.ppm", Array("P6\n100000 100000\n255\n".utf8) + [1, 2, 3], .tooLarge)
        add("ppm-not-a-number.ppm", Array("P6\nwide 29\n255\n".utf8), .corruptHeader)
        add("ascii-p3.ppm", Array("P3\n1 1\n255\n1 2 3\n".utf8), .unsupportedFormat)

        XCTAssertGreaterThanOrEqual(cases.count, 30)
        let rssBefore = maxRSSBytes()
        var summary: [Kind: Int] = [:]
        for (name, bytes, expected) in cases {
            do {
                let image = try ImageDecoder.decode(data: Data(bytes), name: name)
                XCTFail("\(name): decoded to \(image.width)x\(image.height) instead of failing with \(expected)")
            } catch let error as ImageDecodingError {
                XCTAssertEqual(Self.kind(of: error), expected, "\(name): \(error)")
                XCTAssertEqual(error.path, name)
                XCTAssertTrue(error.description.hasPrefix("\(name): "), error.description)
                summary[Self.kind(of: error), default: 0] += 1
            }
            // inspect must also survive every input (it may succeed on data-only damage).
            _ = try? ImageDecoder.inspect(data: Data(bytes), name: name)
        }
        let grown = maxRSSBytes() - rssBefore
        XCTAssertLessThan(grown, 256 << 20, "decoding broken files raised peak RSS by \(grown >> 20) MiB")
        print("corrupt suite: \(cases.count) inputs, errors by kind: \(summary.map { "\($0.key.rawValue)=\($0.value)" }.sorted())")
    }

    /// Damage that Pillow tolerates must not be an error here either: junk after EOI / IEND and
    /// extraneous bytes between JPEG segments (libjpeg only warns).
    func testToleratedDamageStillDecodes() throws {
        let jpeg = try fixture("jpeg_baseline.jpg")
        let png = try fixture("png_rgb8.png")
        let reference = try ImageDecoder.decode(data: Data(jpeg), name: "ok.jpg")
        let trailing = try ImageDecoder.decode(data: Data(jpeg + Array("trailing junk".utf8)), name: "junk.jpg")
        XCTAssertEqual(trailing, reference)
        let extraneous = Array(jpeg[0..<(jpeg.count - 2)]) + [0x00, 0x11, 0x22] + [0xFF, 0xD9]
        XCTAssertEqual(try ImageDecoder.decode(data: Data(extraneous), name: "extraneous.jpg"), reference)
        let pngRef = try ImageDecoder.decode(data: Data(png), name: "ok.png")
        XCTAssertEqual(try ImageDecoder.decode(data: Data(png + [1, 2, 3, 4, 5]), name: "junk.png"), pngRef)
    }

    func testFileLevelErrors() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bn-corrupt-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let empty = dir.appendingPathComponent("empty.jpg")
        XCTAssertTrue(FileManager.default.createFile(atPath: empty.path, contents: Data()))
        XCTAssertThrowsError(try ImageDecoder.decode(contentsOf: empty)) { XCTAssertEqual($0 as? ImageDecodingError, .empty(path: empty.path)) }
        let missing = dir.appendingPathComponent("missing.png")
        XCTAssertThrowsError(try ImageDecoder.decode(contentsOf: missing)) {
            guard case .unreadable(let path, _)? = $0 as? ImageDecodingError else { return XCTFail("\($0)") }
            XCTAssertEqual(path, missing.path)
        }
        XCTAssertThrowsError(try ImageDecoder.inspect(contentsOf: dir)) {
            guard case .unreadable? = $0 as? ImageDecodingError else { return XCTFail("\($0)") }
        }
        // A FIFO with no writer would block a plain read forever: refused without reading.
        let fifo = dir.appendingPathComponent("pipe.jpg")
        XCTAssertEqual(mkfifo(fifo.path, 0o600), 0)
        for attempt in [{ _ = try ImageDecoder.inspect(contentsOf: fifo) }, { _ = try ImageDecoder.decode(contentsOf: fifo) }] {
            XCTAssertThrowsError(try attempt()) {
                XCTAssertEqual($0 as? ImageDecodingError, .unreadable(path: fifo.path, reason: "is not a regular file"))
            }
        }
    }

    /// Every JPEG of the real ants/bees set decodes; its one GIF is reported as unsupported.
    func testHymenopteraDataset() throws {
        let root = Fixture.packageRoot.appendingPathComponent("../shared/datasets/hymenoptera").standardizedFileURL
        guard FileManager.default.fileExists(atPath: root.path) else {
            throw XCTSkip("../shared/datasets/hymenoptera not found: \(root.path)")
        }
        let files = FileManager.default.enumerator(at: root, includingPropertiesForKeys: nil)!
            .compactMap { $0 as? URL }.filter { ["jpg", "jpeg"].contains($0.pathExtension.lowercased()) }
        XCTAssertGreaterThan(files.count, 300)
        let collector = FailureCollector()
        DispatchQueue.concurrentPerform(iterations: 2) { part in
            for (i, url) in files.enumerated() where i % 2 == part {
                do {
                    let image = try ImageDecoder.decode(contentsOf: url)
                    if image.width < 1 || image.pixels.count != image.width * image.height * 3 { collector.add(url.path) }
                } catch { collector.add("\(error)") }
            }
        }
        let failures = collector.items
        XCTAssertEqual(failures, [], "\(failures.count) dataset JPEGs failed")
        let gif = root.appendingPathComponent("train/ants/imageNotFound.gif")
        if FileManager.default.fileExists(atPath: gif.path) {
            XCTAssertThrowsError(try ImageDecoder.decode(contentsOf: gif)) {
                XCTAssertEqual($0 as? ImageDecodingError, .unsupportedFormat(path: gif.path, detected: "gif"))
            }
        }
    }
}


/// Failure messages gathered from concurrent workers.
private final class FailureCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
    var items: [String] { lock.lock(); defer { lock.unlock() }; return list }
}
