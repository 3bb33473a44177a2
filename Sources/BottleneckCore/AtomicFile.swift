import Foundation

/// Errors raised by the shared file plumbing.
public enum CoreIOError: Error, CustomStringConvertible, Equatable {
    /// The file could not be read or written; `reason` is the system's message.
    case io(path: String, reason: String)
    /// The file exists but its contents are not in the expected format.
    case malformed(path: String, reason: String)

    public var description: String {
        switch self {
        case .io(let path, let reason): return "\(path): \(reason)"
        case .malformed(let path, let reason): return "\(path): \(reason)"
        }
    }
}

/// Writes files so that readers never observe a half-written result.
///
/// The bytes go to a temporary file in the destination's directory, are flushed to disk,
/// and the temporary file is renamed over the destination (rename is atomic on POSIX
/// within one file system).
public enum AtomicFile {
    /// Atomically replaces `url` with `data`, creating parent directories as needed.
    public static func write(_ data: Data, to url: URL) throws {
        let dir = url.deletingLastPathComponent()
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        } catch {
            throw CoreIOError.io(path: dir.path, reason: "cannot create directory: \(error.localizedDescription)")
        }
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw CoreIOError.io(path: tmp.path, reason: String(cString: strerror(errno))) }
        var ok = true
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n <= 0 { ok = false; break }
                offset += n
            }
        }
        let err = String(cString: strerror(errno))
        if ok { ok = fsync(fd) == 0 }
        close(fd)
        guard ok else {
            unlink(tmp.path)
            throw CoreIOError.io(path: url.path, reason: "write failed: \(err)")
        }
        guard rename(tmp.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(tmp.path)
            throw CoreIOError.io(path: url.path, reason: "rename failed: \(reason)")
        }
    }

    /// Atomically replaces `url` with the UTF-8 bytes of `string`.
    public static func write(_ string: String, to url: URL) throws {
        try write(Data(string.utf8), to: url)
    }
}
