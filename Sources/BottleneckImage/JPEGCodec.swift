import BottleneckCore
import CJPEG
import Foundation

/// JPEG decoding through the TurboJPEG API (error codes, never the exit()ing libjpeg error handler).
enum JPEGCodec {
    /// Facts from the marker segments before the first scan.
    struct Header {
        var info: ImageInfo
        /// File offset of the first SOS marker (its 0xFF byte).
        var scanOffset: Int
        /// Horizontal and vertical sampling factors of each frame component (as stored).
        var sampling: [(h: Int, v: Int)]
        /// Whether libjpeg keeps the whole image's DCT coefficients in memory: progressive coding, or
        /// a sequential first scan that does not interleave every component (more scans follow).
        var buffersCoefficients: Bool
    }

    static let xmpPrefix = Array("http://ns.adobe.com/xap/1.0/\u{0}".utf8)
    static let exifPrefix: [UInt8] = [0x45, 0x78, 0x69, 0x66, 0, 0]  // "Exif\0\0"
    static let adobePrefix = Array("Adobe".utf8)

    /// Marker segments accepted before the first scan: real files have about 5 to 30; the cap keeps
    /// `inspect` of a file made of millions of tiny segments from walking all of them.
    static let maxSegmentsBeforeScan = 4096
    /// Fill bytes (0xFF padding before a marker) accepted before the first scan, in total; encoders
    /// write none or a few.
    static let maxFillBytes = 65536

    /// Walks the marker segments up to the first SOS with bounded reads (segments that are not
    /// needed are skipped, never read): SOF (size, components, sampling, progressive), APP1 Exif
    /// (orientation, both byte orders), APP1 XMP (orientation fallback) and APP14 Adobe (color transform).
    /// - Throws: ``ImageDecodingError`` (`truncated` / `corruptHeader`) with the byte offset.
    static func parseHeader(_ source: ImageByteSource) throws -> Header {
        let name = source.path
        guard source.size >= 3 else { throw ImageDecodingError.truncated(path: name, reason: "file ends inside the JPEG signature") }
        var pos = 2
        var exifOrientation: Int? = nil, xmpOrientation: Int? = nil, sawExif = false, sawXMP = false
        var adobeTransform: Int? = nil
        var sof: (width: Int, height: Int, bits: Int, progressive: Bool, sampling: [(h: Int, v: Int)])? = nil
        var segments = 0, fillBytes = 0
        func hex(_ m: UInt8) -> String { String(m, radix: 16) }
        while true {
            guard let first = try source.byte(at: pos) else {
                throw ImageDecodingError.truncated(path: name, reason: "file ends before the image data (offset \(pos))")
            }
            guard first == 0xFF else {
                throw ImageDecodingError.corruptHeader(path: name, reason: "expected a marker at offset \(pos), found 0x\(hex(first))")
            }
            let markerStart = pos
            pos += 1
            while let c = try source.byte(at: pos), c == 0xFF {  // fill bytes
                pos += 1
                fillBytes += 1
                guard fillBytes <= maxFillBytes else {
                    throw ImageDecodingError.corruptHeader(path: name, reason: "more than \(maxFillBytes) fill bytes before the first scan (offset \(pos))")
                }
            }
            guard let marker = try source.byte(at: pos) else { throw ImageDecodingError.truncated(path: name, reason: "file ends inside a marker") }
            pos += 1
            segments += 1
            guard segments <= maxSegmentsBeforeScan else {
                throw ImageDecodingError.corruptHeader(path: name, reason: "more than \(maxSegmentsBeforeScan) marker segments before the first scan (offset \(markerStart))")
            }
            if marker == 0xD8 || marker == 0x01 || (0xD0...0xD7).contains(marker) { continue }
            if marker == 0x00 { throw ImageDecodingError.corruptHeader(path: name, reason: "invalid marker 0xFF00 at offset \(pos - 2)") }
            if marker == 0xD9 { throw ImageDecodingError.corruptHeader(path: name, reason: "end of image before any scan") }
            var lengthField = try source.reader(at: pos, count: 2)
            guard lengthField.remaining == 2 else { throw ImageDecodingError.truncated(path: name, reason: "file ends inside a marker segment") }
            let length = Int(try lengthField.be(UInt16.self, "segment length"))
            guard length >= 2 else {
                throw ImageDecodingError.corruptHeader(path: name, reason: "marker 0x\(hex(marker)) has invalid length \(length) at offset \(pos)")
            }
            let body = pos + 2, end = pos + length
            guard end <= source.size else {
                let what = marker == 0xDA ? "the scan header" : "marker 0x\(hex(marker)) segment"
                throw ImageDecodingError.truncated(path: name, reason: "file ends inside \(what) (offset \(markerStart))")
            }
            /// The segment's payload; read only for the segments below.
            func payload() throws -> ByteReader { try source.reader(at: body, count: length - 2) }
            switch marker {
            case 0xDA:
                guard let f = sof else { throw ImageDecodingError.corruptHeader(path: name, reason: "scan before frame header (no SOF)") }
                let model: String
                switch f.sampling.count {
                case 1: model = "Gray"
                case 3: model = "RGB"
                case 4: model = adobeTransform == 2 ? "YCCK" : "CMYK"
                default: throw ImageDecodingError.corruptHeader(path: name, reason: "\(f.sampling.count) color components")
                }
                var scan = try payload()
                let scanComponents = Int(try mapped(name) { try scan.u8("scan component count") })
                let info = ImageInfo(format: .jpeg, width: f.width, height: f.height, colorModel: model, bitDepth: f.bits,
                                     orientation: Orientation.resolve(exif: exifOrientation, xmp: xmpOrientation),
                                     progressive: f.progressive, interlaced: false)
                return Header(info: info, scanOffset: pos - 2, sampling: f.sampling,
                              buffersCoefficients: f.progressive || scanComponents < f.sampling.count)
            case 0xC0...0xCF where marker != 0xC4 && marker != 0xC8 && marker != 0xCC:
                guard length >= 8 else { throw ImageDecodingError.corruptHeader(path: name, reason: "frame header too short") }
                guard sof == nil else { break }
                var frame = try payload()
                let (bits, h, w, sampling) = try mapped(name) { () throws -> (Int, Int, Int, [(h: Int, v: Int)]) in
                    let bits = Int(try frame.u8("sample precision"))
                    let h = Int(try frame.be(UInt16.self, "frame height")), w = Int(try frame.be(UInt16.self, "frame width"))
                    let components = Int(try frame.u8("component count"))
                    var sampling: [(h: Int, v: Int)] = []
                    for _ in 0..<components {
                        try frame.skip(1, "component id")
                        let factors = try frame.u8("sampling factors")
                        try frame.skip(1, "quantization table")
                        sampling.append((Int(factors >> 4), Int(factors & 0x0F)))
                    }
                    return (bits, h, w, sampling)
                }
                guard w > 0, h > 0 else { throw ImageDecodingError.corruptHeader(path: name, reason: "frame size \(w)x\(h)") }
                sof = (w, h, bits, [0xC2, 0xC6, 0xCA, 0xCE].contains(marker), sampling)
            case 0xE1:
                let segment = try payload()
                if !sawExif, segment.bytes.starts(with: exifPrefix) {
                    sawExif = true
                    exifOrientation = Orientation.fromTIFF(ByteReader(segment.bytes, path: name, baseOffset: body, start: exifPrefix.count))
                } else if !sawXMP, segment.bytes.starts(with: xmpPrefix) {
                    sawXMP = true
                    xmpOrientation = Orientation.fromXMP(ByteReader(segment.bytes, path: name, baseOffset: body, start: xmpPrefix.count))
                }
            case 0xEE where length >= 2 + 12:
                var segment = try payload()
                if segment.bytes.starts(with: adobePrefix) {
                    adobeTransform = try mapped(name) { try segment.skip(11); return Int(try segment.u8("Adobe transform")) }
                }
            default:
                break
            }
            pos = end
        }
    }

    /// Runs `body`, reporting a ``MalformedBytes`` from a ByteReader as a corrupt header of `name`.
    static func mapped<T>(_ name: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as MalformedBytes {
            throw ImageDecodingError.corruptHeader(path: name, reason: "\(e.reason) at byte \(e.offset)")
        }
    }

    /// Number of scans (SOS markers) from `start` (the first SOS) to the end of image, counting at
    /// most `limit + 1`. Walks the bytes the way libjpeg finds markers: segments are skipped by their
    /// length (a table's payload can hold any byte pair), entropy-coded data up to the next 0xFF
    /// that is not a stuffed zero, a restart marker or fill. O(file size), no allocation.
    static func countScans(_ b: UnsafeBufferPointer<UInt8>, from start: Int, limit: Int) -> Int {
        guard let base = b.baseAddress else { return 0 }
        let n = b.count
        var i = max(0, start), scans = 0
        while i + 1 < n {
            guard let hit = memchr(base + i, 0xFF, n - i) else { break }
            i = base.distance(to: UnsafePointer(hit.assumingMemoryBound(to: UInt8.self)))
            guard i + 1 < n else { break }
            let marker = b[i + 1]
            switch marker {
            case 0xFF: i += 1  // fill: the next byte may start the marker
            case 0x00, 0x01, 0xD0...0xD8: i += 2  // stuffed zero, TEM, restart, stray SOI
            case 0xD9: return scans
            default:
                if marker == 0xDA {
                    scans += 1
                    if scans > limit { return scans }
                }
                guard i + 3 < n else { return scans }
                let length = Int(b[i + 2]) << 8 | Int(b[i + 3])
                i += 2 + max(length, 2)
            }
        }
        return scans
    }

    /// Whether an EOI marker follows the first scan: entropy-coded data stuffs every 0xFF with 0x00,
    /// so 0xFF 0xD9 after SOS can only be the real end of image.
    static func hasEOI(_ b: UnsafeBufferPointer<UInt8>, after start: Int) -> Bool {
        guard let base = b.baseAddress else { return false }
        let n = b.count
        var i = max(0, start)
        while i + 1 < n, let hit = memchr(base + i, 0xFF, n - i - 1) {
            i = base.distance(to: UnsafePointer(hit.assumingMemoryBound(to: UInt8.self)))
            if b[i + 1] == 0xD9 { return true }
            i += 1
        }
        return false
    }

    /// Output size for `options`: the largest DCT reduction (1/8, then 1/4, 1/2) that keeps the
    /// shorter side at or above `reducedDCTMinimumShorterSide`, else the stored size.
    static func outputSize(width w: Int, height h: Int, options: DecodeOptions) -> (width: Int, height: Int) {
        if let minimum = options.reducedDCTMinimumShorterSide {
            for denom in [8, 4, 2] {
                let cw = (w + denom - 1) / denom, ch = (h + denom - 1) / denom
                if min(cw, ch) >= minimum { return (cw, ch) }
            }
        }
        return (w, h)
    }

    /// Peak bytes a decode of `header` allocates (excluding the file itself): libjpeg's whole-image
    /// coefficient buffer when it keeps one (2 bytes per coefficient, every component at its own
    /// sampling, padded to whole MCUs), its row buffers, the output raster, then the CMYK
    /// conversion or orientation copy. Saturates at `Int.max` instead of overflowing.
    static func memoryEstimate(_ header: Header, options: DecodeOptions) -> Int {
        let w = header.info.width, h = header.info.height
        let out = outputSize(width: w, height: h, options: options)
        let cmyk = header.sampling.count == 4
        let pixels = Saturating.mul(out.width, out.height)
        let raw = Saturating.mul(pixels, cmyk ? 4 : 3)
        var coefficients = 0
        if header.buffersCoefficients {
            let hMax = header.sampling.map { min(max($0.h, 1), 4) }.max() ?? 1
            let vMax = header.sampling.map { min(max($0.v, 1), 4) }.max() ?? 1
            for s in header.sampling {
                let hs = min(max(s.h, 1), 4), vs = min(max(s.v, 1), 4)
                let blocksWide = ((w * hs + hMax - 1) / hMax + 7) / 8 + hs
                let blocksHigh = ((h * vs + vMax - 1) / vMax + 7) / 8 + vs
                coefficients = Saturating.add(coefficients, Saturating.mul(Saturating.mul(blocksWide, blocksHigh), 128))
            }
        }
        // Row groups of every component for upsampling and color conversion, plus fixed tables.
        let working = Saturating.add(1 << 20, Saturating.mul(w, 64 * max(1, header.sampling.count)))
        let decoding = Saturating.add(Saturating.add(raw, coefficients), working)
        let converting = cmyk ? Saturating.add(raw, Saturating.mul(pixels, 3)) : 0
        let orienting = header.info.orientation != 1 ? Saturating.mul(pixels, 6) : 0
        return max(decoding, converting, orienting)
    }

    /// Decodes the whole file `b` whose header is `header`. The caller has checked the pixel limit
    /// and reserved ``memoryEstimate(_:options:)``.
    static func decode(_ b: UnsafeBufferPointer<UInt8>, header: Header, name: String, options: DecodeOptions) throws -> RGBImage {
        let info = header.info
        guard info.bitDepth == 8 else {
            throw ImageDecodingError.unsupportedFormat(path: name, detected: "jpeg (\(info.bitDepth)-bit samples)")
        }
        if countScans(b, from: header.scanOffset, limit: options.maxJPEGScans) > options.maxJPEGScans {
            throw ImageDecodingError.tooManyScans(path: name, limit: options.maxJPEGScans)
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
        guard Int(w) == info.width, Int(h) == info.height else {
            throw ImageDecodingError.corruptHeader(path: name, reason: "frame size \(w)x\(h) differs from the header walk's \(info.width)x\(info.height)")
        }
        let (sw, sh) = outputSize(width: Int(w), height: Int(h), options: options)
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
