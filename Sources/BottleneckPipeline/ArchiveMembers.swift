import Foundation
import BottleneckCore

/// One member of a dataset archive, as listed before anything is extracted.
struct ArchiveMember: Equatable, Sendable {
    enum Kind: Equatable, Sendable {
        case file
        case directory
        /// A symbolic link; `target` is resolved relative to the link's own folder.
        case symlink(target: String)
        /// A tar hard link; `target` names another member (relative to the archive root).
        case hardlink(target: String)
        /// Anything else (device, FIFO, socket, tar type flag the lister does not extract).
        case unsupported(String)
    }

    /// The member's name exactly as stored.
    let name: String
    let kind: Kind
    /// Byte offset of the member's header (in the decompressed stream for a `.tar.gz`).
    let offset: Int
}

/// Path rules for names read from archives and from the list files inside them (`images.txt`,
/// split lists): a name is usable only as a relative path that cannot leave the folder it is
/// resolved in.
enum ArchivePath {
    /// The components of `name` once `.` and empty components are dropped, or why `name` is refused:
    /// absolute, containing a `..` component, a NUL or a backslash (which some tools turn into `/`).
    /// An empty result means the name denotes the root itself (`./`).
    static func components(_ name: String) -> Result<[String], Refusal> {
        if name.hasPrefix("/") { return .failure(Refusal("is an absolute path")) }
        if name.contains("\u{0}") { return .failure(Refusal("contains a NUL byte")) }
        if name.contains("\\") { return .failure(Refusal("contains a backslash")) }
        let parts = name.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if parts.contains("..") { return .failure(Refusal("has a '..' component")) }
        return .success(parts.filter { $0 != "." })
    }

    /// Why a name is refused (a phrase completing "the name ...").
    struct Refusal: Error, Equatable { let reason: String; init(_ r: String) { reason = r } }

    /// Checks every member of an archive before extraction: relative names without `..`, symlinks
    /// whose targets are relative without `..` (so following them only descends below the link's
    /// folder, which is itself under the root), hard links to such names, and nothing else (no
    /// devices, FIFOs or unknown types).
    /// - Throws: ``PipelineError/invalidDataset(path:reason:)`` naming the archive, the member and its offset.
    /// `offsetsDecompressed` says the offsets count bytes of the decompressed tar (a `.tar.gz`).
    static func checkMembers(_ members: [ArchiveMember], archive: String, offsetsDecompressed: Bool = false) throws {
        let unit = offsetsDecompressed ? " of the decompressed tar" : ""
        for m in members {
            func refuse(_ why: String) -> PipelineError {
                .invalidDataset(path: archive, reason: "refusing to extract: member '\(m.name)' at byte \(m.offset)\(unit) \(why); nothing was extracted")
            }
            if case .failure(let r) = components(m.name) { throw refuse(r.reason) }
            switch m.kind {
            case .file, .directory: break
            case .symlink(let target):
                if target.isEmpty { throw refuse("is a symlink with an empty target") }
                if case .failure(let r) = components(target) { throw refuse("is a symlink to '\(target)', which \(r.reason) and could point outside the archive") }
            case .hardlink(let target):
                if case .failure(let r) = components(target) { throw refuse("is a hard link to '\(target)', which \(r.reason) and could point outside the archive") }
                if case .success(let parts) = components(target), parts.isEmpty { throw refuse("is a hard link to the archive root") }
            case .unsupported(let what):
                throw refuse("is \(what), which dataset archives never need")
            }
        }
    }
}

/// Lists tar and zip archives with Bottleneck's own bounds-checked readers, so the extractor can
/// refuse hostile members before the system `tar`/`unzip` writes anything.
enum ArchiveLister {
    /// Longest pax or GNU long-name record accepted (real names are < 4 KiB; bounds memory per header).
    static let maxExtendedHeader = 1 << 20

    /// Members of the tar stream produced by `source` (`.tar`: the file; `.tar.gz`: `gzip -dc`).
    /// Stops at the end-of-archive zero block, as GNU tar does. Refuses, at the header and before
    /// reading its data, a member that takes the total unpacked size past `maxUnpackedBytes`.
    /// - Throws: ``MalformedBytes`` (archive path, offset in the tar stream) for a damaged header.
    static func tarMembers(_ source: ByteStream, maxUnpackedBytes: Int) throws -> [ArchiveMember] {
        let path = source.path
        var members: [ArchiveMember] = []
        var unpacked = 0
        var longName: String?, longLink: String?, paxSize: Int?
        while true {
            let at = source.offset
            guard let header = try source.read(512) else { break }  // end of file without the zero blocks
            if header.allSatisfy({ $0 == 0 }) { break }
            var r = ByteReader(header, path: path, baseOffset: at)
            try checkHeaderSum(header, reader: r)
            let rawName = cString(try r.take(100, "tar name"))
            try r.seek(to: 124)
            let headerSize = try number(try r.take(12, "tar size"), reader: r, field: "size", at: 124)
            try r.seek(to: 156)
            let type = try r.u8("tar type flag")
            let rawLink = cString(try r.take(100, "tar link name"))
            let magic = Array(try r.take(8, "tar magic"))
            try r.seek(to: 345)
            let prefix = cString(try r.take(155, "tar prefix"))
            let size = paxSize ?? headerSize
            paxSize = nil
            func text(_ bytes: [UInt8], _ what: String) throws -> String {
                guard let s = String(validating: bytes, as: UTF8.self) else { throw r.error("\(what) is not valid UTF-8", at: 0) }
                return s
            }
            func payload() throws -> [UInt8] {
                guard size <= maxExtendedHeader else { throw r.error("extended header of \(size) bytes (limit \(maxExtendedHeader))", at: 124) }
                guard let data = try source.read(size) else { throw r.error("extended header data missing", at: 512, kind: .truncated) }
                try source.skip(padding(size))
                return data
            }
            switch type {
            case UInt8(ascii: "L"): longName = try text(cString(ArraySlice(try payload())), "long name"); continue
            case UInt8(ascii: "K"): longLink = try text(cString(ArraySlice(try payload())), "long link name"); continue
            case UInt8(ascii: "x"), UInt8(ascii: "g"):
                let records = try paxRecords(try payload(), reader: r)
                if type == UInt8(ascii: "g") {
                    if let key = records.keys.first(where: { ["path", "linkpath", "size"].contains($0) || $0.hasPrefix("GNU.sparse") }) {
                        throw r.error("global pax header sets '\(key)', which would change every member")
                    }
                    continue
                }
                if let key = records.keys.first(where: { $0.hasPrefix("GNU.sparse") }) { throw r.error("pax header sets '\(key)' (sparse files are not supported)") }
                if let p = records["path"] { longName = p }
                if let l = records["linkpath"] { longLink = l }
                if let s = records["size"] {
                    guard let n = Int(s), n >= 0 else { throw r.error("pax size '\(s)' is not a byte count") }
                    paxSize = n
                }
                continue
            default: break
            }
            // POSIX ustar ("ustar\0") splits long names into prefix/name; old GNU ("ustar  \0") uses the prefix field for other data.
            let posix = magic.starts(with: Array("ustar\u{0}".utf8))
            let name = try longName ?? text(posix && !prefix.isEmpty ? prefix + [0x2F] + rawName : rawName, "member name")
            let link = try longLink ?? text(rawLink, "link name")
            longName = nil; longLink = nil
            let kind: ArchiveMember.Kind
            switch type {
            case 0, UInt8(ascii: "0"), UInt8(ascii: "7"): kind = name.hasSuffix("/") ? .directory : .file
            case UInt8(ascii: "5"): kind = .directory
            case UInt8(ascii: "1"): kind = .hardlink(target: link)
            case UInt8(ascii: "2"): kind = .symlink(target: link)
            case UInt8(ascii: "3"): kind = .unsupported("a character device")
            case UInt8(ascii: "4"): kind = .unsupported("a block device")
            case UInt8(ascii: "6"): kind = .unsupported("a FIFO")
            default: kind = .unsupported("of tar type '\(String(UnicodeScalar(type)))'")
            }
            // Links, directories and devices carry no data; tar implementations disagree on whether their
            // size field is skipped, so a non-zero one is refused rather than guessed (it would desynchronise the listing).
            if kind != .file, size != 0 { throw r.error("\(name): a non-file member declares \(size) data bytes", at: 124) }
            guard let total = CheckedSize.add(unpacked, size), total <= maxUnpackedBytes else {
                throw r.error("\(name): member of \(size) bytes takes the archive past the unpacked-size limit of \(maxUnpackedBytes) bytes", at: 124)
            }
            unpacked = total
            members.append(ArchiveMember(name: name, kind: kind, offset: at))
            guard let skip = CheckedSize.add(size, padding(size)) else { throw r.error("member size \(size) overflows", at: 124) }
            try source.skip(skip)
        }
        return members
    }

    /// Bytes after `size` up to the next 512-byte boundary.
    static func padding(_ size: Int) -> Int { (512 - size % 512) % 512 }

    /// Bytes up to the first NUL.
    static func cString(_ field: ArraySlice<UInt8>) -> [UInt8] { Array(field.prefix { $0 != 0 }) }

    /// A tar numeric field: octal digits (space/NUL padded), or GNU base-256 when the top bit is set.
    static func number(_ field: ArraySlice<UInt8>, reader: ByteReader, field name: String, at: Int) throws -> Int {
        let f = Array(field)
        if let first = f.first, first & 0x80 != 0 {
            guard first == 0x80 else { throw reader.error("tar \(name) is negative or too large", at: at) }
            var v = 0
            for b in f.dropFirst() {
                guard let m = CheckedSize.multiply(v, 256), let s = CheckedSize.add(m, Int(b)) else { throw reader.error("tar \(name) overflows", at: at) }
                v = s
            }
            return v
        }
        let digits = f.drop { $0 == 0x20 }.prefix { $0 != 0 && $0 != 0x20 }
        var v = 0
        for d in digits {
            guard d >= 0x30, d <= 0x37 else { throw reader.error("tar \(name) field is not octal", at: at) }
            guard let m = CheckedSize.multiply(v, 8), let s = CheckedSize.add(m, Int(d - 0x30)) else { throw reader.error("tar \(name) overflows", at: at) }
            v = s
        }
        return v
    }

    /// Verifies the header checksum (unsigned or historic signed byte sum, both accepted by GNU tar).
    static func checkHeaderSum(_ header: [UInt8], reader: ByteReader) throws {
        let stored = try number(ArraySlice(header[148..<156]), reader: reader, field: "checksum", at: 148)
        var unsigned = 0, signed = 0
        for (i, b) in header.enumerated() {
            let v = (148..<156).contains(i) ? 0x20 : b
            unsigned += Int(v)
            signed += Int(Int8(bitPattern: v))
        }
        guard stored == unsigned || stored == signed else {
            throw reader.error("tar header checksum \(stored) does not match its contents (\(unsigned)): not a tar archive, or damaged", at: 148)
        }
    }

    /// `key=value` pairs of a pax extended header (`"<len> key=value\n"` records).
    static func paxRecords(_ data: [UInt8], reader: ByteReader) throws -> [String: String] {
        var out: [String: String] = [:]
        var p = ByteReader(data, path: reader.path, baseOffset: reader.baseOffset + 512)
        while !p.isAtEnd {
            let start = p.position
            var length = 0
            while let c = p.peek(), c != 0x20 {
                guard c >= 0x30, c <= 0x39, let m = CheckedSize.multiply(length, 10), let s = CheckedSize.add(m, Int(c - 0x30)) else {
                    throw p.error("pax record length is not a number")
                }
                length = s
                _ = try p.u8()
            }
            guard length > p.position - start + 1 else { throw p.error("pax record length \(length) is too short", at: start) }
            try p.seek(to: start)
            let record = Array(try p.take(length, "pax record"))
            guard record.last == 0x0A, let space = record.firstIndex(of: 0x20), let eq = record[space...].firstIndex(of: 0x3D),
                  let key = String(validating: record[(space + 1)..<eq], as: UTF8.self),
                  let value = String(validating: record[(eq + 1)..<(record.count - 1)], as: UTF8.self) else {
                throw p.error("malformed pax record", at: start)
            }
            out[key] = value
        }
        return out
    }

    /// Most bytes of central directory read (a real dataset zip has < 10 MB; bounds memory).
    static let maxCentralDirectory = 256 << 20

    /// Members of a zip file, from its central directory (what `unzip` extracts by).
    /// - Throws: ``MalformedBytes`` naming the file and offset, or ``PipelineError/io(path:reason:)``.
    /// Refuses an archive whose declared member sizes add up to more than `maxUnpackedBytes`.
    static func zipMembers(_ url: URL, maxUnpackedBytes: Int) throws -> [ArchiveMember] {
        let path = url.path
        guard let fh = FileHandle(forReadingAtPath: path) else { throw PipelineError.io(path: path, reason: "cannot open for reading") }
        defer { try? fh.close() }
        let size: Int
        do { size = Int(try fh.seekToEnd()) } catch { throw PipelineError.io(path: path, reason: "cannot seek: \(error.localizedDescription)") }
        func read(_ offset: Int, _ count: Int) throws -> [UInt8] {
            guard CheckedSize.fits(offset: offset, count: count, in: size) else {
                throw MalformedBytes(.truncated, path: path, offset: offset, reason: "needs \(count) bytes here, the file has \(size)")
            }
            do {
                try fh.seek(toOffset: UInt64(offset))
                let d = try fh.read(upToCount: count) ?? Data()
                guard d.count == count else { throw MalformedBytes(.truncated, path: path, offset: offset + d.count, reason: "file ends early") }
                return [UInt8](d)
            } catch let e as MalformedBytes { throw e } catch {
                throw PipelineError.io(path: path, reason: "read failed at byte \(offset): \(error.localizedDescription)")
            }
        }
        let tailCount = min(size, 22 + 65_535)
        let tail = try read(size - tailCount, tailCount)
        guard let eocd = stride(from: tail.count - 22, through: 0, by: -1).first(where: {
            tail[$0] == 0x50 && tail[$0 + 1] == 0x4B && tail[$0 + 2] == 0x05 && tail[$0 + 3] == 0x06
        }) else {
            throw MalformedBytes(.truncated, path: path, offset: size, reason: "zip end-of-central-directory record not found (not a zip, or cut short)")
        }
        var e = ByteReader(tail, path: path, baseOffset: size - tailCount, start: eocd + 4)
        let disk = try e.le(UInt16.self, "disk number"), cdDisk = try e.le(UInt16.self, "central directory disk")
        guard disk == 0, cdDisk == 0 else { throw e.error("multi-volume zip archives are not supported") }
        _ = try e.le(UInt16.self, "entries on this disk")
        var count = Int(try e.le(UInt16.self, "entry count"))
        var cdSize = Int(try e.le(UInt32.self, "central directory size"))
        var cdOffset = Int(try e.le(UInt32.self, "central directory offset"))
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            var loc = ByteReader(tail, path: path, baseOffset: size - tailCount, start: max(0, eocd - 20))
            guard eocd >= 20, try loc.le(UInt32.self, "ZIP64 locator") == 0x0706_4B50 else { throw e.error("ZIP64 locator missing") }
            _ = try loc.le(UInt32.self, "ZIP64 disk")
            let recordOffset = try loc.length(UInt64.self, "ZIP64 end record offset", limit: size, inline: false)
            var z = ByteReader(try read(recordOffset, 56), path: path, baseOffset: recordOffset)
            guard try z.le(UInt32.self, "ZIP64 end record") == 0x0606_4B50 else { throw z.error("ZIP64 end record missing", at: 0) }
            try z.seek(to: 32)
            count = try z.length(UInt64.self, "ZIP64 entry count", limit: size, inline: false)
            cdSize = try z.length(UInt64.self, "ZIP64 central directory size", limit: maxCentralDirectory, inline: false)
            cdOffset = try z.length(UInt64.self, "ZIP64 central directory offset", limit: size, inline: false)
        }
        guard cdSize <= maxCentralDirectory else {
            throw MalformedBytes(.invalid, path: path, offset: size - tailCount + eocd + 12, reason: "central directory of \(cdSize) bytes (limit \(maxCentralDirectory))")
        }
        var cd = ByteReader(try read(cdOffset, cdSize), path: path, baseOffset: cdOffset)
        var members: [ArchiveMember] = []
        var unpacked = 0
        while !cd.isAtEnd {
            let at = cd.fileOffset
            guard try cd.le(UInt32.self, "central directory signature") == 0x0201_4B50 else { throw cd.error("bad central directory entry signature", at: cd.position - 4) }
            let madeBy = try cd.le(UInt16.self, "version made by")
            _ = try cd.le(UInt16.self, "version needed")
            let flags = try cd.le(UInt16.self, "flags")
            try cd.skip(10, "method, time, date and CRC")
            _ = try cd.le(UInt32.self, "compressed size")
            var size = Int(try cd.le(UInt32.self, "uncompressed size"))
            let nameLength = Int(try cd.le(UInt16.self, "name length"))
            let extraLength = Int(try cd.le(UInt16.self, "extra length"))
            let commentLength = Int(try cd.le(UInt16.self, "comment length"))
            try cd.skip(4, "disk and internal attributes")
            let external = try cd.le(UInt32.self, "external attributes")
            try cd.skip(4, "local header offset")
            let nameBytes = try cd.take(nameLength, "member name")
            var extra = ByteReader(Array(try cd.take(extraLength, "extra field")), path: path, baseOffset: cd.fileOffset - extraLength)
            while extra.remaining >= 4 {
                let id = try extra.le(UInt16.self, "extra field id")
                let length = Int(try extra.le(UInt16.self, "extra field length"))
                guard length <= extra.remaining else { break }  // unzip tolerates a short final extra field
                // ZIP64: the 64-bit uncompressed size comes first when the 32-bit field is saturated.
                if id == 0x0001, size == 0xFFFF_FFFF, length >= 8 {
                    var z = extra
                    size = try z.length(UInt64.self, "ZIP64 uncompressed size", limit: Int.max, inline: false)
                }
                try extra.skip(length, "extra field data")
            }
            try cd.skip(commentLength, "comment")
            guard let name = String(validating: nameBytes, as: UTF8.self) else {
                throw MalformedBytes(.invalid, path: path, offset: at + 46, reason: "member name is not valid UTF-8")
            }
            let host = madeBy >> 8
            let mode = (host == 3 || host == 19) ? (external >> 16) & 0o170000 : 0
            let kind: ArchiveMember.Kind
            if flags & 1 != 0 { kind = .unsupported("encrypted (unzip would prompt for a password)") }
            else {
                switch mode {
                case 0: kind = name.hasSuffix("/") ? .directory : .file
                case 0o100000: kind = .file
                case 0o040000: kind = .directory
                case 0o120000: kind = .unsupported("a symbolic link (not extracted from zip archives)")
                default: kind = .unsupported("a special file (mode \(String(mode, radix: 8)))")
                }
            }
            guard let total = CheckedSize.add(unpacked, size), total <= maxUnpackedBytes else {
                throw MalformedBytes(.invalid, path: path, offset: at, reason: "\(name): member of \(size) bytes takes the archive past the unpacked-size limit of \(maxUnpackedBytes) bytes")
            }
            unpacked = total
            members.append(ArchiveMember(name: name, kind: kind, offset: at))
        }
        guard members.count == count else {
            throw MalformedBytes(.invalid, path: path, offset: cdOffset, reason: "central directory lists \(members.count) entries, the end record says \(count)")
        }
        return members
    }
}

/// A forward-only byte source (a file, or a decompressor's output) read in exact-size pieces.
final class ByteStream {
    /// The archive the bytes come from, for errors.
    let path: String
    /// Bytes consumed so far.
    private(set) var offset = 0
    private let pull: (Int) throws -> Data

    /// `pull(n)` returns between 1 and `n` bytes, or an empty `Data` only at the end of the stream.
    init(path: String, pull: @escaping (Int) throws -> Data) { self.path = path; self.pull = pull }

    /// Exactly `count` bytes, or nil when the stream is already at its end.
    /// - Throws: ``MalformedBytes`` when it ends part-way.
    func read(_ count: Int) throws -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            let d = try pull(count - out.count)
            if d.isEmpty {
                if out.isEmpty { return nil }
                throw MalformedBytes(.truncated, path: path, offset: offset + out.count, reason: "archive ends inside a member")
            }
            out.append(contentsOf: d)
        }
        offset += count
        return out
    }

    /// Discards `count` bytes (in 1 MiB pieces). - Throws: ``MalformedBytes`` if the stream ends first.
    func skip(_ count: Int) throws {
        var left = count
        while left > 0 {
            let d = try pull(min(left, 1 << 20))
            if d.isEmpty { throw MalformedBytes(.truncated, path: path, offset: offset, reason: "archive ends inside a member (\(left) bytes missing)") }
            left -= d.count
            offset += d.count
        }
    }

    /// Discards everything up to the end.
    func drain() throws { while !(try pull(1 << 20)).isEmpty {} }
}
