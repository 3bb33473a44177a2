import BottleneckCore
import Foundation

/// Bounded random access to the bytes of one image file (or an in-memory copy of one).
///
/// Header parsers read through this so that `inspect` touches only the segments it needs: each
/// read is bounded by its `count` and by the file size, and reads that are skipped over are never
/// performed (a JPEG followed by gigabytes of trailing data costs a few kilobytes of I/O). File
/// reads go through one block-sized cache so that marker walks over many small segments cost one
/// system call per block. Not thread-safe: one source per decode.
final class ImageByteSource {
    /// The file, for errors.
    let path: String
    /// Size in bytes when the source was opened.
    let size: Int

    private enum Storage {
        case memory(Data)
        case file(Int32)
    }
    private let storage: Storage
    /// File offset of `cache[0]`, and the cached bytes (empty until the first file read).
    private var cacheOffset = 0
    private var cache: [UInt8] = []

    /// Bytes fetched per file read when a request is smaller: large enough that a walk over small
    /// segments needs one system call per block, small enough to be noise next to a decode.
    static let blockSize = 64 << 10

    /// A source over bytes already in memory.
    init(data: Data, path: String) {
        self.path = path
        self.size = data.count
        self.storage = .memory(data)
    }

    /// Opens `url` for reading without reading any of it.
    ///
    /// Only regular files are accepted (a FIFO or device could block or never end); the open
    /// itself never blocks.
    /// - Throws: ``ImageDecodingError/unreadable(path:reason:)``.
    init(contentsOf url: URL) throws {
        let path = url.path
        self.path = path
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw ImageDecodingError.unreadable(path: path, reason: Self.systemError()) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let reason = Self.systemError()
            close(fd)
            throw ImageDecodingError.unreadable(path: path, reason: reason)
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            let kind = (st.st_mode & S_IFMT) == S_IFDIR ? "is a directory" : "is not a regular file"
            throw ImageDecodingError.unreadable(path: path, reason: kind)
        }
        self.size = Int(st.st_size)
        self.storage = .file(fd)
    }

    deinit {
        if case .file(let fd) = storage { close(fd) }
    }

    static func systemError() -> String { String(cString: strerror(errno)) }

    /// The bytes `offset..<offset+count`, shortened at the end of the file (empty at or past it).
    /// - Throws: ``ImageDecodingError/unreadable(path:reason:)`` on an I/O error.
    func bytes(at offset: Int, count: Int) throws -> [UInt8] {
        guard offset >= 0, count > 0, offset < size else { return [] }
        let n = min(count, size - offset)
        switch storage {
        case .memory(let data):
            let start = data.startIndex + offset
            return [UInt8](data[start..<(start + n)])
        case .file(let fd):
            if offset >= cacheOffset, offset + n <= cacheOffset + cache.count {
                return Array(cache[(offset - cacheOffset)..<(offset - cacheOffset + n)])
            }
            if n > Self.blockSize { return try Self.readRange(fd, path: path, offset: offset, count: n) }
            cache = try Self.readRange(fd, path: path, offset: offset, count: min(Self.blockSize, size - offset))
            cacheOffset = offset
            return Array(cache.prefix(n))
        }
    }

    /// A ``ByteReader`` over `offset..<offset+count` (shortened at the end of the file) whose errors
    /// carry file offsets.
    func reader(at offset: Int, count: Int) throws -> ByteReader {
        ByteReader(try bytes(at: offset, count: count), path: path, baseOffset: offset)
    }

    /// The byte at `offset`, or nil at or past the end (no allocation unless a block is fetched).
    func byte(at offset: Int) throws -> UInt8? {
        guard offset >= 0, offset < size else { return nil }
        switch storage {
        case .memory(let data):
            return data[data.startIndex + offset]
        case .file:
            if offset >= cacheOffset, offset < cacheOffset + cache.count { return cache[offset - cacheOffset] }
            return try bytes(at: offset, count: 1).first
        }
    }

    /// Calls `body` with every byte of the source (`size` bytes, fewer if the file shrank since it
    /// was opened). The caller has checked `size` against its byte limit and reserved the memory.
    func withAllBytes<T>(_ body: (UnsafeBufferPointer<UInt8>) throws -> T) throws -> T {
        switch storage {
        case .memory(let data):
            return try data.withUnsafeBytes { try body($0.bindMemory(to: UInt8.self)) }
        case .file(let fd):
            let all = try Self.readRange(fd, path: path, offset: 0, count: size)
            return try all.withUnsafeBufferPointer { try body($0) }
        }
    }

    /// Reads up to `count` bytes at `offset`, retrying short reads; stops early at end of file.
    private static func readRange(_ fd: Int32, path: String, offset: Int, count: Int) throws -> [UInt8] {
        var failure: String? = nil
        let out = [UInt8](unsafeUninitializedCapacity: count) { buf, initialized in
            var done = 0
            while done < count {
                let got = pread(fd, buf.baseAddress! + done, count - done, off_t(offset + done))
                if got < 0 {
                    if errno == EINTR || errno == EAGAIN { continue }
                    failure = systemError()
                    break
                }
                if got == 0 { break }
                done += got
            }
            initialized = done
        }
        if let reason = failure { throw ImageDecodingError.unreadable(path: path, reason: reason) }
        return out
    }
}
