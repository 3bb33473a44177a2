import CJPEG
import Foundation

/// JPEG decoding through the TurboJPEG API (error codes, never the exit()ing libjpeg error handler).
enum JPEGCodec {
    /// Facts from the marker segments before the first scan.
    struct Header {
        var info: ImageInfo
        /// Offset of the first SOS marker; an EOI after it means the entropy-coded data is complete.
        var scanOffset: Int
    }

    static let xmpPrefix = Array("http://ns.adobe.com/xap/1.0/\u{0}".utf8)

    /// Walks the marker segments up to the first SOS: SOF (size, components, progressive),
    /// APP1 Exif (orientation, both byte orders), APP1 XMP (orientation fallback) and APP14 Adobe (color transform).
    static func parseHeader(_ b: UnsafeBufferPointer<UInt8>, name: String) throws -> Header {
        let n = b.count
        guard n >= 3 else { throw ImageDecodingError.truncated(path: name, reason: "file ends inside the JPEG signature") }
        var pos = 2
        var exifOrientation: Int? = nil, xmpOrientation: Int? = nil, sawExif = false, sawXMP = false
        var adobeTransform: Int? = nil
        var sof: (width: Int, height: Int, components: Int, bits: Int, progressive: Bool)? = nil
        while true {
            guard pos < n else {
                throw ImageDecodingError.truncated(path: name, reason: "file ends before the image data (offset \(pos))")
            }
            guard b[pos] == 0xFF else {
                throw ImageDecodingError.corruptHeader(path: name, reason: "expected a marker at offset \(pos), found 0x\(String(b[pos], radix: 16))")
            }
            while pos < n, b[pos] == 0xFF { pos += 1 }  // fill bytes
            guard pos < n else { throw ImageDecodingError.truncated(path: name, reason: "file ends inside a marker") }
            let marker = b[pos]
            pos += 1
            if marker == 0xD8 || marker == 0x01 || (0xD0...0xD7).contains(marker) { continue }
            if marker == 0x00 { throw ImageDecodingError.corruptHeader(path: name, reason: "invalid marker 0xFF00 at offset \(pos - 2)") }
            if marker == 0xD9 { throw ImageDecodingError.corruptHeader(path: name, reason: "end of image before any scan") }
            guard pos + 2 <= n else { throw ImageDecodingError.truncated(path: name, reason: "file ends inside a marker segment") }
            let length = Int(b[pos]) << 8 | Int(b[pos + 1])
            guard length >= 2 else {
                throw ImageDecodingError.corruptHeader(path: name, reason: "marker 0x\(String(marker, radix: 16)) has invalid length \(length)")
            }
            let seg = pos + 2, end = pos + length
            if marker == 0xDA {
                guard end <= n else { throw ImageDecodingError.truncated(path: name, reason: "file ends inside the scan header") }
                guard let f = sof else { throw ImageDecodingError.corruptHeader(path: name, reason: "scan before frame header (no SOF)") }
                let model: String
                switch f.components {
                case 1: model = "Gray"
                case 3: model = "RGB"
                case 4: model = adobeTransform == 2 ? "YCCK" : "CMYK"
                default: throw ImageDecodingError.corruptHeader(path: name, reason: "\(f.components) color components")
                }
                let info = ImageInfo(format: .jpeg, width: f.width, height: f.height, colorModel: model, bitDepth: f.bits,
                                     orientation: Orientation.resolve(exif: exifOrientation, xmp: xmpOrientation), progressive: f.progressive, interlaced: false)
                return Header(info: info, scanOffset: pos - 1)
            }
            guard end <= n else {
                throw ImageDecodingError.truncated(path: name, reason: "file ends inside marker 0x\(String(marker, radix: 16)) segment")
            }
            switch marker {
            case 0xC0...0xCF where marker != 0xC4 && marker != 0xC8 && marker != 0xCC:
                guard length >= 8 else { throw ImageDecodingError.corruptHeader(path: name, reason: "frame header too short") }
                let h = Int(b[seg + 1]) << 8 | Int(b[seg + 2])
                let w = Int(b[seg + 3]) << 8 | Int(b[seg + 4])
                guard w > 0, h > 0 else { throw ImageDecodingError.corruptHeader(path: name, reason: "frame size \(w)x\(h)") }
                if sof == nil {
                    sof = (w, h, Int(b[seg + 5]), Int(b[seg]), [0xC2, 0xC6, 0xCA, 0xCE].contains(marker))
                }
            case 0xE1:
                if !sawExif, length >= 2 + 6, b[seg] == 0x45, b[seg + 1] == 0x78, b[seg + 2] == 0x69, b[seg + 3] == 0x66,
                   b[seg + 4] == 0, b[seg + 5] == 0 {
                    sawExif = true
                    exifOrientation = Orientation.fromTIFF(b, start: seg + 6, end: end)
                } else if !sawXMP, length >= 2 + xmpPrefix.count,
                          (0..<xmpPrefix.count).allSatisfy({ b[seg + $0] == xmpPrefix[$0] }) {
                    sawXMP = true
                    xmpOrientation = Orientation.fromXMP(b, start: seg + xmpPrefix.count, end: end)
                }
            case 0xEE where length >= 2 + 12:
                if b[seg] == 0x41, b[seg + 1] == 0x64, b[seg + 2] == 0x6F, b[seg + 3] == 0x62, b[seg + 4] == 0x65 {
                    adobeTransform = Int(b[seg + 11])
                }
            default:
                break
            }
            pos = end
        }
    }

    /// Whether an EOI marker follows the first scan: entropy-coded data stuffs every 0xFF with 0x00,
    /// so 0xFF 0xD9 after SOS can only be the real end of image.
    static func hasEOI(_ b: UnsafeBufferPointer<UInt8>, after start: Int) -> Bool {
        var i = start
        let n = b.count
        while i + 1 < n {
            if b[i] == 0xFF, b[i + 1] == 0xD9 { return true }
            i += 1
        }
        return false
    }

    static func decode(_ b: UnsafeBufferPointer<UInt8>, name: String, options: DecodeOptions) throws -> RGBImage {
        let header = try parseHeader(b, name: name)
        let info = header.info
        guard info.width * info.height <= options.maxPixels else {
            throw ImageDecodingError.tooLarge(path: name, width: info.width, height: info.height)
        }
        guard info.bitDepth == 8 else {
            throw ImageDecodingError.unsupportedFormat(path: name, detected: "jpeg (\(info.bitDepth)-bit samples)")
        }
        guard let handle = tjInitDecompress() else {
            throw ImageDecodingError.corruptData(path: name, reason: "cannot initialise TurboJPEG")
        }
        defer { tjDestroy(handle) }
        func tjMessage() -> String { String(cString: tjGetErrorStr2(handle)) }

        var w: Int32 = 0, h: Int32 = 0, subsamp: Int32 = 0, colorspace: Int32 = 0
        if tjDecompressHeader3(handle, b.baseAddress, UInt(b.count), &w, &h, &subsamp, &colorspace) != 0 {
            throw ImageDecodingError.corruptHeader(path: name, reason: tjMessage())
        }
        var sw = Int(w), sh = Int(h)
        if let minimum = options.reducedDCTMinimumShorterSide {
            // Largest reduction (1/8, then 1/4, 1/2) that keeps the shorter side at or above `minimum`.
            for denom in [8, 4, 2] {
                let cw = (Int(w) + denom - 1) / denom, ch = (Int(h) + denom - 1) / denom
                if min(cw, ch) >= minimum { sw = cw; sh = ch; break }
            }
        }
        let cmyk = colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue)
        let channels = cmyk ? 4 : 3
        let format = cmyk ? TJPF_CMYK : TJPF_RGB
        var raw = [UInt8](repeating: 0, count: sw * sh * channels)
        let status = raw.withUnsafeMutableBufferPointer { dst in
            tjDecompress2(handle, b.baseAddress, UInt(b.count), dst.baseAddress, Int32(sw), 0, Int32(sh),
                          Int32(format.rawValue), 0)
        }
        if status != 0 {
            let message = tjMessage()
            if !hasEOI(b, after: header.scanOffset) {
                throw ImageDecodingError.truncated(path: name, reason: "image data ends before the end-of-image marker (\(message))")
            }
            // Warnings on complete data (e.g. extraneous bytes before a marker) are ignored, as Pillow does.
            if tjGetErrorCode(handle) != Int32(TJERR_WARNING.rawValue) {
                throw ImageDecodingError.corruptData(path: name, reason: message)
            }
        }
        var image: RGBImage
        if cmyk {
            image = RGBImage(width: sw, height: sh, pixels: cmykToRGB(raw, count: sw * sh))
        } else {
            image = RGBImage(width: sw, height: sh, pixels: raw)
        }
        if info.orientation != 1 { image = Orientation.apply(info.orientation, to: image) }
        return image
    }

    /// Pillow reads every 4-component JPEG as Adobe-inverted CMYK ("CMYK;I") and converts to RGB
    /// with `nk = 255 - k; c' = nk - round(c * nk / 255)` using its MULDIV255 rounding.
    static func cmykToRGB(_ raw: [UInt8], count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count * 3)
        raw.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<count {
                    let k = 255 - Int(src[i * 4 + 3])  // inverted storage
                    let nk = 255 - k
                    for c in 0..<3 {
                        let v = 255 - Int(src[i * 4 + c])
                        let t = v * nk + 128
                        let m = ((t >> 8) + t) >> 8
                        dst[i * 3 + c] = UInt8(clamping: nk - m)
                    }
                }
            }
        }
        return out
    }
}
