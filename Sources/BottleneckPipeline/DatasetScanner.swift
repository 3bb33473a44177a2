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

/// One image file found by the scanner.
public struct DatasetEntry: Sendable, Equatable {
    /// Path relative to the dataset root, `/`-separated.
    public var path: String
    /// `train`, `val`, `test`, or empty when the layout has no splits.
    public var split: String
    /// Class name, or empty when unlabeled.
    public var label: String
    /// File size in bytes (part of the input fingerprint).
    public var size: Int64
    /// Modification time in nanoseconds since 1970 (part of the input fingerprint).
    public var modified: Int64

    /// Creates an entry.
    public init(path: String, split: String, label: String, size: Int64 = 0, modified: Int64 = 0) {
        self.path = path; self.split = split; self.label = label; self.size = size; self.modified = modified
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
    /// Candidate images, sorted by the UTF-8 bytes of `path`.
    public var entries: [DatasetEntry]
    /// Hidden files and non-images, sorted by path.
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
        for e in entries { h.update(Data("\(e.path)\t\(e.size)\t\(e.modified)\n".utf8)) }
        return h.finalize()
    }
}

/// Finds images under a directory by content (magic bytes) as well as by extension.
///
/// A file is an image candidate when its first bytes are a known image signature or its extension
/// is an image extension; a candidate that then fails to decode (a GIF, a truncated JPEG, a text
/// file named `.jpg`) is a per-image failure reported by the extractor. Anything else is skipped,
/// as are hidden files and hidden directories (names starting with `.`). Symbolic links are
/// followed; directory cycles are broken by device/inode. Cost: one `stat` and one 16-byte read per file.
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

    /// Scans `root` recursively.
    /// - Throws: ``PipelineError/invalidDataset(path:reason:)`` when `root` is not a readable directory.
    public static func scan(_ root: URL) throws -> DatasetScan {
        let rootURL = root.standardizedFileURL
        var st = stat()
        guard stat(rootURL.path, &st) == 0 else {
            throw PipelineError.invalidDataset(path: rootURL.path, reason: "cannot open: \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFDIR else {
            throw PipelineError.invalidDataset(path: rootURL.path, reason: "not a directory; pass the folder that holds the images")
        }
        struct Found { var path: String; var size: Int64; var modified: Int64 }
        var found: [Found] = []
        var skipped: [SkippedFile] = []
        var visited: Set<[UInt64]> = [[UInt64(st.st_dev), UInt64(st.st_ino)]]
        var stack: [String] = [""]  // relative directory paths
        var head = [UInt8](repeating: 0, count: 16)
        while let rel = stack.popLast() {
            let dirPath = rel.isEmpty ? rootURL.path : rootURL.path + "/" + rel
            guard let dir = opendir(dirPath) else {
                skipped.append(SkippedFile(path: rel.isEmpty ? "." : rel, reason: "unreadable directory: \(String(cString: strerror(errno)))"))
                continue
            }
            var names: [String] = []
            while let ent = readdir(dir) {
                let name = withUnsafePointer(to: ent.pointee.d_name) {
                    $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
                }
                if name == "." || name == ".." { continue }
                names.append(name)
            }
            closedir(dir)
            for name in names {
                let childRel = rel.isEmpty ? name : rel + "/" + name
                let childPath = dirPath + "/" + name
                if name.hasPrefix(".") {
                    skipped.append(SkippedFile(path: childRel, reason: "hidden"))
                    continue
                }
                var cst = stat()
                guard stat(childPath, &cst) == 0 else {
                    skipped.append(SkippedFile(path: childRel, reason: "cannot stat: \(String(cString: strerror(errno)))"))
                    continue
                }
                let kind = cst.st_mode & S_IFMT
                if kind == S_IFDIR {
                    if visited.insert([UInt64(cst.st_dev), UInt64(cst.st_ino)]).inserted { stack.append(childRel) }
                    else { skipped.append(SkippedFile(path: childRel, reason: "directory already visited (link cycle)")) }
                    continue
                }
                guard kind == S_IFREG else {
                    skipped.append(SkippedFile(path: childRel, reason: "not a regular file"))
                    continue
                }
                let ext = (name as NSString).pathExtension.lowercased()
                var isImage = imageExtensions.contains(ext)
                if !isImage {
                    let fd = open(childPath, O_RDONLY)
                    if fd >= 0 {
                        let n = head.withUnsafeMutableBytes { read(fd, $0.baseAddress, 16) }
                        close(fd)
                        isImage = n > 0 && sniffFormat(Array(head.prefix(n))) != nil
                    }
                }
                guard isImage else {
                    skipped.append(SkippedFile(path: childRel, reason: "not an image"))
                    continue
                }
                #if os(Linux)
                let mtime = Int64(cst.st_mtim.tv_sec) * 1_000_000_000 + Int64(cst.st_mtim.tv_nsec)
                #else
                let mtime = Int64(cst.st_mtimespec.tv_sec) * 1_000_000_000 + Int64(cst.st_mtimespec.tv_nsec)
                #endif
                found.append(Found(path: childRel, size: Int64(cst.st_size), modified: mtime))
            }
        }
        found.sort { TextFormat.byteLess($0.path, $1.path) }
        skipped.sort { TextFormat.byteLess($0.path, $1.path) }

        let components = found.map { $0.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init) }
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
            entries.append(DatasetEntry(path: f.path, split: split, label: label, size: f.size, modified: f.modified))
        }
        let classes = Set(entries.map(\.label)).subtracting([""]).sorted(by: TextFormat.byteLess)
        let splits = Set(entries.map(\.split)).subtracting([""]).sorted(by: TextFormat.byteLess)
        return DatasetScan(root: rootURL, layout: layout, entries: entries, skipped: skipped, classes: classes, splits: splits)
    }
}
