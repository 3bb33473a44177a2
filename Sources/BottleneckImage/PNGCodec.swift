import BottleneckCore
import CPNGRead
import Foundation

/// PNG decoding: IHDR and eXIf are parsed here (so oversized images are refused before any
/// allocation), pixels come from libpng via the CPNGRead shim.
enum PNGCodec {
    /// Facts from IHDR and the chunks before the first IDAT.
    struct Header {
        var info: ImageInfo
        /// IHDR color type (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA).
        var colorType: Int
    }

    /// Chunks looked at before the first IDAT when searching for eXIf (an eXIf chunk later than this
    /// is not honoured): real files have a handful; the cap keeps `inspect` of a file made of
    /// millions of empty chunks from walking all of them.
    static let maxChunksBeforeImageData = 4096
    /// Bytes of an eXIf chunk that are read: a JPEG's EXIF block is at most this long (one APP1
    /// segment), and IFD0's orientation sits at its start.
    static let maxExifBytes = 65535

    /// Reads IHDR and scans the chunks before the first IDAT for eXIf with bounded reads (chunk
    /// bodies other than eXIf are skipped, never read).
    /// - Throws: ``ImageDecodingError`` (`truncated` / `corruptHeader`).
    static func parseHeader(_ source: ImageByteSource) throws -> Header {
        let name = source.path
        var r = try source.reader(at: 0, count: 33)
        let sig = ImageDecoder.pngSignature
        for (i, byte) in r.bytes.prefix(8).enumerated() where byte != sig[i] {
            throw ImageDecodingError.corruptHeader(path: name, reason: "bad PNG signature")
        }
        guard r.remaining >= 33 else {
            throw ImageDecodingError.truncated(path: name, reason: "file ends inside the PNG header (\(source.size) bytes)")
        }
        // 33 bytes are present, so none of these reads can fail.
        try r.skip(8, "signature")
        let ihdrLength = try r.be(UInt32.self, "IHDR length"), ihdrType = try r.take(4, "IHDR type")
        guard ihdrLength == 13, ihdrType.elementsEqual(Array("IHDR".utf8)) else {
            throw ImageDecodingError.corruptHeader(path: name, reason: "first chunk is not a 13-byte IHDR")
        }
        let width = Int(try r.be(UInt32.self, "width")), height = Int(try r.be(UInt32.self, "height"))
        let depth = Int(try r.u8()), color = Int(try r.u8()), compression = try r.u8(), filter = try r.u8()
        let interlace = Int(try r.u8())
        guard width > 0, height > 0, width <= 0x7FFF_FFFF, height <= 0x7FFF_FFFF else {
            throw ImageDecodingError.corruptHeader(path: name, reason: "image size \(width)x\(height)")
        }
        let model: String
        let depths: [Int]
        switch color {
        case 0: model = "Gray"; depths = [1, 2, 4, 8, 16]
        case 2: model = "RGB"; depths = [8, 16]
        case 3: model = "Palette"; depths = [1, 2, 4, 8]
        case 4: model = "GrayAlpha"; depths = [8, 16]
        case 6: model = "RGBA"; depths = [8, 16]
        default: throw ImageDecodingError.corruptHeader(path: name, reason: "invalid color type \(color)")
        }
        guard depths.contains(depth) else {
            throw ImageDecodingError.corruptHeader(path: name, reason: "bit depth \(depth) is invalid for color type \(color)")
        }
        guard compression == 0, filter == 0, interlace <= 1 else {
            throw ImageDecodingError.corruptHeader(path: name, reason: "unknown compression, filter or interlace method")
        }
        // Pillow's exif_transpose also honours an eXIf chunk; only chunks before the first IDAT are scanned.
        var orientation = 1
        var pos = 33
        for _ in 0..<maxChunksBeforeImageData {
            var chunk = try source.reader(at: pos, count: 8)
            guard chunk.remaining == 8 else { break }
            let length = Int(try chunk.be(UInt32.self, "chunk length"))
            let type = try chunk.take(4, "chunk type")
            if type.elementsEqual(Array("IDAT".utf8)) { break }
            let data = pos + 8
            guard length <= 0x7FFF_FFFF, CheckedSize.fits(offset: data, count: length, in: source.size) else { break }
            if type.elementsEqual(Array("eXIf".utf8)) {
                var exif = try source.reader(at: data, count: min(length, maxExifBytes))
                if exif.bytes.starts(with: Array("Exif".utf8)), exif.remaining >= 6 { try exif.skip(6, "Exif prefix") }
                orientation = Orientation.resolve(exif: Orientation.fromTIFF(exif), xmp: nil)
                break
            }
            pos = data + length + 4
        }
        let info = ImageInfo(format: .png, width: width, height: height, colorModel: model, bitDepth: depth,
                             orientation: orientation, progressive: false, interlaced: interlace == 1)
        return Header(info: info, colorType: color)
    }

    /// Peak bytes a decode of `header` allocates (excluding the file itself): the RGB output next to
    /// libpng's full-image row buffer (1-4 bytes per pixel after expansion and 16-to-8-bit stripping,
    /// plus one row pointer per row) and its per-row working buffers, then the orientation copy.
    static func memoryEstimate(_ header: Header) -> Int {
        let w = header.info.width, h = header.info.height
        let pixels = Saturating.mul(w, h)
        let bufferBytesPerPixel: Int
        switch header.colorType {
        case 0: bufferBytesPerPixel = header.info.bitDepth == 16 ? 2 : 1
        case 2: bufferBytesPerPixel = 3
        case 4: bufferBytesPerPixel = 2
        default: bufferBytesPerPixel = 4  // RGBA, or palette expanded with tRNS alpha
        }
        let output = Saturating.mul(pixels, 3)
        let buffer = Saturating.add(Saturating.mul(pixels, bufferBytesPerPixel), Saturating.mul(h, MemoryLayout<UnsafeRawPointer>.size))
        // Current and previous raw rows (up to 8 bytes per pixel at 16-bit RGBA) and zlib's window.
        let working = Saturating.add(1 << 20, Saturating.mul(w, 16))
        let decoding = Saturating.add(Saturating.add(output, buffer), working)
        let orienting = header.info.orientation != 1 ? Saturating.mul(output, 2) : 0
        return max(decoding, orienting)
    }

    /// Decodes the whole file `b` whose header is `header`. The caller has checked the pixel limit
    /// and reserved ``memoryEstimate(_:)``.
    static func decode(_ b: UnsafeBufferPointer<UInt8>, header: Header, name: String) throws -> RGBImage {
        let info = header.info
        var pixels = [UInt8](repeating: 0, count: info.width * info.height * 3)
        var message = [CChar](repeating: 0, count: 256)
        let status = pixels.withUnsafeMutableBufferPointer { dst in
            message.withUnsafeMutableBufferPointer { msg in
                bn_png_decode_rgb(b.baseAddress, b.count, dst.baseAddress, UInt32(info.width), UInt32(info.height),
                                  msg.baseAddress, msg.count)
            }
        }
        let reason = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        switch Int(status) {
        case Int(BN_PNG_OK): break
        case Int(BN_PNG_TRUNCATED): throw ImageDecodingError.truncated(path: name, reason: reason)
        case Int(BN_PNG_NOMEM): throw ImageDecodingError.tooLarge(path: name, width: info.width, height: info.height)
        case Int(BN_PNG_MISMATCH): throw ImageDecodingError.corruptHeader(path: name, reason: reason)
        default:
            if reason.contains("IHDR") { throw ImageDecodingError.corruptHeader(path: name, reason: reason) }
            throw ImageDecodingError.corruptData(path: name, reason: reason)
        }
        var image = RGBImage(width: info.width, height: info.height, pixels: pixels)
        if info.orientation != 1 { image = Orientation.apply(info.orientation, to: image) }
        return image
    }
}
