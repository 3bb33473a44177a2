import Foundation

/// An 8-bit RGB raster, row-major, interleaved (HWC): pixel (x, y) channel c is at `pixels[(y * width + x) * 3 + c]`.
public struct RGBImage: Sendable, Equatable {
    /// Width in pixels (after EXIF orientation was applied).
    public var width: Int
    /// Height in pixels (after EXIF orientation was applied).
    public var height: Int
    /// `width * height * 3` bytes, R, G, B per pixel.
    public var pixels: [UInt8]

    /// Creates an image from interleaved RGB bytes. Precondition: `pixels.count == width * height * 3`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes do not hold \(width)x\(height)x3")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// Container formats recognised by ``ImageDecoder/sniff(_:)`` from the leading bytes of a file.
public enum ImageFormat: String, Sendable {
    /// JPEG/JFIF/EXIF (FF D8 FF): decoded.
    case jpeg
    /// PNG (89 50 4E 47 0D 0A 1A 0A): decoded.
    case png
    /// Netpbm P2-P6: binary P5 (PGM) and P6 (PPM) are decoded.
    case ppm
    /// GIF87a/GIF89a: recognised, not decoded.
    case gif
    /// Windows bitmap ("BM"): recognised, not decoded.
    case bmp
    /// WebP (RIFF....WEBP): recognised, not decoded.
    case webp
    /// TIFF (II*\0 / MM\0*): recognised, not decoded.
    case tiff
    /// None of the above.
    case unknown
}

/// Header facts about an image file, read without decoding the pixels.
public struct ImageInfo: Sendable, Equatable {
    /// Format detected from the bytes.
    public var format: ImageFormat
    /// Width as stored in the file (before EXIF orientation).
    public var width: Int
    /// Height as stored in the file (before EXIF orientation).
    public var height: Int
    /// Stored color model: "RGB", "Gray", "CMYK", "YCCK", "Palette", "GrayAlpha", "RGBA" (JPEG "RGB" covers YCbCr).
    public var colorModel: String
    /// Bits per sample as stored (8 for JPEG, 1-16 for PNG, 8 or 16 for PPM).
    public var bitDepth: Int
    /// EXIF orientation 1-8 (1 when absent or invalid).
    public var orientation: Int
    /// JPEG: progressive (SOF2/SOF6/SOF10/SOF14) coding.
    public var progressive: Bool
    /// PNG: Adam7 interlacing.
    public var interlaced: Bool

    /// Width x height after the EXIF orientation is applied (orientations 5-8 swap the axes).
    public var orientedSize: (width: Int, height: Int) {
        orientation >= 5 ? (height, width) : (width, height)
    }
}

/// Knobs for ``ImageDecoder``.
public struct DecodeOptions: Sendable {
    /// Fast path: a JPEG may be decoded at 1/2, 1/4 or 1/8 DCT scale as long as its shorter side stays
    /// at least this many pixels. `nil` (the default) decodes at full size for exact Pillow parity.
    public var reducedDCTMinimumShorterSide: Int? = nil
    /// Images whose declared width x height exceeds this are refused with ``ImageDecodingError/tooLarge(path:width:height:)``
    /// before any pixel memory is allocated.
    public var maxPixels: Int = 200_000_000

    /// Creates options; the defaults give exact decoding with a 200-megapixel cap.
    public init(reducedDCTMinimumShorterSide: Int? = nil, maxPixels: Int = 200_000_000) {
        self.reducedDCTMinimumShorterSide = reducedDCTMinimumShorterSide
        self.maxPixels = maxPixels
    }
}

/// Why an image could not be decoded. Every case names the file; `description` is `"<path>: <reason>"`.
public enum ImageDecodingError: Error, CustomStringConvertible, Equatable {
    /// The file could not be read (missing, permission, I/O error).
    case unreadable(path: String, reason: String)
    /// The file has zero bytes.
    case empty(path: String)
    /// The bytes are not a format this decoder handles; `detected` is what ``ImageDecoder/sniff(_:)`` found.
    case unsupportedFormat(path: String, detected: String)
    /// The header is malformed (bad signature, impossible dimensions, missing frame header...).
    case corruptHeader(path: String, reason: String)
    /// The data ends before the image is complete.
    case truncated(path: String, reason: String)
    /// The declared dimensions exceed ``DecodeOptions/maxPixels``.
    case tooLarge(path: String, width: Int, height: Int)
    /// The compressed pixel data is invalid.
    case corruptData(path: String, reason: String)

    /// The file the error is about.
    public var path: String {
        switch self {
        case .unreadable(let p, _), .empty(let p), .unsupportedFormat(let p, _), .corruptHeader(let p, _),
             .truncated(let p, _), .tooLarge(let p, _, _), .corruptData(let p, _):
            return p
        }
    }

    /// `"<path>: <reason>"`, phrased so the user knows what is wrong with the file.
    public var description: String {
        switch self {
        case .unreadable(let p, let r): return "\(p): cannot read file: \(r)"
        case .empty(let p): return "\(p): file is empty (0 bytes)"
        case .unsupportedFormat(let p, let d):
            return "\(p): unsupported image format (detected: \(d)); supported are JPEG, PNG and PPM/PGM"
        case .corruptHeader(let p, let r): return "\(p): corrupt header: \(r)"
        case .truncated(let p, let r): return "\(p): truncated: \(r)"
        case .tooLarge(let p, let w, let h): return "\(p): declared size \(w)x\(h) exceeds the pixel limit"
        case .corruptData(let p, let r): return "\(p): corrupt image data: \(r)"
        }
    }
}
