import Foundation

/// Builders for checkpoint files, valid and crafted, generated at test time: pickles, zip archives
/// (stored or deflated members, ZIP64 fields, arbitrary declared sizes), deflate streams (plain
/// and bombs) and safetensors files. Every builder returns bytes; nothing here reads files.
public enum HostileCheckpoints {
    // MARK: little-endian fields

    public static func le16(_ v: Int) -> [UInt8] { withUnsafeBytes(of: UInt16(truncatingIfNeeded: v).littleEndian, Array.init) }
    public static func le32(_ v: Int) -> [UInt8] { withUnsafeBytes(of: UInt32(truncatingIfNeeded: v).littleEndian, Array.init) }
    public static func le64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
    public static func le64(_ v: Int) -> [UInt8] { le64(UInt64(bitPattern: Int64(v))) }

    // MARK: CRC-32

    private static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c >> 1) ^ (0xEDB8_8320 & (0 &- (c & 1))) }
        return c
    }

    /// CRC-32 (IEEE) of `bytes`, as zip records it.
    public static func crc32<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }

    // MARK: pickles

    /// A protocol-2 pickle under construction (opcodes appended by the caller).
    public struct Pickle {
        public var bytes: [UInt8] = [0x80, 0x02]
        public init() {}
        public mutating func op(_ codes: UInt8...) { bytes += codes }
        /// BINUNICODE.
        public mutating func string(_ s: String) { let u = Array(s.utf8); bytes.append(0x58); bytes += le32(u.count); bytes += u }
        /// BININT.
        public mutating func int(_ v: Int) { bytes.append(0x4A); bytes += withUnsafeBytes(of: Int32(v).littleEndian, Array.init) }
        /// GLOBAL.
        public mutating func global(_ module: String, _ name: String) { bytes.append(0x63); bytes += Array("\(module)\n\(name)\n".utf8) }
        /// STOP.
        public mutating func stop() { bytes.append(0x2E) }
    }

    /// Protocol-2 pickle of an OrderedDict of float32 tensors, written as torch.save does
    /// (storage `i` is persistent id key "i"; tensors via torch._utils._rebuild_tensor_v2).
    public static func statePickle(_ tensors: [(name: String, shape: [Int])]) -> [UInt8] {
        var p = Pickle()
        p.global("collections", "OrderedDict"); p.op(0x29, 0x52)  // OrderedDict()
        p.op(0x28)  // MARK for SETITEMS
        for (i, t) in tensors.enumerated() {
            p.string(t.name)
            p.global("torch._utils", "_rebuild_tensor_v2")
            p.op(0x28)  // MARK args
            p.op(0x28); p.string("storage"); p.global("torch", "FloatStorage"); p.string("\(i)"); p.string("cpu")
            p.int(t.shape.reduce(1, *)); p.op(0x74, 0x51)  // TUPLE, BINPERSID
            p.int(0)
            p.op(0x28); t.shape.forEach { p.int($0) }; p.op(0x74)
            var strides = [Int](repeating: 1, count: t.shape.count)
            for d in stride(from: t.shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * t.shape[d + 1] }
            p.op(0x28); strides.forEach { p.int($0) }; p.op(0x74)
            p.op(0x89)
            p.global("collections", "OrderedDict"); p.op(0x29, 0x52)
            p.op(0x74, 0x52)  // TUPLE, REDUCE
        }
        p.op(0x75); p.stop()  // SETITEMS, STOP
        return p.bytes
    }

    /// A pickle whose first value is a length-prefixed string or bytes (`opcode` BINUNICODE8 0x8D or
    /// BINBYTES8 0x8E) declaring `length` bytes, followed by only a few.
    public static func hugeLengthPickle(opcode: UInt8, length: UInt64) -> [UInt8] {
        [0x80, 0x02, opcode] + le64(length) + Array("abc".utf8) + [0x2E]
    }

    /// `depth` nested empty lists `[[[...]]]` built as pickle writes them (push all, then APPEND each
    /// into the one below).
    public static func nestedListsPickle(depth: Int) -> [UInt8] {
        var p = Pickle()
        p.bytes += [UInt8](repeating: 0x5D, count: depth)  // EMPTY_LIST
        p.bytes += [UInt8](repeating: 0x61, count: depth - 1)  // APPEND
        p.stop()
        return p.bytes
    }

    /// `depth` nested dicts `{"k": {"k": ...}}` (push all with their keys, then SETITEM each).
    public static func nestedDictsPickle(depth: Int) -> [UInt8] {
        var p = Pickle()
        p.op(0x7D)
        for _ in 1..<depth { p.op(0x8C, 1, UInt8(ascii: "k")); p.op(0x7D) }  // SHORT_BINUNICODE "k", EMPTY_DICT
        p.bytes += [UInt8](repeating: 0x73, count: depth - 1)  // SETITEM
        p.stop()
        return p.bytes
    }

    /// `depth` nested one-element tuples `((((None,),),),)`.
    public static func nestedTuplesPickle(depth: Int) -> [UInt8] {
        var p = Pickle()
        p.op(0x4E)
        p.bytes += [UInt8](repeating: 0x85, count: depth)  // TUPLE1
        p.stop()
        return p.bytes
    }

    /// `depth` nested lists built through the memo: every list is created and memoised first, then
    /// each is fetched and appended into its parent after that parent is already nested (so no
    /// single step sees the depth grow).
    public static func memoNestedListsPickle(depth: Int) -> [UInt8] {
        var p = Pickle()
        for i in 0..<depth { p.op(0x5D, 0x72); p.bytes += le32(i); p.op(0x30) }  // EMPTY_LIST, LONG_BINPUT i, POP
        for i in 0..<(depth - 1) {
            p.op(0x6A); p.bytes += le32(i)          // LONG_BINGET parent
            p.op(0x6A); p.bytes += le32(i + 1)      // LONG_BINGET child
            p.op(0x61, 0x30)                        // APPEND, POP
        }
        p.op(0x6A); p.bytes += le32(0)
        p.stop()
        return p.bytes
    }

    /// A list appended into itself (`a = []; a.append(a)`).
    public static func selfContainingListPickle() -> [UInt8] {
        var p = Pickle()
        p.op(0x5D, 0x71, 0, 0x68, 0, 0x61)  // EMPTY_LIST, BINPUT 0, BINGET 0, APPEND
        p.stop()
        return p.bytes
    }

    /// A ladder of `levels` dicts where level k holds level k-1 under two keys (2^levels paths,
    /// `levels` + 1 distinct dicts), ending in a dict of tensors-free ints.
    public static func sharedDictLadderPickle(levels: Int) -> [UInt8] {
        var p = Pickle()
        p.op(0x7D); p.string("x"); p.int(1); p.op(0x73, 0x71, 0)  // {"x": 1}, BINPUT 0
        for k in 1...levels {
            p.op(0x7D, 0x28)                                         // EMPTY_DICT, MARK
            p.string("a"); p.op(0x6A); p.bytes += le32(k - 1)
            p.string("b"); p.op(0x6A); p.bytes += le32(k - 1)
            p.op(0x75, 0x72); p.bytes += le32(k)                     // SETITEMS, LONG_BINPUT k
        }
        p.stop()
        return p.bytes
    }

    // MARK: deflate

    /// Writes bits least-significant first, as deflate packs them.
    private struct BitWriter {
        var bytes: [UInt8] = []
        var bitCount = 0
        mutating func bits(_ value: UInt32, _ count: Int) {
            for i in 0..<count {
                if bitCount % 8 == 0 { bytes.append(0) }
                if value >> i & 1 == 1 { bytes[bytes.count - 1] |= 1 << UInt8(bitCount % 8) }
                bitCount += 1
            }
        }
        /// `count` zero bits, appended a byte at a time.
        mutating func zeroBits(_ count: Int) {
            bitCount += count
            bytes += [UInt8](repeating: 0, count: (bitCount + 7) / 8 - bytes.count)
        }
        /// A Huffman code: its bits go most-significant first.
        mutating func code(_ value: UInt32, _ length: Int) {
            for i in stride(from: length - 1, through: 0, by: -1) { bits(value >> i & 1, 1) }
        }
    }

    /// `data` as one final raw deflate block of fixed-Huffman literals (valid, not compressed).
    public static func deflateLiterals(_ data: [UInt8]) -> [UInt8] {
        var w = BitWriter()
        w.bits(1, 1); w.bits(1, 2)  // BFINAL, BTYPE = fixed Huffman
        for b in data {
            if b < 144 { w.code(0x30 + UInt32(b), 8) } else { w.code(0x190 + UInt32(b) - 144, 9) }
        }
        w.code(0, 7)  // end of block
        return w.bytes
    }

    /// A raw deflate stream inflating to `count` zero bytes (count >= 1) at deflate's maximum ratio
    /// (about 1032:1): one dynamic-Huffman block whose length-258 / distance-1 match has a 1-bit code.
    public static func deflateZeros(count: Int) -> [UInt8] {
        var w = BitWriter()
        w.bits(1, 1); w.bits(2, 2)         // BFINAL, BTYPE = dynamic Huffman
        w.bits(29, 5)                      // HLIT: 286 literal/length codes
        w.bits(1, 5)                       // HDIST: 2 distance codes
        w.bits(14, 4)                      // HCLEN: 18 code-length codes
        // Code-length code lengths in deflate's order 16,17,18,0,8,7,9,6,10,5,11,4,12,3,13,2,14,1:
        // symbol 18 (run of zeros) gets 1 bit, symbols 1 and 2 get 2 bits.
        let order: [Int] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1]
        for s in order { w.bits(s == 18 ? 1 : (s == 1 || s == 2 ? 2 : 0), 3) }
        // Canonical code-length codes: 18 -> 0, 1 -> 10, 2 -> 11.
        func len1() { w.code(0b10, 2) }
        func len2() { w.code(0b11, 2) }
        func zeros(_ n: Int) { w.code(0, 1); w.bits(UInt32(n - 11), 7) }  // 11...138 zeros
        // Literal/length lengths: 0 -> 2 bits, 1...255 -> none, 256 -> 2 bits, 257...284 -> none, 285 -> 1 bit.
        len2(); zeros(138); zeros(117); len2(); zeros(28); len1()
        // Distance lengths: codes 0 and 1 -> 1 bit each.
        len1(); len1()
        // Canonical literal/length codes: 285 -> 0, 0 -> 10, 256 -> 11; distance 0 -> 0.
        w.code(0b10, 2)                    // literal 0
        var remaining = count - 1
        w.zeroBits(2 * (remaining / 258))  // each match: length 258 (code 0), distance 1 (code 0)
        remaining %= 258
        for _ in 0..<remaining { w.code(0b10, 2) }
        w.code(0b11, 2)                    // end of block
        return w.bytes
    }

    // MARK: zip

    /// One member of a crafted zip archive.
    public struct ZipMember {
        public var name: String
        /// The bytes stored in the archive (compressed when `method` is 8).
        public var stored: [UInt8]
        /// 0 = stored, 8 = deflate.
        public var method: UInt16
        public var crc: UInt32
        /// Uncompressed size written in the central directory (may lie).
        public var uncompressedSize: Int
        /// Write sizes and offset in a ZIP64 extra field (automatic when a size exceeds 32 bits).
        public var zip64: Bool
        /// Replaces the central directory's extra field when set (with `zip64`, the directory's
        /// sizes and offset are still saturated, so a reader looks for them in this field).
        public var centralExtra: [UInt8]?

        public init(name: String, stored: [UInt8], method: UInt16 = 0, crc: UInt32? = nil, uncompressedSize: Int? = nil,
                    zip64: Bool = false, centralExtra: [UInt8]? = nil) {
            self.name = name
            self.stored = stored
            self.method = method
            self.crc = crc ?? (method == 0 ? HostileCheckpoints.crc32(stored) : 0)
            self.uncompressedSize = uncompressedSize ?? stored.count
            self.zip64 = zip64
            self.centralExtra = centralExtra
        }

        /// A member whose data is `data` deflated (fixed-Huffman literals), with a correct CRC and size.
        public static func deflated(_ name: String, _ data: [UInt8]) -> ZipMember {
            ZipMember(name: name, stored: deflateLiterals(data), method: 8, crc: crc32(data), uncompressedSize: data.count)
        }
    }

    /// A zip archive of `members`; `zip64End` adds the ZIP64 end record and locator.
    public static func zip(_ members: [ZipMember], zip64End: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        var central: [UInt8] = []
        for m in members {
            let name = Array(m.name.utf8)
            let offset = out.count
            let big = m.zip64 || m.uncompressedSize >= 0xFFFF_FFFF || m.stored.count >= 0xFFFF_FFFF
            out += le32(0x0403_4B50) + le16(45) + le16(0) + le16(Int(m.method)) + le16(0) + le16(0)
            out += le32(Int(m.crc)) + le32(m.stored.count) + le32(m.uncompressedSize) + le16(name.count) + le16(0) + name
            out += m.stored
            let extra = m.centralExtra ?? (big ? le16(1) + le16(24) + le64(m.uncompressedSize) + le64(m.stored.count) + le64(offset) : [])
            let saturate = big
            central += le32(0x0201_4B50) + le16(45) + le16(45) + le16(0) + le16(Int(m.method)) + le16(0) + le16(0)
            central += le32(Int(m.crc))
            central += saturate ? le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) : le32(m.stored.count) + le32(m.uncompressedSize)
            central += le16(name.count) + le16(extra.count) + le16(0) + le16(0) + le16(0) + le32(0)
            central += saturate ? le32(0xFFFF_FFFF) : le32(offset)
            central += name + extra
        }
        let cdOffset = out.count
        out += central
        if zip64End {
            let z64 = out.count
            out += le32(0x0606_4B50) + le64(44) + le16(45) + le16(45) + le32(0) + le32(0)
            out += le64(members.count) + le64(members.count) + le64(central.count) + le64(cdOffset)
            out += le32(0x0706_4B50) + le32(0) + le64(z64) + le32(1)
            out += le32(0x0605_4B50) + le16(0) + le16(0) + le16(0xFFFF) + le16(0xFFFF) + le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) + le16(0)
        } else {
            out += le32(0x0605_4B50) + le16(0) + le16(0) + le16(members.count) + le16(members.count)
            out += le32(central.count) + le32(cdOffset) + le16(0)
        }
        return out
    }

    /// A torch zip checkpoint of float32 tensors; `deflatePickle` compresses `data.pkl` (torch
    /// stores it, other zip tools may not).
    public static func torchZip(_ tensors: [(name: String, shape: [Int], values: [Float])], deflatePickle: Bool = false) -> [UInt8] {
        let pkl = statePickle(tensors.map { ($0.name, $0.shape) })
        var members = [deflatePickle ? ZipMember.deflated("archive/data.pkl", pkl) : ZipMember(name: "archive/data.pkl", stored: pkl),
                       ZipMember(name: "archive/byteorder", stored: Array("little".utf8))]
        for (i, t) in tensors.enumerated() {
            members.append(ZipMember(name: "archive/data/\(i)", stored: t.values.withUnsafeBytes(Array.init)))
        }
        return zip(members)
    }

    // MARK: safetensors

    /// A safetensors file of float32 tensors in the given order. The JSON header is padded with
    /// spaces to `headerLength` bytes when given (it must be at least the JSON's length);
    /// `offsets` overrides a tensor's `data_offsets` by name.
    public static func safetensors(_ tensors: [(name: String, shape: [Int], values: [Float])], headerLength: Int? = nil,
                                   offsets: [String: (Int, Int)] = [:]) -> [UInt8] {
        var entries: [String] = []
        var data: [UInt8] = []
        for t in tensors {
            let begin = data.count
            data += t.values.withUnsafeBytes(Array.init)
            let (b, e) = offsets[t.name] ?? (begin, data.count)
            entries.append("\"\(t.name)\":{\"dtype\":\"F32\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(b),\(e)]}")
        }
        var header = Array("{\(entries.joined(separator: ","))}".utf8)
        if let n = headerLength {
            precondition(n >= header.count, "header needs \(header.count) bytes")
            header += [UInt8](repeating: 0x20, count: n - header.count)
        }
        return le64(header.count) + header + data
    }
}

/// A file rewritten in place for each of many test cases: `pwrite` then `ftruncate` on one open
/// descriptor. Recreating or truncating a file to zero per case costs milliseconds on ext4 (its
/// replace-via-truncate heuristic flushes the data on close), which dominates a 1,000-case run.
public final class RewritableFile {
    public let url: URL
    private let fd: Int32

    public init(_ url: URL) throws {
        self.url = url
        fd = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path]) }
    }

    deinit { close(fd) }

    /// Replaces the file's contents with `bytes`.
    public func write(_ bytes: [UInt8]) throws {
        let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard written == bytes.count, ftruncate(fd, off_t(bytes.count)) == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path])
        }
    }
}
