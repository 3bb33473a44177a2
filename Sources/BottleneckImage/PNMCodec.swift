import BottleneckCore
import Foundation

/// Binary PPM (P6) and PGM (P5) with maxval 255 or 65535 (16-bit RGB keeps the high byte like Pillow's "RGB;16B").
enum PNMCodec {
    struct Header {
        var info: ImageInfo
        var dataOffset: Int
        var channels: Int
        var bytesPerSample: Int
    }

    /// The text header must end within this many bytes (it is a few dozen unless comments pad it).
    static let maxHeaderBytes = 65536

    /// Parses the text header ("P5"/"P6", width, height, maxval, comments) from a bounded prefix.
    /// - Throws: ``ImageDecodingError`` (`truncated` / `corruptHeader` / `unsupportedFormat`).
    static func parseHeader(_ source: ImageByteSource) throws -> Header {
        let name = source.path
        var r = try source.reader(at: 0, count: maxHeaderBytes)
        let wholeFile = r.remaining == source.size
        func ended(_ what: String) -> ImageDecodingError {
            wholeFile ? .truncated(path: name, reason: "file ends \(what)")
                : .corruptHeader(path: name, reason: "header longer than \(maxHeaderBytes) bytes")
        }
        guard r.remaining >= 2, r.peek(0) == UInt8(ascii: "P") else { throw ImageDecodingError.corruptHeader(path: name, reason: "bad PNM signature") }
        let kind = r.peek(1) ?? 0
        guard kind == UInt8(ascii: "5") || kind == UInt8(ascii: "6") else {
            throw ImageDecodingError.unsupportedFormat(path: name, detected: "ppm (ASCII P\(Character(UnicodeScalar(kind))))")
        }
        try r.skip(2, "signature")
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == 0x0B || c == 0x0C }
        func field(_ what: String) throws -> Int {
            while let c = r.peek() {
                if isSpace(c) { try r.skip(1) }
                else if c == UInt8(ascii: "#") { while let d = r.peek(), d != 0x0A { try r.skip(1) } }
                else { break }
            }
            guard !r.isAtEnd else { throw ended("before the \(what)") }
            var v = 0, digits = 0
            while let c = r.peek(), (0x30...0x39).contains(c) {
                v = v * 10 + Int(c - 0x30)
                digits += 1
                try r.skip(1)
                guard v <= 0x7FFF_FFFF else { throw ImageDecodingError.corruptHeader(path: name, reason: "\(what) too large") }
            }
            guard digits > 0 else { throw ImageDecodingError.corruptHeader(path: name, reason: "\(what) is not a number") }
            return v
        }
        let width = try field("width"), height = try field("height"), maxval = try field("maxval")
        guard let separator = r.peek() else { throw ended("after the header") }
        guard isSpace(separator) else { throw ImageDecodingError.corruptHeader(path: name, reason: "no whitespace after maxval") }
        try r.skip(1)
        guard width > 0, height > 0 else { throw ImageDecodingError.corruptHeader(path: name, reason: "image size \(width)x\(height)") }
        guard maxval == 255 || maxval == 65535 else {
            throw ImageDecodingError.unsupportedFormat(path: name, detected: "ppm (maxval \(maxval); only 255 and 65535 are supported)")
        }
        let channels = kind == UInt8(ascii: "6") ? 3 : 1
        let info = ImageInfo(format: .ppm, width: width, height: height, colorModel: channels == 3 ? "RGB" : "Gray",
                             bitDepth: maxval == 255 ? 8 : 16, orientation: 1, progressive: false, interlaced: false)
        return Header(info: info, dataOffset: r.position, channels: channels, bytesPerSample: maxval == 255 ? 1 : 2)
    }

    /// Peak bytes a decode allocates besides the file: the RGB output.
    static func memoryEstimate(_ header: Header) -> Int {
        Saturating.mul(Saturating.mul(header.info.width, header.info.height), 3)
    }

    /// Converts the samples of the whole file `b` whose header is `header`. The caller has checked
    /// the pixel limit and reserved ``memoryEstimate(_:)``.
    static func decode(_ b: UnsafeBufferPointer<UInt8>, header h: Header, name: String) throws -> RGBImage {
        let w = h.info.width, ht = h.info.height
        guard let need = CheckedSize.product([w, ht, h.channels, h.bytesPerSample]) else {
            throw ImageDecodingError.tooLarge(path: name, width: w, height: ht)
        }
        guard b.count - h.dataOffset >= need else {
            throw ImageDecodingError.truncated(path: name, reason: "\(b.count - h.dataOffset) of \(need) pixel bytes present")
        }
        var out = [UInt8](repeating: 0, count: w * ht * 3)
        out.withUnsafeMutableBufferPointer { dst in
            let step = h.bytesPerSample
            for i in 0..<(w * ht) {
                if h.channels == 3 {
                    let s = h.dataOffset + i * 3 * step
                    dst[i * 3] = b[s]
                    dst[i * 3 + 1] = b[s + step]
                    dst[i * 3 + 2] = b[s + 2 * step]
                } else {
                    // 16-bit gray opens as Pillow mode "I", whose RGB conversion clips at 255.
                    let s = h.dataOffset + i * step
                    let v = step == 1 ? b[s] : UInt8(min(255, Int(b[s]) << 8 | Int(b[s + 1])))
                    dst[i * 3] = v
                    dst[i * 3 + 1] = v
                    dst[i * 3 + 2] = v
                }
            }
        }
        return RGBImage(width: w, height: ht, pixels: out)
    }
}
