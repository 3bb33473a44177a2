import BottleneckCore
import Foundation

/// EXIF orientation: reading the tag and applying it like Pillow's `ImageOps.exif_transpose`.
enum Orientation {
    /// Orientation tag (0x0112) of IFD0 in a TIFF-structured EXIF block, as stored (possibly
    /// outside 1...8), or nil when the block is malformed or has no such tag.
    ///
    /// `block` spans the TIFF structure exactly (from "II*\0" / "MM\0*"); every offset in it is
    /// relative to its first byte and is bounds-checked by the reader.
    static func fromTIFF(_ block: ByteReader) -> Int? {
        let start = block.position
        var header = block
        guard let order = try? header.be(UInt16.self, "TIFF byte order") else { return nil }
        let little: Bool
        switch order {
        case 0x4949: little = true
        case 0x4D4D: little = false
        default: return nil
        }
        func u16(_ offset: Int) -> Int? {
            var r = block
            guard (try? r.seek(to: start &+ offset)) != nil else { return nil }
            return (try? little ? r.le(UInt16.self, "EXIF field") : r.be(UInt16.self, "EXIF field")).map(Int.init)
        }
        func u32(_ offset: Int) -> Int? {
            var r = block
            guard (try? r.seek(to: start &+ offset)) != nil else { return nil }
            return (try? little ? r.le(UInt32.self, "EXIF field") : r.be(UInt32.self, "EXIF field")).map(Int.init)
        }
        guard u16(2) == 42, let ifd = u32(4), let count = u16(ifd) else { return nil }
        for i in 0..<count {
            let entry = ifd + 2 + i * 12
            guard let tag = u16(entry) else { return nil }
            if tag == 0x0112 {
                // SHORT (3) per spec; LONG (4) is accepted too.
                switch u16(entry + 2) {
                case 3: return u16(entry + 8)
                case 4: return u32(entry + 8)
                default: return nil
                }
            }
        }
        return nil
    }

    /// Pillow's fallback when EXIF has no orientation: the first `tiff:Orientation="d"` or
    /// `tiff:Orientation>d` in the XMP packet (the unread bytes of `packet`).
    static func fromXMP(_ packet: ByteReader) -> Int? {
        let key = Array("tiff:Orientation".utf8)
        let b = packet.bytes
        let end = b.count
        var i = packet.position
        func digit(_ at: Int) -> Int? { at < end && (0x30...0x39).contains(b[at]) ? Int(b[at] - 0x30) : nil }
        while i + key.count + 2 <= end {
            if b[i..<(i + key.count)].elementsEqual(key) {
                let a = i + key.count
                if b[a] == UInt8(ascii: ">"), let d = digit(a + 1) { return d }
                if b[a] == UInt8(ascii: "="), b[a + 1] == UInt8(ascii: "\""), let d = digit(a + 2) { return d }
            }
            i += 1
        }
        return nil
    }

    /// The orientation Pillow's `exif_transpose` acts on: EXIF first, else XMP; 1 unless in 2...8.
    static func resolve(exif: Int?, xmp: Int?) -> Int {
        guard let v = exif ?? xmp, (1...8).contains(v) else { return 1 }
        return v
    }

    /// Applies EXIF orientation `o` (2-8) to an interleaved RGB raster the way Pillow's
    /// `exif_transpose` does: 2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM, 5 TRANSPOSE,
    /// 6 ROTATE_270 (clockwise), 7 TRANSVERSE, 8 ROTATE_90 (counter-clockwise). O(width x height).
    static func apply(_ o: Int, to image: RGBImage) -> RGBImage {
        guard (2...8).contains(o) else { return image }
        let w = image.width, h = image.height
        let swap = o >= 5
        let ow = swap ? h : w, oh = swap ? w : h
        var out = [UInt8](repeating: 0, count: image.pixels.count)
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<oh {
                    for x in 0..<ow {
                        // (sx, sy): the source pixel that lands at output (x, y).
                        let sx: Int, sy: Int
                        switch o {
                        case 2: sx = w - 1 - x; sy = y
                        case 3: sx = w - 1 - x; sy = h - 1 - y
                        case 4: sx = x; sy = h - 1 - y
                        case 5: sx = y; sy = x
                        case 6: sx = y; sy = h - 1 - x
                        case 7: sx = w - 1 - y; sy = h - 1 - x
                        default: sx = w - 1 - y; sy = x
                        }
                        let s = (sy * w + sx) * 3, d = (y * ow + x) * 3
                        dst[d] = src[s]
                        dst[d + 1] = src[s + 1]
                        dst[d + 2] = src[s + 2]
                    }
                }
            }
        }
        return RGBImage(width: ow, height: oh, pixels: out)
    }
}
