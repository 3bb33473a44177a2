import BottleneckCore
import Foundation

/// Decodes JPEG, PNG and PPM/PGM files to 8-bit RGB exactly as Pillow's
/// `ImageOps.exif_transpose(Image.open(f)).convert("RGB")` does (JPEG within ±1 per channel because
/// Pillow bundles a different libjpeg-turbo release; PNG and PPM bit-exact).
///
/// All entry points are thread-safe and never abort on malformed input: every failure is an
/// ``ImageDecodingError`` that names the file. File size, declared dimensions, memory and JPEG scan
/// count are checked against ``DecodeOptions`` before the bytes are read or pixel memory is allocated.
public enum ImageDecoder {
    /// Detects the container format from the leading bytes (the file name is never consulted).
    ///
    /// A proper prefix of the JPEG or PNG signature counts as that format so that files cut short
    /// inside the signature are reported as truncated rather than unsupported.
    public static func sniff(_ bytes: Data) -> ImageFormat {
        let n = min(bytes.count, 16)
        var head = [UInt8](repeating: 0, count: n)
        bytes.copyBytes(to: &head, from: bytes.startIndex..<(bytes.startIndex + n))
        return sniff(head: head)
    }

    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    static func sniff(head: [UInt8]) -> ImageFormat {
        let n = head.count
        func starts(_ sig: [UInt8]) -> Bool { n >= sig.count && Array(head[0..<sig.count]) == sig }
        if n >= 2, head[0] == 0xFF, head[1] == 0xD8, n == 2 || head[2] == 0xFF { return .jpeg }
        if n > 0, n < 8, Array(head) == Array(pngSignature[0..<n]) { return .png }
        if starts(pngSignature) { return .png }
        if n >= 3, head[0] == UInt8(ascii: "P"), (UInt8(ascii: "2")...UInt8(ascii: "6")).contains(head[1]),
           [0x20, 0x09, 0x0A, 0x0D].contains(head[2]) { return .ppm }
        if starts(Array("GIF87a".utf8)) || starts(Array("GIF89a".utf8)) { return .gif }
        if n >= 12, starts(Array("RIFF".utf8)), Array(head[8..<12]) == Array("WEBP".utf8) { return .webp }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return .tiff }
        if starts(Array("BM".utf8)), n >= 14 { return .bmp }
        return .unknown
    }

    /// Reads and decodes the file at `url`.
    ///
    /// Limits, each checked before what it guards is spent: the file size against
    /// ``DecodeOptions/maxFileBytes`` (nothing is read), the declared pixels against
    /// ``DecodeOptions/maxPixels`` and the estimated memory (file bytes included) against
    /// ``DecodeOptions/memoryBudget`` (waiting for room while other decodes hold it), then a
    /// JPEG's scan count against ``DecodeOptions/maxJPEGScans``.
    /// - Throws: ``ImageDecodingError`` naming `url.path`.
    public static func decode(contentsOf url: URL, options: DecodeOptions = .init()) throws -> RGBImage {
        try decode(ImageByteSource(contentsOf: url), options: options, ownsBytes: true)
    }

    /// Decodes an in-memory file; `name` is only used in error messages. The same limits apply as
    /// for ``decode(contentsOf:options:)``, except that `data` (the caller's) is not counted against
    /// the memory budget.
    ///
    /// Cost: one decode plus, for EXIF orientations 2-8, one O(width x height) transpose.
    /// - Throws: ``ImageDecodingError``.
    public static func decode(data: Data, name: String, options: DecodeOptions = .init()) throws -> RGBImage {
        try decode(ImageByteSource(data: data, path: name), options: options, ownsBytes: false)
    }

    /// Reads only the headers of the file at `url` (format, stored size, color model, orientation):
    /// a bounded prefix and the marker segments or chunks before the image data, skipping what it
    /// does not need, so the cost does not grow with the file's size.
    /// - Throws: ``ImageDecodingError`` for unreadable, empty, unsupported or malformed files.
    public static func inspect(contentsOf url: URL) throws -> ImageInfo {
        try parseHeader(ImageByteSource(contentsOf: url)).info
    }

    /// Header facts for an in-memory file; `name` is only used in error messages.
    public static func inspect(data: Data, name: String) throws -> ImageInfo {
        try parseHeader(ImageByteSource(data: data, path: name)).info
    }

    /// A parsed header of a decodable format.
    enum Header {
        case jpeg(JPEGCodec.Header)
        case png(PNGCodec.Header)
        case ppm(PNMCodec.Header)

        var info: ImageInfo {
            switch self {
            case .jpeg(let h): return h.info
            case .png(let h): return h.info
            case .ppm(let h): return h.info
            }
        }
    }

    /// Sniffs the format from the first bytes and parses its header with bounded reads.
    static func parseHeader(_ source: ImageByteSource) throws -> Header {
        if source.size == 0 { throw ImageDecodingError.empty(path: source.path) }
        let head = try source.bytes(at: 0, count: 16)
        switch sniff(head: head) {
        case .jpeg: return .jpeg(try JPEGCodec.parseHeader(source))
        case .png: return .png(try PNGCodec.parseHeader(source))
        case .ppm: return .ppm(try PNMCodec.parseHeader(source))
        case let other: throw ImageDecodingError.unsupportedFormat(path: source.path, detected: other.rawValue)
        }
    }

    /// Columns of the resize working buffer counted for ``DecodeOptions/MemoryHold/untilImageReleased``:
    /// the preprocessor's horizontal pass keeps (rows read) x (crop width) x 3 bytes, and crops up
    /// to this width are covered.
    static let resizeWorkingColumns = 512

    /// Small allocations of every decode (library state, tables, row pointers, error strings).
    static let fixedOverhead = 1 << 20

    /// Peak bytes a decode of `header` needs: `fileBytes` (the bytes read, when the decoder reads
    /// them) plus the decoder's buffers and output (see each codec's `memoryEstimate`) plus
    /// ``fixedOverhead``, plus a resize working buffer when the reservation outlives the decode.
    /// Saturates at `Int.max`.
    static func memoryEstimate(of header: Header, fileBytes: Int, options: DecodeOptions) -> Int {
        let decoding: Int
        switch header {
        case .jpeg(let h): decoding = JPEGCodec.memoryEstimate(h, options: options)
        case .png(let h): decoding = PNGCodec.memoryEstimate(h)
        case .ppm(let h): decoding = PNMCodec.memoryEstimate(h)
        }
        var total = Saturating.add(Saturating.add(fileBytes, decoding), fixedOverhead)
        if options.memoryHold == .untilImageReleased {
            let longer = max(header.info.width, header.info.height)
            total = Saturating.add(total, Saturating.mul(longer, 3 * resizeWorkingColumns))
        }
        return total
    }

    /// The decode behind both public entry points; `ownsBytes` says whether the decoder reads the
    /// bytes into memory itself (so they count against the budget).
    static func decode(_ source: ImageByteSource, options: DecodeOptions, ownsBytes: Bool) throws -> RGBImage {
        let name = source.path
        if source.size == 0 { throw ImageDecodingError.empty(path: name) }
        guard source.size <= options.maxFileBytes else {
            throw ImageDecodingError.fileTooLarge(path: name, bytes: source.size, limit: options.maxFileBytes)
        }
        let header = try parseHeader(source)
        let info = header.info
        guard let pixels = CheckedSize.multiply(info.width, info.height), pixels <= options.maxPixels else {
            throw ImageDecodingError.tooLarge(path: name, width: info.width, height: info.height)
        }
        let need = memoryEstimate(of: header, fileBytes: ownsBytes ? source.size : 0, options: options)
        let reservation = try options.memoryBudget.reserve(need, for: name)
        var image: RGBImage
        do {
            image = try source.withAllBytes { bytes -> RGBImage in
                switch header {
                case .jpeg(let h): return try JPEGCodec.decode(bytes, header: h, name: name, options: options)
                case .png(let h): return try PNGCodec.decode(bytes, header: h, name: name)
                case .ppm(let h): return try PNMCodec.decode(bytes, header: h, name: name)
                }
            }
        } catch {
            reservation.release()
            throw error
        }
        switch options.memoryHold {
        case .whileDecoding: reservation.release()
        case .untilImageReleased: image.memoryReservation = reservation
        }
        return image
    }
}

/// Size arithmetic for memory estimates: like ``CheckedSize`` but saturating at `Int.max`, so an
/// absurd estimate is simply refused by the budget.
enum Saturating {
    static func mul(_ a: Int, _ b: Int) -> Int { CheckedSize.multiply(a, b) ?? Int.max }
    static func add(_ a: Int, _ b: Int) -> Int { CheckedSize.add(a, b) ?? Int.max }
}
