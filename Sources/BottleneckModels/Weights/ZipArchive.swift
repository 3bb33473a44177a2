import BottleneckCore
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

    /// Reads the central directory. Every offset and length in the end records and directory
    /// entries is checked against the bytes that exist (through ``ByteReader``); 64-bit ZIP64
    /// values must fit an `Int`. Errors name the file and the byte offset.
    init(file: RandomAccessFile) throws {
        self.file = file
        do {
            entries = try Self.readDirectory(file)
        } catch let e as MalformedBytes {
            throw WeightsError(e)
        }
        var map: [String: Int] = [:]
        for (i, e) in entries.enumerated() { map[e.name] = i }
        byName = map
    }

    /// The smallest central directory entry (46 fixed bytes), bounding the entry count a directory can hold.
    private static let centralEntrySize = 46

    private static func readDirectory(_ file: RandomAccessFile) throws -> [Entry] {
        let path = file.path
        // The end-of-central-directory record (22 bytes) sits in the last 22 + 65535 (max comment) bytes.
        let tailCount = min(file.size, 22 + 65_535)
        let tailStart = file.size - tailCount
        let tail = ByteReader(try file.bytes(at: tailStart, count: tailCount), path: path, baseOffset: tailStart)
        var eocd = -1
        var i = tail.bytes.count - 22
        while i >= 0 {
            if tail.bytes[i] == 0x50, tail.bytes[i + 1] == 0x4B, tail.bytes[i + 2] == 0x05, tail.bytes[i + 3] == 0x06 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else {
            throw MalformedBytes(.truncated, path: path, offset: file.size, reason: "zip end-of-central-directory record not found (file cut short?)")
        }
        var end = tail
        try end.seek(to: eocd + 10)
        var count = Int(try end.le(UInt16.self, "entry count"))
        var cdSize = Int(try end.le(UInt32.self, "central directory size"))
        var cdOffset = Int(try end.le(UInt32.self, "central directory offset"))
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            // ZIP64: a 20-byte locator just before the EOCD points at the 56-byte ZIP64 end record.
            var loc = tail
            guard eocd >= 20 else { throw tail.error("ZIP64 locator missing before the end record", at: eocd) }
            try loc.seek(to: eocd - 20)
            guard try loc.le(UInt32.self, "ZIP64 locator signature") == 0x0706_4B50 else {
                throw tail.error("ZIP64 locator missing before the end record", at: eocd - 20)
            }
            try loc.skip(4, "ZIP64 locator disk")
            let z64 = try loc.length(UInt64.self, "ZIP64 end record offset", inline: false)
            guard CheckedSize.fits(offset: z64, count: 56, in: file.size) else {
                throw tail.error("ZIP64 end record at \(z64) lies beyond the end of the file (\(file.size) bytes)", at: eocd - 12, kind: .truncated)
            }
            var rec = ByteReader(try file.bytes(at: z64, count: 56), path: path, baseOffset: z64)
            guard try rec.le(UInt32.self, "ZIP64 end record signature") == 0x0606_4B50 else { throw rec.error("ZIP64 end record missing", at: 0) }
            try rec.seek(to: 32)
            count = try rec.length(UInt64.self, "ZIP64 entry count", inline: false)
            cdSize = try rec.length(UInt64.self, "ZIP64 central directory size", inline: false)
            cdOffset = try rec.length(UInt64.self, "ZIP64 central directory offset", inline: false)
        }
        guard CheckedSize.fits(offset: cdOffset, count: cdSize, in: file.size) else {
            throw tail.error("zip central directory at \(cdOffset)+\(cdSize) lies beyond the end of the file (\(file.size) bytes)",
                             at: eocd + 12, kind: .truncated)
        }
        guard cdSize <= CheckpointLimits.maxInMemoryBytes else {
            throw tail.error("zip central directory of \(cdSize) bytes exceeds the \(CheckpointLimits.maxInMemoryBytes)-byte limit", at: eocd + 12)
        }
        guard count <= cdSize / centralEntrySize else {
            throw tail.error("zip declares \(count) entries, more than its \(cdSize)-byte central directory can hold", at: eocd + 10)
        }
        var cd = ByteReader(try file.bytes(at: cdOffset, count: cdSize), path: path, baseOffset: cdOffset)
        var list: [Entry] = []
        list.reserveCapacity(count)
        for _ in 0..<count {
            let entryStart = cd.position
            guard try cd.le(UInt32.self, "central directory signature") == 0x0201_4B50 else {
                throw cd.error("bad central directory entry signature", at: entryStart)
            }
            try cd.skip(6, "central directory versions and flags")
            let method = try cd.le(UInt16.self, "compression method")
            try cd.skip(4, "modification time")
            let crc = try cd.le(UInt32.self, "CRC-32")
            var csize = Int(try cd.le(UInt32.self, "compressed size"))
            var usize = Int(try cd.le(UInt32.self, "uncompressed size"))
            let nameLen = Int(try cd.le(UInt16.self, "name length"))
            let extraLen = Int(try cd.le(UInt16.self, "extra field length"))
            let commentLen = Int(try cd.le(UInt16.self, "comment length"))
            try cd.skip(8, "disk number and attributes")
            var local = Int(try cd.le(UInt32.self, "local header offset"))
            let name = String(decoding: try cd.take(nameLen, "entry name"), as: UTF8.self)
            // ZIP64 extended information: 64-bit values for exactly the fields saturated above, in this order.
            var extras = ByteReader(Array(try cd.take(extraLen, "extra fields")), path: path, baseOffset: cd.fileOffset - extraLen)
            while extras.remaining >= 4 {
                let id = try extras.le(UInt16.self, "extra field id")
                let len = try extras.length(UInt16.self, "extra field of \(name)")
                var field = ByteReader(Array(try extras.take(len, "extra field of \(name)")), path: path, baseOffset: extras.fileOffset - len)
                guard id == 0x0001 else { continue }
                if usize == 0xFFFF_FFFF { usize = try field.length(UInt64.self, "ZIP64 uncompressed size of \(name)", inline: false) }
                if csize == 0xFFFF_FFFF { csize = try field.length(UInt64.self, "ZIP64 compressed size of \(name)", inline: false) }
                if local == 0xFFFF_FFFF { local = try field.length(UInt64.self, "ZIP64 local header offset of \(name)", inline: false) }
            }
            try cd.skip(commentLen, "entry comment")
            guard CheckedSize.fits(offset: local, count: csize, in: file.size) else {
                throw cd.error("entry \(name) declares \(csize) bytes at offset \(local), beyond the end of the file (\(file.size) bytes)",
                               at: entryStart, kind: .truncated)
            }
            list.append(Entry(name: name, method: method, compressedSize: csize, uncompressedSize: usize, crc32: crc, localHeaderOffset: local))
        }
        return list
    }

    func entry(named name: String) -> Entry? { byName[name].map { entries[$0] } }

    /// Absolute file offset of the entry's data (after its local header, whose name/extra lengths
    /// may differ from the central directory's: torch pads the local extra field to align data).
    func dataOffset(of entry: Entry) throws -> Int {
        let path = file.path
        guard CheckedSize.fits(offset: entry.localHeaderOffset, count: 30, in: file.size) else {
            throw WeightsError.truncated(path: path, reason: "zip: local header of \(entry.name) at byte \(entry.localHeaderOffset) lies beyond the end of the file (\(file.size) bytes)")
        }
        var h = ByteReader(try file.bytes(at: entry.localHeaderOffset, count: 30), path: path, baseOffset: entry.localHeaderOffset)
        do {
            guard try h.le(UInt32.self, "local header signature") == 0x0403_4B50 else {
                throw WeightsError.malformed(path: path, reason: "zip: bad local header for \(entry.name) at byte \(entry.localHeaderOffset)")
            }
            try h.seek(to: 26)
            let variable = Int(try h.le(UInt16.self, "name length")) + Int(try h.le(UInt16.self, "extra length"))
            guard let start = CheckedSize.add(entry.localHeaderOffset, 30 + variable),
                  CheckedSize.fits(offset: start, count: entry.compressedSize, in: file.size) else {
                throw WeightsError.truncated(path: path, reason: "zip entry \(entry.name) at byte \(entry.localHeaderOffset) needs \(entry.compressedSize) data bytes after its header, beyond the end of the file (\(file.size) bytes)")
            }
            return start
        } catch let e as MalformedBytes {
            throw WeightsError(e)
        }
    }

    /// The whole (decompressed) contents of an entry read into memory, refused before any
    /// allocation when it declares more than `maxBytes` (default ``CheckpointLimits/maxInMemoryBytes``).
    func contents(of entry: Entry, maxBytes: Int = CheckpointLimits.maxInMemoryBytes) throws -> [UInt8] {
        guard entry.uncompressedSize <= maxBytes else {
            throw WeightsError.malformed(path: file.path, reason: "zip entry \(entry.name) declares \(entry.uncompressedSize) bytes; at most \(maxBytes) are read into memory")
        }
        var out: [UInt8] = []
        out.reserveCapacity(entry.uncompressedSize)
        try stream(entry) { out.append(contentsOf: $0) }
        return out
    }

    /// Decompresses `entry` chunk by chunk into `sink` (constant memory: two 1 MiB buffers),
    /// checking size and CRC-32. The sink never receives more than the entry's declared
    /// uncompressed size: inflation stops with an error as soon as the data exceeds it, or exceeds
    /// `maxRatio` times the compressed bytes consumed once past ``CheckpointLimits/inflationAllowance``
    /// (a deflate bomb), or when the entry declares more than `maxBytes`.
    func stream(_ entry: Entry, maxBytes: Int = Int.max, maxRatio: Int = CheckpointLimits.maxInflationRatio,
                into sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let path = file.path
        guard entry.uncompressedSize <= maxBytes else {
            throw WeightsError.malformed(path: path, reason: "zip entry \(entry.name) declares \(entry.uncompressedSize) bytes, over the limit of \(maxBytes)")
        }
        let start = try dataOffset(of: entry)
        let chunk = 1 << 20
        var crc: uLong = crc32(0, nil, 0)
        var produced = 0
        switch entry.method {
        case 0:
            guard entry.compressedSize == entry.uncompressedSize else {
                throw WeightsError.malformed(path: path, reason: "zip: stored entry \(entry.name) declares \(entry.compressedSize) bytes stored but \(entry.uncompressedSize) uncompressed")
            }
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
                        produced += got
                        guard produced <= entry.uncompressedSize else {
                            throw WeightsError.malformed(path: path, reason: "zip: entry \(entry.name) inflates past its declared \(entry.uncompressedSize) bytes")
                        }
                        // Input actually consumed so far (the rest of this chunk is still in zlib's hands).
                        let used = consumed - Int(zs.avail_in)
                        guard produced <= CheckpointLimits.inflationAllowance || produced / max(used, 1) <= maxRatio else {
                            throw WeightsError.malformed(path: path, reason: "zip: entry \(entry.name) inflates \(produced) bytes from \(used) (over \(maxRatio):1; a deflate bomb?)")
                        }
                        try output.withUnsafeBytes { raw in
                            let part = UnsafeRawBufferPointer(rebasing: raw[0..<got])
                            crc = crc32(crc, part.bindMemory(to: Bytef.self).baseAddress, uInt(got))
                            try sink(part)
                        }
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
