import BottleneckCore
import CPNG
import Foundation

/// Writes 8-bit RGB PNGs (plots, heat maps) with libpng's simplified write API.
public enum PNGWriter {
    /// Encodes `image` as an 8-bit RGB PNG and atomically replaces `url` with it.
    /// - Throws: ``ImageDecodingError/corruptData(path:reason:)`` if libpng fails, `CoreIOError` on I/O failure.
    public static func write(_ image: RGBImage, to url: URL) throws {
        var png = png_image()
        png.version = png_uint_32(PNG_IMAGE_VERSION)
        png.width = png_uint_32(image.width)
        png.height = png_uint_32(image.height)
        png.format = png_uint_32(PNG_FORMAT_RGB)
        var size: png_alloc_size_t = 0
        let stride = Int32(image.width * 3)
        let ok = image.pixels.withUnsafeBufferPointer { px -> Bool in
            guard png_image_write_to_memory(&png, nil, &size, 0, px.baseAddress, stride, nil) != 0 else { return false }
            return true
        }
        guard ok, size > 0 else {
            let reason = withUnsafeBytes(of: png.message) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            png_image_free(&png)
            throw ImageDecodingError.corruptData(path: url.path, reason: "PNG encoding failed: \(reason)")
        }
        var bytes = Data(count: Int(size))
        let written = bytes.withUnsafeMutableBytes { out in
            image.pixels.withUnsafeBufferPointer { px in
                png_image_write_to_memory(&png, out.baseAddress, &size, 0, px.baseAddress, stride, nil)
            }
        }
        png_image_free(&png)
        guard written != 0 else { throw ImageDecodingError.corruptData(path: url.path, reason: "PNG encoding failed") }
        try AtomicFile.write(bytes.prefix(Int(size)), to: url)
    }
}
