import Foundation
import BottleneckCore

/// How labels and splits were read from a dataset directory.
public enum DatasetLayout: String, Sendable {
    /// `DIR/<class>/...`: the first path component is the label.
    case classFolders = "class-folders"
    /// `DIR/train|val|test/<class>/...`: split, then label.
    case splitClassFolders = "split-class-folders"
    /// Images directly in `DIR`: no labels.
    case flat
}

/// One image file found by the scanner, or an entry that could not be examined (see ``failure``).
public struct DatasetEntry: Sendable, Equatable {
    /// Path relative to the dataset root, `/`-separated. Names that are not valid UTF-8 appear in
    /// their escaped form (see ``DatasetScanner/displayName(_:)``); ``rawPath`` then holds the bytes.
    /// An unreadable folder's path ends in `/`.
    public var path: String
    /// `train`, `val`, `test`, or empty when the layout has no splits.
    public var split: String
    /// Class name, or empty when unlabeled.
    public var label: String
    /// File size in bytes (part of the input fingerprint).
    public var size: Int64
    /// Modification time in nanoseconds since 1970 (part of the input fingerprint).
    public var modified: Int64
    /// The relative path's bytes when some component is not valid UTF-8 (open the file by these); nil otherwise.
    public var rawPath: [UInt8]?
    /// Why the scan could not use this entry (an unreadable folder, a broken link, an unreadable
    /// file); nil for an image candidate. Such entries are recorded as failures, never dropped.
    public var failure: String?

    /// Creates an entry.
    public init(path: String, split: String, label: String, size: Int64 = 0, modified: Int64 = 0,
                rawPath: [UInt8]? = nil, failure: String? = nil) {
        self.path = path; self.split = split; self.label = label; self.size = size; self.modified = modified
        self.rawPath = rawPath; self.failure = failure
    }
}

/// A file the scanner ignored, with why (hidden, not an image).
public struct SkippedFile: Sendable, Equatable {
    /// Path relative to the dataset root.
    public var path: String
    /// Human-readable reason.
    public var reason: String
}

/// The result of scanning a dataset directory: images in byte-wise path order, plus what was skipped.
public struct DatasetScan: Sendable {
    /// The scanned directory (standardised absolute URL).
    public var root: URL
    /// Detected layout.
    public var layout: DatasetLayout
    /// Candidate images and entries that could not be examined (``DatasetEntry/failure``), sorted
    /// by the UTF-8 bytes of `path`.
    public var entries: [DatasetEntry]
    /// Hidden files, non-images and special files (FIFOs, sockets, devices), sorted by path.
    public var skipped: [SkippedFile]
    /// Sorted (byte-wise) distinct non-empty labels.
    public var classes: [String]
    /// Sorted distinct non-empty splits.
    public var splits: [String]

    /// Index of `label` in ``classes``, or -1 for an empty or unknown label. O(log classes).
    public func labelIndex(_ label: String) -> Int {
        guard !label.isEmpty else { return -1 }
        var lo = 0, hi = classes.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if TextFormat.byteLess(classes[mid], label) { lo = mid + 1 } else { hi = mid }
        }
        return lo < classes.count && classes[lo] == label ? lo : -1
    }

    /// SHA-256 over every entry's path, size and modification time: changes when any image is
    /// added, removed, renamed or rewritten.
    public var listFingerprint: String {
        var h = SHA256()
        for e in entries {
            h.update(Data("\(e.path)\t\(e.size)\t\(e.modified)\(e.failure.map { "\t" + $0 } ?? "")\n".utf8))
        }
        return h.finalize()
    }
}

/// Finds images under a directory by content (magic bytes) as well as by extension.
///
/// A file is an image candidate when its first bytes are a known image signature or its extension
/// is an image extension; a candidate that then fails to decode (a GIF, a truncated JPEG, a text
/// file named `.jpg`) is a per-image failure reported by the extractor. Hidden files and hidden
/// directories (names starting with `.`), non-images and special files are skipped and listed.
///
/// Nothing is lost silently: a folder that cannot be listed, an entry that cannot be examined (a
/// broken or looping symbolic link) and a file that cannot be opened become entries carrying a
/// ``DatasetEntry/failure``, which the extractor records in `index.csv` and counts as failures.
/// An unreadable class folder therefore stays a class, as in torchvision's `ImageFolder`, whose
/// `class_to_idx` comes from the folder names alone: class indices never shift because a folder
/// could not be read. Names that are not valid UTF-8 are read and opened by their bytes and shown
/// escaped. Symbolic links are followed; directory cycles are broken by device/inode.
/// Cost: one `stat` and one 16-byte read per file.
public enum DatasetScanner {
    /// Directory names that mark the split layout.
    public static let splitNames: Set<String> = ["train", "val", "test"]
    /// Extensions treated as images even when the content is not recognised.
    public static let imageExtensions: Set<String> = [
        "jpg", "jpeg", "jpe", "jfif", "png", "ppm", "pgm", "pnm", "pbm", "gif", "bmp", "webp", "tif", "tiff", "heic", "heif",
    ]

    /// The image format named by a file's first bytes, or nil when none is recognised.
    public static func sniffFormat(_ head: [UInt8]) -> String? {
        func starts(_ sig: [UInt8]) -> Bool { head.count >= sig.count && Array(head.prefix(sig.count)) == sig }
        if starts([0xFF, 0xD8, 0xFF]) { return "jpeg" }
        if starts([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return "png" }
        if starts(Array("GIF8".utf8)) { return "gif" }
        if starts(Array("BM".utf8)) && head.count >= 14 { return "bmp" }
        if starts([0x49, 0x49, 0x2A, 0x00]) || starts([0x4D, 0x4D, 0x00, 0x2A]) { return "tiff" }
        if starts(Array("RIFF".utf8)) && head.count >= 12 && Array(head[8..<12]) == Array("WEBP".utf8) { return "webp" }
        if head.count >= 12 && Array(head[4..<8]) == Array("ftyp".utf8) {
            let brand = String(decoding: head[8..<12], as: UTF8.self)
            if ["heic", "heix", "mif1", "avif"].contains(brand) { return brand == "avif" ? "avif" : "heif" }
        }
        if head.count >= 3 && head[0] == UInt8(ascii: "P") && (UInt8(ascii: "1")...UInt8(ascii: "6")).contains(head[1])
            && [0x20, 0x0A, 0x0D, 0x09].contains(head[2]) { return "pnm" }
        return nil
    }

    /// A file name's bytes as text: the name itself when it is valid UTF-8 (`isEscaped` false);
    /// otherwise each byte that is not part of valid UTF-8 written as `\xNN` (two upper-case hex
    /// digits) and each backslash as `\\`, so the escaped form names one byte string only.
    public static func displayName<C: Collection>(_ bytes: C) -> (text: String, isEscaped: Bool) where C.Element == UInt8 {
        if let s = String(validating: bytes, as: UTF8.self) { return (s, false) }
        let b = Array(bytes)
        var out = ""
        var i = 0
        while i < b.count {
            var it = b[i...].makeIterator()
            var parser = Unicode.UTF8.ForwardParser()
            switch parser.parseScalar(from: &it) {
            case .valid(let encoded):
                let scalar = Unicode.UTF8.decode(encoded)
                if scalar == "\\" { out += "\\\\" } else { out.unicodeScalars.append(scalar) }
                i += encoded.count
            case .error(let length):
                for byte in b[i..<min(b.count, i + max(1, length))] { out += String(format: "\\x%02X", byte) }
                i += max(1, length)
            case .emptyInput:
                i = b.count
            }
        }
        return (out, true)
    }

    /// Scans `root` recursively.
    /// - Throws: ``PipelineError/invalidDataset(path:reason:)`` when `root` is not a readable
    ///   directory, or when two different byte names would be shown as the same escaped path.
    public static func scan(_ root: URL) throws -> DatasetScan {
        let rootURL = root.standardizedFileURL
        let rootBytes = Array(rootURL.path.utf8)
        var st = stat()
        guard stat(rootURL.path, &st) == 0 else {
            throw PipelineError.invalidDataset(path: rootURL.path, reason: "cannot open: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw PipelineError.invalidDataset(path: rootURL.path, reason: "not a directory; pass the folder that holds the images")
        }
        struct Found { var path: String; var raw: [UInt8]?; var isFolder: Bool; var size: Int64; var modified: Int64; var failure: String? }
        struct Folder { var display: String; var raw: [UInt8]; var escaped: Bool }
        var found: [Found] = []
        var skipped: [SkippedFile] = []
        var visited: Set<[UInt64]> = [[UInt64(st.st_dev), UInt64(st.st_ino)]]
        var stack: [Folder] = [Folder(display: "", raw: [], escaped: false)]
        var head = [UInt8](repeating: 0, count: 16)
        func absolute(_ rel: [UInt8]) -> [CChar] {
            (rel.isEmpty ? rootBytes : rootBytes + [0x2F] + rel).map { CChar(bitPattern: $0) } + [0]
        }
        func systemError() -> String { String(cString: strerror(errno)) }
        while let folder = stack.popLast() {
            let rel = folder.display
            let dirPath = absolute(folder.raw)
            guard let dir = opendir(dirPath) else {
                let reason = systemError()
                if rel.isEmpty { throw PipelineError.invalidDataset(path: rootURL.path, reason: "cannot list: \(reason)") }
                found.append(Found(path: rel + "/", raw: folder.escaped ? folder.raw + [0x2F] : nil, isFolder: true,
                                   size: 0, modified: 0, failure: "unreadable folder: \(reason)"))
                continue
            }
            var names: [[UInt8]] = []
            var listError: String? = nil
            while true {
                errno = 0
                guard let ent = readdir(dir) else {
                    if errno != 0 { listError = systemError() }
                    break
                }
                let name: [UInt8] = withUnsafeBytes(of: &ent.pointee.d_name) { raw in
                    let bytes = raw.bindMemory(to: UInt8.self)
                    return Array(bytes.prefix(while: { $0 != 0 }))
                }
                if name == [0x2E] || name == [0x2E, 0x2E] { continue }
                names.append(name)
            }
            closedir(dir)
            if let listError {
                // Entries already read are still scanned; the folder's failure records what may be missing.
                found.append(Found(path: rel.isEmpty ? "./" : rel + "/", raw: folder.escaped ? folder.raw + [0x2F] : nil, isFolder: true,
                                   size: 0, modified: 0, failure: "folder listing stopped early: \(listError)"))
            }
            for name in names {
                let shown = displayName(name)
                let childRel = rel.isEmpty ? shown.text : rel + "/" + shown.text
                let childRaw = folder.raw.isEmpty ? name : folder.raw + [0x2F] + name
                let escaped = folder.escaped || shown.isEscaped
                let childPath = absolute(childRaw)
                if name.first == 0x2E {
                    skipped.append(SkippedFile(path: childRel, reason: "hidden"))
                    continue
                }
                var cst = stat()
                guard stat(childPath, &cst) == 0 else {
                    let code = errno
                    var lst = stat()
                    let isLink = lstat(childPath, &lst) == 0 && (lst.st_mode & S_IFMT) == S_IFLNK
                    let reason = isLink && code == ENOENT ? "broken symbolic link (its target does not exist)"
                        : isLink && code == ELOOP ? "symbolic link loop" : "cannot examine: \(String(cString: strerror(code)))"
                    found.append(Found(path: childRel, raw: escaped ? childRaw : nil, isFolder: false, size: 0, modified: 0, failure: reason))
                    continue
                }
                let kind = cst.st_mode & S_IFMT
                if kind == S_IFDIR {
                    if visited.insert([UInt64(cst.st_dev), UInt64(cst.st_ino)]).inserted {
                        stack.append(Folder(display: childRel, raw: childRaw, escaped: escaped))
                    } else { skipped.append(SkippedFile(path: childRel, reason: "directory already visited (link cycle)")) }
                    continue
                }
                guard kind == S_IFREG else {
                    skipped.append(SkippedFile(path: childRel, reason: "not a regular file"))
                    continue
                }
                #if os(Linux)
                let mtime = Int64(cst.st_mtim.tv_sec) * 1_000_000_000 + Int64(cst.st_mtim.tv_nsec)
                #else
                let mtime = Int64(cst.st_mtimespec.tv_sec) * 1_000_000_000 + Int64(cst.st_mtimespec.tv_nsec)
                #endif
                let ext = (shown.text as NSString).pathExtension.lowercased()
                var isImage = imageExtensions.contains(ext)
                if !isImage {
                    let fd = open(childPath, O_RDONLY | O_NONBLOCK)
                    guard fd >= 0 else {
                        found.append(Found(path: childRel, raw: escaped ? childRaw : nil, isFolder: false, size: Int64(cst.st_size),
                                           modified: mtime, failure: "cannot read: \(systemError())"))
                        continue
                    }
                    let n = head.withUnsafeMutableBytes { read(fd, $0.baseAddress, 16) }
                    close(fd)
                    isImage = n > 0 && sniffFormat(Array(head.prefix(n))) != nil
                }
                guard isImage else {
                    skipped.append(SkippedFile(path: childRel, reason: "not an image"))
                    continue
                }
                found.append(Found(path: childRel, raw: escaped ? childRaw : nil, isFolder: false, size: Int64(cst.st_size),
                                   modified: mtime, failure: nil))
            }
        }
        found.sort { TextFormat.byteLess($0.path, $1.path) }
        skipped.sort { TextFormat.byteLess($0.path, $1.path) }
        for (a, b) in zip(found, found.dropFirst()) where a.path == b.path {
            throw PipelineError.invalidDataset(path: rootURL.appendingPathComponent(a.path).path,
                                               reason: "two different file names are both shown as '\(a.path)' (one is not valid UTF-8); rename one of them")
        }

        // An unreadable folder stands for the files it holds, one level further down.
        let components = found.map { f -> [String] in
            let parts = f.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
            return f.isFolder ? parts + [""] : parts
        }
        let nested = components.filter { $0.count >= 2 }
        let layout: DatasetLayout
        if nested.isEmpty { layout = .flat }
        else if nested.allSatisfy({ splitNames.contains($0[0]) }) { layout = .splitClassFolders }
        else { layout = .classFolders }

        var entries: [DatasetEntry] = []
        entries.reserveCapacity(found.count)
        for (f, parts) in zip(found, components) {
            var split = "", label = ""
            switch layout {
            case .flat: break
            case .classFolders: if parts.count >= 2 { label = parts[0] }
            case .splitClassFolders:
                if parts.count >= 2 { split = parts[0] }
                if parts.count >= 3 { label = parts[1] }
            }
            entries.append(DatasetEntry(path: f.path, split: split, label: label, size: f.size, modified: f.modified,
                                        rawPath: f.raw, failure: f.failure))
        }
        let classes = Set(entries.map(\.label)).subtracting([""]).sorted(by: TextFormat.byteLess)
        let splits = Set(entries.map(\.split)).subtracting([""]).sorted(by: TextFormat.byteLess)
        return DatasetScan(root: rootURL, layout: layout, entries: entries, skipped: skipped, classes: classes, splits: splits)
    }
}
