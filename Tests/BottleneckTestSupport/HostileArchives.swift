import Foundation

/// Builders for valid and hostile archives (tar, gzip, zip, deflate bombs), generated in memory at
/// test time so no archive blob is committed. Every builder writes exactly the bytes it is told to,
/// including names a safe extractor must refuse (`../x`, `/etc/x`, links pointing outside).
public enum HostileArchives {
    // MARK: tar

    /// One tar member. `name` and `linkTarget` are written verbatim (no normalisation).
    public struct TarMember: Sendable {
        /// Tar type flag: `0` file, `1` hard link, `2` symlink, `3` char device, `5` directory, `6` FIFO.
        public var type: UInt8
        public var name: String
        public var data: [UInt8]
        public var linkTarget: String

        public static func file(_ name: String, _ data: [UInt8]) -> TarMember { .init(type: 0x30, name: name, data: data, linkTarget: "") }
        public static func file(_ name: String, _ text: String) -> TarMember { file(name, Array(text.utf8)) }
        public static func directory(_ name: String) -> TarMember { .init(type: 0x35, name: name, data: [], linkTarget: "") }
        public static func symlink(_ name: String, to target: String) -> TarMember { .init(type: 0x32, name: name, data: [], linkTarget: target) }
        public static func hardlink(_ name: String, to target: String) -> TarMember { .init(type: 0x31, name: name, data: [], linkTarget: target) }
        public static func characterDevice(_ name: String) -> TarMember { .init(type: 0x33, name: name, data: [], linkTarget: "") }
        public static func fifo(_ name: String) -> TarMember { .init(type: 0x36, name: name, data: [], linkTarget: "") }
    }

    /// A POSIX ustar archive of `members` (names over 100 bytes use a pax `path` record), ending
    /// with the two zero blocks.
    public static func tar(_ members: [TarMember]) -> [UInt8] {
        var out: [UInt8] = []
        for m in members {
            let nameBytes = Array(m.name.utf8)
            if nameBytes.count > 100 {
                let record = paxRecord("path", m.name)
                out += tarHeader(name: "././@PaxHeader", type: 0x78, size: record.count, linkTarget: "")
                out += padded(record)
            }
            out += tarHeader(name: nameBytes.count > 100 ? String(m.name.suffix(90)) : m.name, type: m.type, size: m.data.count, linkTarget: m.linkTarget)
            out += padded(m.data)
        }
        out += [UInt8](repeating: 0, count: 1024)
        return out
    }

    /// One 512-byte ustar header with a correct checksum.
    public static func tarHeader(name: String, type: UInt8, size: Int, linkTarget: String) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 512)
        func put(_ bytes: [UInt8], at offset: Int, max: Int) { for (i, b) in bytes.prefix(max).enumerated() { h[offset + i] = b } }
        func octal(_ v: Int, width: Int) -> [UInt8] { Array(String(String(v, radix: 8).suffix(width - 1)).leftPadded(width - 1).utf8) + [0] }
        put(Array(name.utf8), at: 0, max: 100)
        put(octal(type == 0x35 ? 0o755 : 0o644, width: 8), at: 100, max: 8)
        put(octal(0, width: 8), at: 108, max: 8)
        put(octal(0, width: 8), at: 116, max: 8)
        put(octal(size, width: 12), at: 124, max: 12)
        put(octal(1_700_000_000, width: 12), at: 136, max: 12)
        h[156] = type
        put(Array(linkTarget.utf8), at: 157, max: 100)
        put(Array("ustar\u{0}00".utf8), at: 257, max: 8)
        for i in 148..<156 { h[i] = 0x20 }
        let sum = h.reduce(0) { $0 + Int($1) }
        put(octal(sum, width: 7) + [0x20], at: 148, max: 8)
        return h
    }

    /// A pax extended-header record `"<len> key=value\n"` (the length counts itself).
    static func paxRecord(_ key: String, _ value: String) -> [UInt8] {
        let body = " \(key)=\(value)\n"
        var n = body.utf8.count + 1
        while String(n).count + body.utf8.count != n { n += 1 }
        return Array("\(n)\(body)".utf8)
    }

    static func padded(_ data: [UInt8]) -> [UInt8] {
        data + [UInt8](repeating: 0, count: (512 - data.count % 512) % 512)
    }

    // MARK: gzip and deflate

    /// `data` as a gzip file (RFC 1952) made of stored (uncompressed) deflate blocks.
    public static func gzip(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 3]
        out += storedDeflate(data)
        out += le32(Int(crc32(data))) + le32(data.count & 0xFFFF_FFFF)
        return out
    }

    /// Raw deflate (RFC 1951) of `data` in stored blocks of at most 65,535 bytes.
    public static func storedDeflate(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        repeat {
            let n = min(65_535, data.count - i)
            out.append(i + n == data.count ? 1 : 0)
            out += le16(n) + le16(~n & 0xFFFF)
            out += data[i..<(i + n)]
            i += n
        } while i < data.count
        return out
    }

    /// Raw deflate that inflates to `count` zero bytes (`count` >= 1) from about `count / 160`
    /// bytes: one fixed-Huffman block of a literal 0 followed by length-258, distance-1 copies.
    public static func zeroBomb(inflatedSize count: Int) -> [UInt8] {
        precondition(count >= 1)
        var bits = BitWriter()
        bits.write(1, count: 1)                  // BFINAL
        bits.write(1, count: 2)                  // BTYPE = 01, fixed Huffman
        bits.writeHuffman(0x30, count: 8)        // literal 0
        var left = count - 1
        while left >= 258 {
            bits.writeHuffman(0xC5, count: 8)    // length code 285 = 258 bytes
            bits.writeHuffman(0, count: 5)       // distance code 0 = 1 byte back
            left -= 258
        }
        for _ in 0..<left { bits.writeHuffman(0x30, count: 8) }
        bits.writeHuffman(0, count: 7)           // end of block (code 256)
        return bits.finish()
    }

    struct BitWriter {
        var bytes: [UInt8] = []
        var acc: UInt64 = 0
        var used = 0
        /// Appends `count` bits of `value`, least significant first (deflate's header fields).
        mutating func write(_ value: UInt64, count: Int) {
            acc |= value << UInt64(used)
            used += count
            while used >= 8 { bytes.append(UInt8(acc & 0xFF)); acc >>= 8; used -= 8 }
        }
        /// Appends a Huffman code, most significant bit first (deflate's code order).
        mutating func writeHuffman(_ code: UInt64, count: Int) {
            var reversed: UInt64 = 0
            for i in 0..<count where code & (1 << UInt64(i)) != 0 { reversed |= 1 << UInt64(count - 1 - i) }
            write(reversed, count: count)
        }
        mutating func finish() -> [UInt8] { if used > 0 { bytes.append(UInt8(acc & 0xFF)) }; acc = 0; used = 0; return bytes }
    }

    // MARK: zip

    /// One zip member; sizes and CRC default to the truth about `data` and can be overridden to lie.
    public struct ZipMember: Sendable {
        public var name: String
        /// Bytes stored in the archive (already deflated when `method` is 8).
        public var payload: [UInt8]
        /// 0 = stored, 8 = deflate.
        public var method: UInt16
        public var uncompressedSize: Int
        public var crc: UInt32
        /// Unix mode in the high 16 bits of the external attributes (0o120777 marks a symlink).
        public var unixMode: UInt32

        /// A stored member holding `data`.
        public static func stored(_ name: String, _ data: [UInt8], unixMode: UInt32 = 0o100644) -> ZipMember {
            .init(name: name, payload: data, method: 0, uncompressedSize: data.count, crc: crc32(data), unixMode: unixMode)
        }
        /// A deflate member whose payload is `deflated` and which declares `declaredSize` bytes and `crc`.
        public static func deflated(_ name: String, _ deflated: [UInt8], declaredSize: Int, crc: UInt32) -> ZipMember {
            .init(name: name, payload: deflated, method: 8, uncompressedSize: declaredSize, crc: crc, unixMode: 0o100644)
        }
        /// A symlink member pointing at `target`.
        public static func symlink(_ name: String, to target: String) -> ZipMember {
            stored(name, Array(target.utf8), unixMode: 0o120777)
        }
    }

    /// A zip archive (made on Unix, no ZIP64) of `members`.
    public static func zip(_ members: [ZipMember]) -> [UInt8] {
        var out: [UInt8] = []
        var central: [UInt8] = []
        for m in members {
            let name = Array(m.name.utf8)
            let offset = out.count
            out += le32(0x0403_4B50) + le16(20) + le16(0) + le16(Int(m.method)) + le16(0) + le16(0)
            out += le32(Int(m.crc)) + le32(m.payload.count) + le32(m.uncompressedSize) + le16(name.count) + le16(0)
            out += name + m.payload
            central += le32(0x0201_4B50) + le16(3 << 8 | 20) + le16(20) + le16(0) + le16(Int(m.method)) + le16(0) + le16(0)
            central += le32(Int(m.crc)) + le32(m.payload.count) + le32(m.uncompressedSize) + le16(name.count) + le16(0) + le16(0)
            central += le16(0) + le16(0) + le32(Int(m.unixMode) << 16) + le32(offset) + name
        }
        let cdOffset = out.count
        out += central
        out += le32(0x0605_4B50) + le16(0) + le16(0) + le16(members.count) + le16(members.count)
        out += le32(central.count) + le32(cdOffset) + le16(0)
        return out
    }

    // MARK: helpers

    /// CRC-32 (IEEE 802.3, as zip and gzip use).
    public static func crc32(_ data: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in data { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    /// CRC-32 of `count` zero bytes (for bombs whose content is only described, never built).
    public static func crc32OfZeros(count: Int) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for _ in 0..<count { c = crcTable[Int(c & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    private static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
    static func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }
}

private extension String {
    func leftPadded(_ width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}
