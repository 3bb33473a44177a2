import CPNGRead
import Foundation

/// PNG decoding: IHDR and eXIf are parsed here (so oversized images are refused before any
/// allocation), pixels come from libpng via the CPNGRead shim.
enum PNGCodec {
    static func parseHeader(_ b: UnsafeBufferPointer<UInt8>, name: String) throws -> (info: ImageInfo, depth: Int) {
        let n = b.count
        let sig = ImageDecoder.pngSignature
        for i in 0..<min(n, 8) where b[i] != sig[i] {
            throw ImageDecodingError.corruptHeader(path: name, reason: "bad PNG signature")
        }
        guard n >= 33 else { throw ImageDecodingError.truncated(path: name, reason: "file ends inside the PNG header (\(n) bytes)") }
        func u32(_ o: Int) -> Int { Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3]) }
        guard u32(8) == 13, b[12] == 0x49, b[13] == 0x48, b[14] == 0x44, b[15] == 0x52 else {
            throw ImageDecodingError.corruptHeader(path: name, reason: "first chunk is not a 13-byte IHDR")
        }
        let width = u32(16), height = u32(20), depth = Int(b[24]), color = Int(b[25]), interlace = Int(b[28])
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
        guard b[26] == 0, b[27] == 0, interlace <= 1 else {
            throw ImageDecodingError.corruptHeader(path: name, reason: "unknown compression, filter or interlace method")
        }
        // Pillow's exif_transpose also honours an eXIf chunk; only chunks before the first IDAT are scanned.
        var orientation = 1
        var pos = 33
        while pos + 8 <= n {
            let length = u32(pos)
            let type = (b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7])
            if type == (0x49, 0x44, 0x41, 0x54) { break }  // IDAT
            let data = pos + 8, end = data + length
            guard length >= 0, end <= n else { break }
            if type == (0x65, 0x58, 0x49, 0x66) {  // eXIf
                var start = data
                if length >= 6, b[data] == 0x45, b[data + 1] == 0x78, b[data + 2] == 0x69, b[data + 3] == 0x66 { start += 6 }
                orientation = Orientation.resolve(exif: Orientation.fromTIFF(b, start: start, end: end), xmp: nil)
                break
            }
            pos = end + 4
        }
        let info = ImageInfo(format: .png, width: width, height: height, colorModel: model, bitDepth: depth,
                             orientation: orientation, progressive: false, interlaced: interlace == 1)
        return (info, depth)
    }

    static func decode(_ b: UnsafeBufferPointer<UInt8>, name: String, options: DecodeOptions) throws -> RGBImage {
        let (info, _) = try parseHeader(b, name: name)
        guard info.width * info.height <= options.maxPixels else {
            throw ImageDecodingError.tooLarge(path: name, width: info.width, height: info.height)
        }
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
