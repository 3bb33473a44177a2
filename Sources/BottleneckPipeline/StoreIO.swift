import Foundation

/// Writes a large file through a temporary sibling and renames it into place, like
/// `BottleneckCore.AtomicFile`, but streaming so memory stays bounded for big feature matrices.
final class AtomicStreamWriter {
    let url: URL
    private let tmpPath: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private static let flushSize = 1 << 20

    init(_ url: URL) throws {
        self.url = url
        let dir = url.deletingLastPathComponent()
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        tmpPath = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        fd = open(tmpPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw PipelineError.io(path: tmpPath, reason: String(cString: strerror(errno))) }
        buffer.reserveCapacity(AtomicStreamWriter.flushSize)
    }

    deinit { if fd >= 0 { close(fd); unlink(tmpPath) } }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        if buffer.count + bytes.count > AtomicStreamWriter.flushSize { try flush() }
        if bytes.count >= AtomicStreamWriter.flushSize { try writeAll(bytes); return }
        buffer.append(contentsOf: bytes.bindMemory(to: UInt8.self))
    }

    func append(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try append($0) } }

    private func flush() throws {
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ raw: UnsafeRawBufferPointer) throws {
        var off = 0
        while off < raw.count {
            let n = write(fd, raw.baseAddress! + off, raw.count - off)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw PipelineError.io(path: url.path, reason: "write failed: \(String(cString: strerror(errno)))") }
            off += n
        }
    }

    /// Flushes, fsyncs and renames over the destination.
    func commit() throws {
        try flush()
        guard fsync(fd) == 0 else { throw PipelineError.io(path: url.path, reason: "fsync failed: \(String(cString: strerror(errno)))") }
        close(fd); fd = -1
        guard rename(tmpPath, url.path) == 0 else {
            let r = String(cString: strerror(errno)); unlink(tmpPath)
            throw PipelineError.io(path: url.path, reason: "rename failed: \(r)")
        }
    }
}

/// Random access to float32 feature rows spread over several files (a partial rows file, or the
/// data sections of shard `features.npy` files), addressed by one global row number.
final class RowSource {
    struct Segment { var path: String; var offset: Int; var rows: Int }
    let dimension: Int
    private var fds: [Int32] = []
    private var segments: [Segment]
    private var starts: [Int] = []
    let rowCount: Int

    init(segments: [Segment], dimension: Int) throws {
        self.segments = segments
        self.dimension = dimension
        var s = 0
        for seg in segments {
            starts.append(s); s += seg.rows
            let fd = open(seg.path, O_RDONLY)
            guard fd >= 0 else {
                fds.forEach { close($0) }
                throw PipelineError.io(path: seg.path, reason: String(cString: strerror(errno)))
            }
            fds.append(fd)
        }
        rowCount = s
    }

    deinit { fds.forEach { close($0) } }

    /// Reads `count` consecutive rows starting at global row `first` into `out` (count x D floats).
    func read(first: Int, count: Int, into out: UnsafeMutablePointer<Float>) throws {
        var row = first, done = 0
        while done < count {
            var seg = 0
            var lo = 0, hi = starts.count - 1
            while lo < hi { let mid = (lo + hi + 1) / 2; if starts[mid] <= row { lo = mid } else { hi = mid - 1 } }
            seg = lo
            let local = row - starts[seg]
            let take = min(count - done, segments[seg].rows - local)
            let bytes = take * dimension * 4
            let base = UnsafeMutableRawPointer(out + done * dimension)
            var got = 0
            while got < bytes {
                let n = pread(fds[seg], base + got, bytes - got, off_t(segments[seg].offset + (local * dimension * 4) + got))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw PipelineError.malformedStore(path: segments[seg].path, reason: "feature rows truncated (wanted row \(local + take - 1))")
                }
                got += n
            }
            row += take; done += take
        }
    }
}
