import BottleneckCore
import Foundation

/// A read-only file read with `pread`, so tensors are copied straight from the page cache into
/// their destination buffers without mapping (and keeping resident) the whole checkpoint.
final class RandomAccessFile: @unchecked Sendable {
    let path: String
    let size: Int
    private let fd: Int32

    init(path: String) throws {
        self.path = path
        var st = stat()
        guard stat(path, &st) == 0 else {
            if errno == ENOENT { throw WeightsError.fileNotFound(path: path) }
            throw WeightsError.io(path: path, reason: String(cString: strerror(errno)))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw WeightsError.io(path: path, reason: "not a regular file") }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw WeightsError.io(path: path, reason: String(cString: strerror(errno))) }
        self.fd = fd
        self.size = Int(st.st_size)
    }

    deinit { close(fd) }

    /// Fills `buffer` with the bytes at `offset`; a range past the end is a truncation error.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws {
        guard CheckedSize.fits(offset: offset, count: buffer.count, in: size) else {
            throw WeightsError.truncated(path: path, reason: "needs \(buffer.count) bytes at byte \(offset) but the file has \(size)")
        }
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw WeightsError.io(path: path, reason: "read failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw WeightsError.truncated(path: path, reason: "unexpected end of file at byte \(offset + done)") }
            done += n
        }
    }

    /// Reads `count` bytes at `offset` (for headers and small records); the range is checked
    /// against the file's size before anything is allocated.
    func bytes(at offset: Int, count: Int) throws -> [UInt8] {
        guard CheckedSize.fits(offset: offset, count: count, in: size) else {
            throw WeightsError.truncated(path: path, reason: "needs \(count) bytes at byte \(offset) but the file has \(size)")
        }
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return out
    }
}
