import CZlib
import Foundation

/// A minimal read-only zip archive: the central directory (with ZIP64 extensions, which
/// `torch.save` writes for archives over 4 GiB) and access to stored or DEFLATE-compressed entries.
///
/// Only the central directory is parsed up front; entry data is read on demand with `pread`.
final class ZipArchive {
    /// One file in the archive.
    struct Entry {
        let name: String
        /// 0 = stored, 8 = deflate.
        let method: UInt16
        let compressedSize: Int
        let uncompressedSize: Int
        let crc32: UInt32
        let localHeaderOffset: Int
    }

    let file: RandomAccessFile
    /// Entries in central-directory order.
    let entries: [Entry]
    private let byName: [String: Int]

    /// Whether the file starts with a zip local-file-header signature.
    static func looksLikeZip(_ head: [UInt8]) -> Bool {
        head.count >= 4 && head[0] == 0x50 && head[1] == 0x4B && head[2] == 0x03 && head[3] == 0x04
    }

    init(file: RandomAccessFile) throws {
        self.file = file
        let path = file.path
        func malformed(_ r: String) -> WeightsError { .malformed(path: path, reason: "zip: \(r)") }
        // The end-of-central-directory record sits in the last 22 + 65535 (max comment) bytes.
        let tailCount = min(file.size, 22 + 65_535)
        let tailStart = file.size - tailCount
        let tail = try file.bytes(at: tailStart, count: tailCount)
        var eocd = -1
        if tail.count >= 22 {
            var i = tail.count - 22
            while i >= 0 {
                if tail[i] == 0x50, tail[i + 1] == 0x4B, tail[i + 2] == 0x05, tail[i + 3] == 0x06 { eocd = i; break }
                i -= 1
            }
        }
        guard eocd >= 0 else {
            throw WeightsError.truncated(path: path, reason: "zip end-of-central-directory record not found (file cut short?)")
        }
        var count = Int(tail.le(UInt16.self, at: eocd + 10))
        var cdSize = Int(tail.le(UInt32.self, at: eocd + 12))
        var cdOffset = Int(tail.le(UInt32.self, at: eocd + 16))
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            // ZIP64: a locator just before the EOCD points at the ZIP64 EOCD record.
            let loc = eocd - 20
            guard loc >= 0, tail.le(UInt32.self, at: loc) == 0x0706_4B50 else { throw malformed("ZIP64 locator missing") }
            let z64 = Int(tail.le(UInt64.self, at: loc + 8))
            let rec = try file.bytes(at: z64, count: 56)
            guard rec.le(UInt32.self, at: 0) == 0x0606_4B50 else { throw malformed("ZIP64 end record missing") }
            count = Int(rec.le(UInt64.self, at: 32))
            cdSize = Int(rec.le(UInt64.self, at: 40))
            cdOffset = Int(rec.le(UInt64.self, at: 48))
        }
        guard cdOffset >= 0, cdSize >= 0, cdOffset + cdSize <= file.size else {
            throw WeightsError.truncated(path: path, reason: "zip central directory at \(cdOffset)+\(cdSize) lies beyond the end of the file (\(file.size) bytes)")
        }
        let cd = try file.bytes(at: cdOffset, count: cdSize)
        var list: [Entry] = []
        list.reserveCapacity(count)
        var p = 0
        for _ in 0..<count {
            guard p + 46 <= cd.count, cd.le(UInt32.self, at: p) == 0x0201_4B50 else { throw malformed("bad central directory entry at \(cdOffset + p)") }
            let method = cd.le(UInt16.self, at: p + 10)
            let crc = cd.le(UInt32.self, at: p + 16)
            var csize = Int(cd.le(UInt32.self, at: p + 20))
            var usize = Int(cd.le(UInt32.self, at: p + 24))
            let nameLen = Int(cd.le(UInt16.self, at: p + 28))
            let extraLen = Int(cd.le(UInt16.self, at: p + 30))
            let commentLen = Int(cd.le(UInt16.self, at: p + 32))
            var local = Int(cd.le(UInt32.self, at: p + 42))
            guard p + 46 + nameLen + extraLen + commentLen <= cd.count else { throw malformed("central directory entry overruns the directory") }
            let name = String(decoding: cd[(p + 46)..<(p + 46 + nameLen)], as: UTF8.self)
            // ZIP64 extended information: 64-bit values for exactly the fields saturated above, in this order.
            var e = p + 46 + nameLen
            let extraEnd = e + extraLen
            while e + 4 <= extraEnd {
                let id = cd.le(UInt16.self, at: e), len = Int(cd.le(UInt16.self, at: e + 2))
                if id == 0x0001 {
                    var q = e + 4
                    if usize == 0xFFFF_FFFF, q + 8 <= e + 4 + len { usize = Int(cd.le(UInt64.self, at: q)); q += 8 }
                    if csize == 0xFFFF_FFFF, q + 8 <= e + 4 + len { csize = Int(cd.le(UInt64.self, at: q)); q += 8 }
                    if local == 0xFFFF_FFFF, q + 8 <= e + 4 + len { local = Int(cd.le(UInt64.self, at: q)); q += 8 }
                }
                e += 4 + len
            }
            list.append(Entry(name: name, method: method, compressedSize: csize, uncompressedSize: usize, crc32: crc, localHeaderOffset: local))
            p += 46 + nameLen + extraLen + commentLen
        }
        entries = list
        var map: [String: Int] = [:]
        for (i, e) in list.enumerated() { map[e.name] = i }
        byName = map
    }

    func entry(named name: String) -> Entry? { byName[name].map { entries[$0] } }

    /// Absolute file offset of the entry's data (after its local header, whose name/extra lengths
    /// may differ from the central directory's: torch pads the local extra field to align data).
    func dataOffset(of entry: Entry) throws -> Int {
        let h = try file.bytes(at: entry.localHeaderOffset, count: 30)
        guard h.le(UInt32.self, at: 0) == 0x0403_4B50 else {
            throw WeightsError.malformed(path: file.path, reason: "zip: bad local header for \(entry.name)")
        }
        let start = entry.localHeaderOffset + 30 + Int(h.le(UInt16.self, at: 26)) + Int(h.le(UInt16.self, at: 28))
        guard start + entry.compressedSize <= file.size else {
            throw WeightsError.truncated(path: file.path, reason: "zip entry \(entry.name) needs bytes up to \(start + entry.compressedSize), file has \(file.size)")
        }
        return start
    }

    /// The whole (decompressed) contents of a small entry.
    func contents(of entry: Entry) throws -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(entry.uncompressedSize)
        try stream(entry) { out.append(contentsOf: $0) }
        return out
    }

    /// Decompresses `entry` chunk by chunk into `sink` (constant memory), checking size and CRC-32.
    func stream(_ entry: Entry, into sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let start = try dataOffset(of: entry)
        let path = file.path
        let chunk = 1 << 20
        var crc: uLong = crc32(0, nil, 0)
        var produced = 0
        switch entry.method {
        case 0:
            var buf = [UInt8](repeating: 0, count: min(chunk, max(entry.compressedSize, 1)))
            var done = 0
            while done < entry.compressedSize {
                let n = min(buf.count, entry.compressedSize - done)
                try buf.withUnsafeMutableBytes { try file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: start + done) }
                try buf.withUnsafeBytes { raw in
                    let part = UnsafeRawBufferPointer(rebasing: raw[0..<n])
                    crc = crc32(crc, part.bindMemory(to: Bytef.self).baseAddress, uInt(n))
                    try sink(part)
                }
                done += n
            }
            produced = done
        case 8:
            var zs = z_stream()
            // Negative window bits: raw deflate data without a zlib header, as zip stores it.
            guard inflateInit2_(&zs, -MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
                throw WeightsError.io(path: path, reason: "zlib inflateInit failed")
            }
            defer { inflateEnd(&zs) }
            var input = [UInt8](repeating: 0, count: chunk)
            var output = [UInt8](repeating: 0, count: chunk)
            var consumed = 0
            var finished = false
            while !finished {
                let n = min(chunk, entry.compressedSize - consumed)
                if n == 0 { throw WeightsError.truncated(path: path, reason: "deflate stream of \(entry.name) ends early") }
                try input.withUnsafeMutableBytes { try file.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: start + consumed) }
                consumed += n
                try input.withUnsafeMutableBufferPointer { inp in
                    zs.next_in = inp.baseAddress
                    zs.avail_in = uInt(n)
                    repeat {
                        let status: Int32 = output.withUnsafeMutableBufferPointer { out in
                            zs.next_out = out.baseAddress
                            zs.avail_out = uInt(out.count)
                            return inflate(&zs, Z_NO_FLUSH)
                        }
                        guard status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR else {
                            throw WeightsError.malformed(path: path, reason: "zip: corrupt deflate data in \(entry.name) (zlib \(status))")
                        }
                        let got = output.count - Int(zs.avail_out)
                        try output.withUnsafeBytes { raw in
                            let part = UnsafeRawBufferPointer(rebasing: raw[0..<got])
                            crc = crc32(crc, part.bindMemory(to: Bytef.self).baseAddress, uInt(got))
                            try sink(part)
                        }
                        produced += got
                        if status == Z_STREAM_END { finished = true; break }
                        if status == Z_BUF_ERROR { break }
                    } while zs.avail_out == 0 || zs.avail_in > 0
                }
            }
        default:
            throw WeightsError.malformed(path: path, reason: "zip: entry \(entry.name) uses unsupported compression method \(entry.method)")
        }
        guard produced == entry.uncompressedSize, UInt32(crc) == entry.crc32 else {
            throw WeightsError.malformed(path: path, reason: "zip: entry \(entry.name) fails its size/CRC-32 check")
        }
    }
}
