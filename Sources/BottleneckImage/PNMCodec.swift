import Foundation

/// Binary PPM (P6) and PGM (P5) with maxval 255 or 65535 (16-bit RGB keeps the high byte like Pillow's "RGB;16B").
enum PNMCodec {
    struct Header {
        var info: ImageInfo
        var dataOffset: Int
        var channels: Int
        var bytesPerSample: Int
    }

    static func parseHeader(_ b: UnsafeBufferPointer<UInt8>, name: String) throws -> Header {
        let n = b.count
        guard n >= 2, b[0] == UInt8(ascii: "P") else { throw ImageDecodingError.corruptHeader(path: name, reason: "bad PNM signature") }
        let kind = b[1]
        guard kind == UInt8(ascii: "5") || kind == UInt8(ascii: "6") else {
            throw ImageDecodingError.unsupportedFormat(path: name, detected: "ppm (ASCII P\(Character(UnicodeScalar(kind))))")
        }
        var pos = 2
        func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == 0x0B || c == 0x0C }
        func field(_ what: String) throws -> Int {
            while pos < n {
                if isSpace(b[pos]) { pos += 1 }
                else if b[pos] == UInt8(ascii: "#") { while pos < n, b[pos] != 0x0A { pos += 1 } }
                else { break }
            }
            guard pos < n else { throw ImageDecodingError.truncated(path: name, reason: "file ends before the \(what)") }
            var v = 0, digits = 0
            while pos < n, (0x30...0x39).contains(b[pos]) {
                v = v * 10 + Int(b[pos] - 0x30)
                digits += 1
                pos += 1
                guard v <= 0x7FFF_FFFF else { throw ImageDecodingError.corruptHeader(path: name, reason: "\(what) too large") }
            }
            guard digits > 0 else { throw ImageDecodingError.corruptHeader(path: name, reason: "\(what) is not a number") }
            return v
        }
        let width = try field("width"), height = try field("height"), maxval = try field("maxval")
        guard pos < n else { throw ImageDecodingError.truncated(path: name, reason: "file ends after the header") }
        guard isSpace(b[pos]) else { throw ImageDecodingError.corruptHeader(path: name, reason: "no whitespace after maxval") }
        pos += 1
        guard width > 0, height > 0 else { throw ImageDecodingError.corruptHeader(path: name, reason: "image size \(width)x\(height)") }
        guard maxval == 255 || maxval == 65535 else {
            throw ImageDecodingError.unsupportedFormat(path: name, detected: "ppm (maxval \(maxval); only 255 and 65535 are supported)")
        }
        let channels = kind == UInt8(ascii: "6") ? 3 : 1
        let info = ImageInfo(format: .ppm, width: width, height: height, colorModel: channels == 3 ? "RGB" : "Gray",
                             bitDepth: maxval == 255 ? 8 : 16, orientation: 1, progressive: false, interlaced: false)
        return Header(info: info, dataOffset: pos, channels: channels, bytesPerSample: maxval == 255 ? 1 : 2)
    }

    static func decode(_ b: UnsafeBufferPointer<UInt8>, name: String, options: DecodeOptions) throws -> RGBImage {
        let h = try parseHeader(b, name: name)
        let w = h.info.width, ht = h.info.height
        guard w * ht <= options.maxPixels else { throw ImageDecodingError.tooLarge(path: name, width: w, height: ht) }
        let need = w * ht * h.channels * h.bytesPerSample
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
