import Foundation

/// An 8-bit RGB raster, row-major, interleaved (HWC): pixel (x, y) channel c is at `pixels[(y * width + x) * 3 + c]`.
public struct RGBImage: Sendable, Equatable {
    /// Width in pixels (after EXIF orientation was applied).
    public var width: Int
    /// Height in pixels (after EXIF orientation was applied).
    public var height: Int
    /// `width * height * 3` bytes, R, G, B per pixel.
    public var pixels: [UInt8]
    /// Decode memory held for this image under ``DecodeOptions/MemoryHold/untilImageReleased``;
    /// returned to its budget when the last copy of the image goes away. Not part of equality.
    var memoryReservation: DecodeMemoryBudget.Reservation?

    /// Creates an image from interleaved RGB bytes. Precondition: `pixels.count == width * height * 3`.
    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(width >= 0 && height >= 0 && pixels.count == width * height * 3,
                     "RGBImage: \(pixels.count) bytes do not hold \(width)x\(height)x3")
        self.width = width
        self.height = height
        self.pixels = pixels
        self.memoryReservation = nil
    }

    /// Equal sizes and pixels.
    public static func == (a: RGBImage, b: RGBImage) -> Bool {
        a.width == b.width && a.height == b.height && a.pixels == b.pixels
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

/// Knobs and resource limits for ``ImageDecoder``.
///
/// Every limit is checked before the memory or work it guards is spent, and a file over a limit
/// gets an ``ImageDecodingError`` naming the file, the amount and the limit. The defaults of the
/// byte and scan limits are process-wide (``defaultMaxFileBytes``, ``defaultMaxJPEGScans``) so
/// that a command line can set them once for every decoder it starts.
public struct DecodeOptions: Sendable {
    /// Fast path: a JPEG may be decoded at 1/2, 1/4 or 1/8 DCT scale as long as its shorter side stays
    /// at least this many pixels. `nil` (the default) decodes at full size for exact Pillow parity.
    public var reducedDCTMinimumShorterSide: Int? = nil
    /// Images whose declared width x height exceeds this are refused with ``ImageDecodingError/tooLarge(path:width:height:)``
    /// before any pixel memory is allocated.
    public var maxPixels: Int = 200_000_000
    /// Files (or in-memory images) longer than this many bytes are refused with
    /// ``ImageDecodingError/fileTooLarge(path:bytes:limit:)`` before they are read.
    public var maxFileBytes: Int
    /// JPEGs with more scans (SOS markers) than this are refused with
    /// ``ImageDecodingError/tooManyScans(path:limit:)`` before decoding: libjpeg spends one pass
    /// over the image's coefficients per scan, so the count bounds the decode work.
    public var maxJPEGScans: Int
    /// The budget a decode reserves its memory from (shared by every decoder thread by default).
    public var memoryBudget: DecodeMemoryBudget
    /// How long a decode's reservation is held.
    public var memoryHold: MemoryHold

    /// How long the memory reserved for a decode stays reserved.
    public enum MemoryHold: Sendable {
        /// Until ``ImageDecoder`` returns: bounds the decoders' own buffers whatever the caller does
        /// with the images (callers may keep any number of them without blocking later decodes).
        case whileDecoding
        /// Until the returned ``RGBImage`` (every copy of it) is released; the reservation also
        /// covers a resize working buffer. For pipelines that decode, preprocess and drop each
        /// image: the images they hold count against the budget too. A caller that keeps images
        /// must not use this, or later decodes wait for memory it never releases.
        case untilImageReleased
    }

    /// 256 MiB: about 20 times the largest JPEG a 200-megapixel camera writes, yet small enough
    /// that reading a file whole never dominates the decoder's memory.
    public static let standardMaxFileBytes = 256 << 20
    /// 100 scans: encoders write 1 (baseline) to about 10 (libjpeg's progressive script) and
    /// rarely more than 30 (optimised scripts); one scan costs about 12 ms per 64 megapixels of
    /// one component, so 100 scans cost a few seconds even at the 200-megapixel limit.
    public static let standardMaxJPEGScans = 100

    private static let processDefaults = ProcessDefaults()

    /// The ``maxFileBytes`` new options start with (initially ``standardMaxFileBytes``).
    public static var defaultMaxFileBytes: Int {
        get { processDefaults.read { $0.maxFileBytes } }
        set { processDefaults.write { $0.maxFileBytes = max(1, newValue) } }
    }

    /// The ``maxJPEGScans`` new options start with (initially ``standardMaxJPEGScans``).
    public static var defaultMaxJPEGScans: Int {
        get { processDefaults.read { $0.maxJPEGScans } }
        set { processDefaults.write { $0.maxJPEGScans = max(1, newValue) } }
    }

    /// Creates options; the defaults give exact decoding with a 200-megapixel cap, the process-wide
    /// byte and scan limits, and the shared memory budget held while decoding.
    public init(reducedDCTMinimumShorterSide: Int? = nil, maxPixels: Int = 200_000_000,
                maxFileBytes: Int? = nil, maxJPEGScans: Int? = nil,
                memoryBudget: DecodeMemoryBudget = .shared, memoryHold: MemoryHold = .whileDecoding) {
        self.reducedDCTMinimumShorterSide = reducedDCTMinimumShorterSide
        self.maxPixels = maxPixels
        self.maxFileBytes = maxFileBytes ?? Self.defaultMaxFileBytes
        self.maxJPEGScans = maxJPEGScans ?? Self.defaultMaxJPEGScans
        self.memoryBudget = memoryBudget
        self.memoryHold = memoryHold
    }

    /// These options with ``memoryHold`` set to ``MemoryHold/untilImageReleased``.
    public var holdingMemoryUntilImageReleased: DecodeOptions {
        var copy = self
        copy.memoryHold = .untilImageReleased
        return copy
    }

    /// Process-wide defaults behind a lock.
    private final class ProcessDefaults: @unchecked Sendable {
        struct Values {
            var maxFileBytes = DecodeOptions.standardMaxFileBytes
            var maxJPEGScans = DecodeOptions.standardMaxJPEGScans
        }
        private let lock = NSLock()
        private var values = Values()
        func read<T>(_ body: (Values) -> T) -> T { lock.lock(); defer { lock.unlock() }; return body(values) }
        func write(_ body: (inout Values) -> Void) { lock.lock(); body(&values); lock.unlock() }
    }
}

/// `bytes` as a short human-readable size: "512 B", "3.5 KiB", "256 MiB", "5.0 GiB".
func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    var value = Double(bytes), unit = 0
    while value >= 1024, unit < units.count - 1 { value /= 1024; unit += 1 }
    if unit == 0 { return "\(bytes) B" }
    if value == value.rounded() { return "\(Int(value)) \(units[unit])" }
    return String(format: "%.1f %@", value, units[unit])
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
    /// The file is longer than ``DecodeOptions/maxFileBytes``; nothing was read.
    case fileTooLarge(path: String, bytes: Int, limit: Int)
    /// The JPEG has more scans than ``DecodeOptions/maxJPEGScans``; nothing was decoded.
    case tooManyScans(path: String, limit: Int)
    /// Decoding would need more memory (`needed` bytes) than the whole ``DecodeMemoryBudget`` holds.
    case exceedsMemoryBudget(path: String, needed: Int, budget: Int)

    /// The file the error is about.
    public var path: String {
        switch self {
        case .unreadable(let p, _), .empty(let p), .unsupportedFormat(let p, _), .corruptHeader(let p, _),
             .truncated(let p, _), .tooLarge(let p, _, _), .corruptData(let p, _), .fileTooLarge(let p, _, _),
             .tooManyScans(let p, _), .exceedsMemoryBudget(let p, _, _):
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
        case .fileTooLarge(let p, let bytes, let limit):
            return "\(p): file is \(formatBytes(bytes)) (\(bytes) bytes), more than the image size limit of \(formatBytes(limit)) "
                + "(raise it with BOTTLENECK_MAX_IMAGE_BYTES)"
        case .tooManyScans(let p, let limit):
            return "\(p): JPEG has more than \(limit) scans (real progressive files have about 10); refused to bound decode time "
                + "(raise the limit with BOTTLENECK_MAX_JPEG_SCANS if the file is genuine)"
        case .exceedsMemoryBudget(let p, let needed, let budget):
            return "\(p): decoding needs about \(formatBytes(needed)), more than the whole decode memory budget of \(formatBytes(budget)) "
                + "(raise it with BOTTLENECK_DECODE_MEMORY)"
        }
    }
}
