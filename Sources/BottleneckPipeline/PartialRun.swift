import Foundation

/// The crash-safe state of an unfinished extraction, kept in `OUT/.partial/`:
/// - `rows.f32`: raw float32 feature rows of extracted images, appended batch by batch.
/// - `journal.jsonl`: a header line (fingerprint, dimension, batch size) then one line per
///   completed batch (images done, rows done, failures, cumulative seconds).
///
/// Each batch's rows are written and fsync'd before its journal line is appended and fsync'd, so
/// after a crash (SIGKILL, power loss) the last complete journal line describes rows that are on
/// disk; anything after it is discarded on resume and that batch is redone.
final class PartialRun {
    let dir: URL
    let dimension: Int
    let batchSize: Int
    private(set) var imagesDone = 0
    private(set) var rowsDone = 0
    private(set) var failures: [(Int, String)] = []
    private(set) var seconds = 0.0
    private var rowsFD: Int32 = -1
    private var journalFD: Int32 = -1

    var rowsPath: String { dir.appendingPathComponent("rows.f32").path }
    var journalPath: String { dir.appendingPathComponent("journal.jsonl").path }

    private init(dir: URL, dimension: Int, batchSize: Int) {
        self.dir = dir; self.dimension = dimension; self.batchSize = batchSize
    }

    deinit { close() }

    func close() {
        if rowsFD >= 0 { Foundation.close(rowsFD); rowsFD = -1 }
        if journalFD >= 0 { Foundation.close(journalFD); journalFD = -1 }
    }

    /// Starts a new partial run, discarding any previous one.
    static func create(in out: URL, fingerprint: String, dimension: Int, batchSize: Int) throws -> PartialRun {
        let dir = out.appendingPathComponent(".partial")
        try? FileManager.default.removeItem(at: dir)
        do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
            throw PipelineError.io(path: dir.path, reason: "cannot create: \(error.localizedDescription)")
        }
        let p = PartialRun(dir: dir, dimension: dimension, batchSize: batchSize)
        p.rowsFD = Foundation.open(p.rowsPath, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        p.journalFD = Foundation.open(p.journalPath, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard p.rowsFD >= 0, p.journalFD >= 0 else { throw PipelineError.io(path: dir.path, reason: String(cString: strerror(errno))) }
        let header = "{\"fingerprint\": \(TextFormat.jsonString(fingerprint)), \"dimension\": \(dimension), \"batch\": \(batchSize)}\n"
        try p.appendJournal(header)
        // Make the new directory entries themselves durable.
        let dfd = Foundation.open(dir.path, O_RDONLY)
        if dfd >= 0 { fsync(dfd); Foundation.close(dfd) }
        return p
    }

    /// Reopens a partial run for `fingerprint`; nil when none exists.
    /// - Throws: ``PipelineError/cannotResume(path:reason:)`` when it belongs to other inputs or is unreadable.
    static func open(in out: URL, fingerprint: String, dimension: Int) throws -> PartialRun? {
        let dir = out.appendingPathComponent(".partial")
        let jpath = dir.appendingPathComponent("journal.jsonl").path
        guard let data = FileManager.default.contents(atPath: jpath) else { return nil }
        let bytes = [UInt8](data)
        // Only newline-terminated lines count: a line cut short by a crash is ignored.
        var lines: [(text: String, end: Int)] = []
        var start = 0
        for i in bytes.indices where bytes[i] == 0x0A {
            lines.append((String(decoding: bytes[start..<i], as: UTF8.self), i + 1)); start = i + 1
        }
        func object(_ s: String) -> [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(s.utf8))) as? [String: Any] }
        guard let first = lines.first, let header = object(first.text), let fp = header["fingerprint"] as? String,
              let d = header["dimension"] as? Int, let b = header["batch"] as? Int, b > 0 else {
            throw PipelineError.cannotResume(path: jpath, reason: "journal header unreadable; rerun without --resume to start over")
        }
        guard fp == fingerprint, d == dimension else {
            throw PipelineError.cannotResume(path: dir.path, reason: "the partial run was made from different images, model or options; rerun without --resume to start over")
        }
        let p = PartialRun(dir: dir, dimension: d, batchSize: b)
        var validEnd = first.end
        for line in lines.dropFirst() {
            guard let o = object(line.text), let done = o["done"] as? Int, let rows = o["rows"] as? Int,
                  let fails = o["failures"] as? [[Any]], done >= p.imagesDone, rows >= p.rowsDone else { break }
            var parsed: [(Int, String)] = []
            for f in fails { if f.count == 2, let i = f[0] as? Int, let r = f[1] as? String { parsed.append((i, r)) } }
            p.imagesDone = done; p.rowsDone = rows; p.failures += parsed
            p.seconds = (o["seconds"] as? Double) ?? p.seconds
            validEnd = line.end
        }
        p.rowsFD = Foundation.open(p.rowsPath, O_RDWR | O_CREAT, 0o644)
        p.journalFD = Foundation.open(jpath, O_RDWR)
        guard p.rowsFD >= 0, p.journalFD >= 0 else { throw PipelineError.io(path: dir.path, reason: String(cString: strerror(errno))) }
        var st = stat()
        fstat(p.rowsFD, &st)
        let need = p.rowsDone * d * 4
        guard Int(st.st_size) >= need else {
            throw PipelineError.cannotResume(path: p.rowsPath, reason: "holds \(st.st_size) bytes but the journal promises \(need); rerun without --resume")
        }
        // Drop the unfinished batch: rows past the last journaled batch and any torn journal line.
        guard ftruncate(p.rowsFD, off_t(need)) == 0, ftruncate(p.journalFD, off_t(validEnd)) == 0 else {
            throw PipelineError.io(path: dir.path, reason: "truncate failed: \(String(cString: strerror(errno)))")
        }
        lseek(p.journalFD, 0, SEEK_END)
        return p
    }

    private func appendJournal(_ s: String) throws {
        let bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { write(journalFD, $0.baseAddress! + off, bytes.count - off) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw PipelineError.io(path: journalPath, reason: "write failed: \(String(cString: strerror(errno)))") }
            off += n
        }
        guard fsync(journalFD) == 0 else { throw PipelineError.io(path: journalPath, reason: "fsync failed") }
    }

    /// Durably records one finished batch: `rowCount` rows at `rows`, `imageCount` images
    /// consumed, `batchFailures` as (index in the shard's list, reason).
    func commitBatch(rows: UnsafePointer<Float>, rowCount: Int, imageCount: Int, batchFailures: [(Int, String)], seconds: Double) throws {
        let bytes = rowCount * dimension * 4
        var off = 0
        let raw = UnsafeRawPointer(rows)
        while off < bytes {
            let n = pwrite(rowsFD, raw + off, bytes - off, off_t(rowsDone * dimension * 4 + off))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw PipelineError.io(path: rowsPath, reason: "write failed: \(String(cString: strerror(errno)))") }
            off += n
        }
        guard fsync(rowsFD) == 0 else { throw PipelineError.io(path: rowsPath, reason: "fsync failed") }
        imagesDone += imageCount; rowsDone += rowCount; failures += batchFailures; self.seconds = seconds
        let f = batchFailures.map { "[\($0.0), \(TextFormat.jsonString($0.1))]" }.joined(separator: ", ")
        try appendJournal("{\"done\": \(imagesDone), \"rows\": \(rowsDone), \"seconds\": \(String(format: "%.3f", seconds)), \"failures\": [\(f)]}\n")
    }

    /// Deletes the partial directory after the store has been written.
    func remove() {
        close()
        try? FileManager.default.removeItem(at: dir)
    }
}
