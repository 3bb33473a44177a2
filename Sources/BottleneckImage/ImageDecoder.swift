import Foundation

/// Decodes JPEG, PNG and PPM/PGM files to 8-bit RGB exactly as Pillow's
/// `ImageOps.exif_transpose(Image.open(f)).convert("RGB")` does (JPEG within ±1 per channel because
/// Pillow bundles a different libjpeg-turbo release; PNG and PPM bit-exact).
///
/// All entry points are thread-safe and never abort on malformed input: every failure is an
/// ``ImageDecodingError`` that names the file. Declared dimensions are checked against
/// ``DecodeOptions/maxPixels`` before pixel memory is allocated.
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
    /// - Throws: ``ImageDecodingError`` naming `url.path`.
    public static func decode(contentsOf url: URL, options: DecodeOptions = .init()) throws -> RGBImage {
        try decode(data: readFile(url), name: url.path, options: options)
    }

    /// Decodes an in-memory file; `name` is only used in error messages.
    ///
    /// Cost: one decode plus, for EXIF orientations 2-8, one O(width x height) transpose.
    /// - Throws: ``ImageDecodingError``.
    public static func decode(data: Data, name: String, options: DecodeOptions = .init()) throws -> RGBImage {
        if data.isEmpty { throw ImageDecodingError.empty(path: name) }
        let format = sniff(data)
        return try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> RGBImage in
            let bytes = raw.bindMemory(to: UInt8.self)
            switch format {
            case .jpeg: return try JPEGCodec.decode(bytes, name: name, options: options)
            case .png: return try PNGCodec.decode(bytes, name: name, options: options)
            case .ppm: return try PNMCodec.decode(bytes, name: name, options: options)
            default: throw ImageDecodingError.unsupportedFormat(path: name, detected: format.rawValue)
            }
        }
    }

    /// Reads only the headers of the file at `url` (format, stored size, color model, orientation).
    /// - Throws: ``ImageDecodingError`` for unreadable, empty, unsupported or malformed files.
    public static func inspect(contentsOf url: URL) throws -> ImageInfo {
        try inspect(data: readFile(url), name: url.path)
    }

    /// Header facts for an in-memory file; `name` is only used in error messages.
    public static func inspect(data: Data, name: String) throws -> ImageInfo {
        if data.isEmpty { throw ImageDecodingError.empty(path: name) }
        let format = sniff(data)
        return try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> ImageInfo in
            let bytes = raw.bindMemory(to: UInt8.self)
            switch format {
            case .jpeg: return try JPEGCodec.parseHeader(bytes, name: name).info
            case .png: return try PNGCodec.parseHeader(bytes, name: name).info
            case .ppm: return try PNMCodec.parseHeader(bytes, name: name).info
            default: throw ImageDecodingError.unsupportedFormat(path: name, detected: format.rawValue)
            }
        }
    }

    static func readFile(_ url: URL) throws -> Data {
        do {
            return try Data(contentsOf: url, options: .mappedIfSafe)
        } catch {
            let ns = error as NSError
            let reason = (ns.userInfo[NSUnderlyingErrorKey] as? NSError)?.localizedDescription ?? ns.localizedDescription
            throw ImageDecodingError.unreadable(path: url.path, reason: reason)
        }
    }
}
