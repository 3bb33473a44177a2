import Foundation

/// Generators for hostile image files, built at test time (nothing large is committed).
///
/// - ``jpegRepeatingScan(_:totalScans:)``: a valid JPEG whose smallest scan is repeated, the
///   "thousands of scans" decode-work attack.
/// - ``blackPNG(width:height:)``: a valid RGB PNG of any declared size whose compressed data is
///   tiny (all-zero rows deflate at about 160:1), the "small file, huge raster" memory attack.
/// - ``appendSparseTail(to:bytes:)``: grows a file by a hole of any size without writing it, the
///   "whole file read into memory" attack.
public enum HostileImages {
    /// Marker structure of a JPEG: offsets of every scan (SOS marker up to the next non-RST marker).
    public struct JPEGScans {
        /// `start..<end` of each scan: its SOS segment and entropy-coded data.
        public var scans: [Range<Int>]
    }

    /// Finds the scans of a well-formed JPEG (segments are walked by their lengths, entropy-coded
    /// data by looking for a marker that is not a stuffed zero or a restart).
    public static func scans(of jpeg: [UInt8]) -> JPEGScans {
        var scans: [Range<Int>] = []
        var i = 2
        let n = jpeg.count
        while i + 3 < n, jpeg[i] == 0xFF {
            let marker = jpeg[i + 1]
            if marker == 0xD9 { break }
            let length = Int(jpeg[i + 2]) << 8 | Int(jpeg[i + 3])
            guard marker == 0xDA else { i += 2 + length; continue }
            var j = i + 2 + length
            while j + 1 < n {
                if jpeg[j] == 0xFF, jpeg[j + 1] != 0x00, !(0xD0...0xD7).contains(jpeg[j + 1]) { break }
                j += 1
            }
            scans.append(i..<j)
            i = j
        }
        return JPEGScans(scans: scans)
    }

    /// `jpeg` with its smallest scan repeated in place until the file has `totalScans` scans.
    /// libjpeg decodes such a file (with an "inconsistent progression" warning), spending one
    /// pass over the image's coefficients per scan.
    /// Precondition: `jpeg` is a well-formed JPEG with at least one scan.
    public static func jpegRepeatingScan(_ jpeg: [UInt8], totalScans: Int) -> [UInt8] {
        let found = scans(of: jpeg).scans
        precondition(!found.isEmpty, "HostileImages: no scan in the JPEG")
        let smallest = found.min { $0.count < $1.count }!
        let copies = max(0, totalScans - found.count)
        var out = Array(jpeg[0..<smallest.upperBound])
        out.reserveCapacity(jpeg.count + copies * smallest.count)
        let scan = jpeg[smallest]
        for _ in 0..<copies { out += scan }
        out += jpeg[smallest.upperBound...]
        return out
    }

    /// A valid 8-bit RGB PNG, `width x height`, every pixel black.
    ///
    /// The filtered raster is all zero bytes (filter type 0 plus zero samples), written as one
    /// fixed-Huffman deflate block of 258-byte back-references, so the file is about
    /// `height * (1 + 3 * width) / 160` bytes while the decoder must allocate the full raster.
    public static func blackPNG(width: Int, height: Int) -> [UInt8] {
        precondition(width > 0 && height > 0 && width <= 0x7FFF_FFFF && height <= 0x7FFF_FFFF)
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        var ihdr: [UInt8] = []
        ihdr += bigEndian32(width) + bigEndian32(height)
        ihdr += [8, 2, 0, 0, 0]  // depth 8, color type 2 (RGB), deflate, adaptive filtering, no interlace
        out += chunk("IHDR", ihdr)
        out += chunk("IDAT", zlibZeros(count: height * (1 + 3 * width)))
        out += chunk("IEND", [])
        return out
    }

    /// Extends the file at `url` by `bytes` without writing them (a sparse hole of zeros on file
    /// systems that support it), so tests can present multi-gigabyte files cheaply.
    public static func appendSparseTail(to url: URL, bytes: Int) throws {
        let fd = open(url.path, O_WRONLY)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path]) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, ftruncate(fd, off_t(Int(st.st_size) + bytes)) == 0 else {
            throw CocoaError(.fileWriteOutOfSpace, userInfo: [NSFilePathErrorKey: url.path])
        }
    }

    // MARK: - PNG and zlib building blocks

    /// A PNG chunk: length, type, data, CRC-32 of type and data.
    public static func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let typeBytes = Array(type.utf8)
        return bigEndian32(data.count) + typeBytes + data + bigEndian32(Int(crc32(typeBytes + data)))
    }

    /// CRC-32 (ISO 3309, as PNG uses it).
    public static func crc32<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = (crc >> 1) ^ (crc & 1 == 1 ? 0xEDB8_8320 : 0) }
        }
        return crc ^ 0xFFFF_FFFF
    }

    static func bigEndian32(_ v: Int) -> [UInt8] {
        [UInt8((v >> 24) & 0xFF), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }

    /// A zlib stream that inflates to `count` zero bytes: one literal zero, then back-references
    /// of length 258 at distance 1, then literal zeros for the remainder (fixed Huffman codes).
    static func zlibZeros(count: Int) -> [UInt8] {
        precondition(count >= 1)
        var bits = BitWriter()
        bits.put(1, 1)  // BFINAL
        bits.put(1, 2)  // BTYPE 01: fixed Huffman
        let literalZero = (code: 0x30, length: 8)  // literals 0-143: 0x30 + value, 8 bits
        bits.putHuffman(literalZero.code, literalZero.length)
        let matches = (count - 1) / 258, rest = (count - 1) % 258
        for _ in 0..<matches {
            bits.putHuffman(0xC5, 8)  // length symbol 285 (= 258 bytes): 0xC0 + 285 - 280
            bits.putHuffman(0, 5)  // distance symbol 0 (= 1 byte back)
        }
        for _ in 0..<rest { bits.putHuffman(literalZero.code, literalZero.length) }
        bits.putHuffman(0, 7)  // end of block (symbol 256)
        // Adler-32 of zeros: a stays 1, b gains 1 per byte.
        let adler = (count % 65521) << 16 | 1
        return [0x78, 0x01] + bits.bytes() + bigEndian32(adler)
    }

    /// Deflate's bit order: values LSB-first, Huffman codes MSB-first.
    struct BitWriter {
        private var out: [UInt8] = []
        private var acc: UInt64 = 0
        private var filled = 0

        mutating func put(_ value: Int, _ count: Int) {
            acc |= UInt64(value) << UInt64(filled)
            filled += count
            while filled >= 8 {
                out.append(UInt8(truncatingIfNeeded: acc))
                acc >>= 8
                filled -= 8
            }
        }

        mutating func putHuffman(_ code: Int, _ length: Int) {
            var reversed = 0
            for i in 0..<length where code & (1 << i) != 0 { reversed |= 1 << (length - 1 - i) }
            put(reversed, length)
        }

        func bytes() -> [UInt8] { filled > 0 ? out + [UInt8(truncatingIfNeeded: acc)] : out }
    }
}

extension HostileImages {
    /// `jpeg` with the frame size in its first SOF segment replaced by `width x height` (the
    /// entropy-coded data is left as is, so the decoder pads the missing blocks and still visits
    /// every block of every scan). Precondition: a JPEG with an SOF before its first scan.
    public static func settingJPEGFrameSize(_ jpeg: [UInt8], width: Int, height: Int) -> [UInt8] {
        var out = jpeg
        var i = 2
        while i + 8 < out.count, out[i] == 0xFF {
            let marker = out[i + 1]
            let length = Int(out[i + 2]) << 8 | Int(out[i + 3])
            if (0xC0...0xCF).contains(marker), marker != 0xC4, marker != 0xC8, marker != 0xCC {
                out[i + 5] = UInt8(height >> 8); out[i + 6] = UInt8(height & 0xFF)
                out[i + 7] = UInt8(width >> 8); out[i + 8] = UInt8(width & 0xFF)
                return out
            }
            precondition(marker != 0xDA, "HostileImages: no SOF before the first scan")
            i += 2 + length
        }
        preconditionFailure("HostileImages: no SOF found")
    }
}
