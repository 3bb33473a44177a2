import BottleneckCore
import Foundation

/// The directory where Bottleneck keeps checkpoint files: `$BOTTLENECK_CACHE` when set,
/// otherwise `~/.cache/bottleneck/weights`. Files keep their published names.
public struct WeightCache: Sendable {
    /// The cache directory (created on first write).
    public let directory: URL

    /// A cache rooted at `directory`.
    public init(directory: URL) { self.directory = directory }

    /// `$BOTTLENECK_CACHE`, or `~/.cache/bottleneck/weights`.
    public static var `default`: WeightCache {
        if let env = ProcessInfo.processInfo.environment["BOTTLENECK_CACHE"], !env.isEmpty {
            return WeightCache(directory: URL(fileURLWithPath: (env as NSString).expandingTildeInPath))
        }
        let home = FileManager.default.homeDirectoryForCurrentUser
        return WeightCache(directory: home.appendingPathComponent(".cache/bottleneck/weights"))
    }

    /// Path a file of this name has in the cache (whether or not it exists).
    public func url(for file: String) -> URL { directory.appendingPathComponent(file) }

    /// The cached checkpoint for `entry`: the primary file, else an alternative's file; nil if none is present.
    public func locate(_ entry: WeightManifest.Entry) -> URL? {
        let names = [entry.file] + (entry.alternatives ?? []).compactMap(\.file)
        return names.map(url(for:)).first { FileManager.default.fileExists(atPath: $0.path) }
    }

    /// Checks `file` against the entry's SHA-256 (or published prefix). Files stored under an
    /// alternative's name have no published hash and are checked by opening them instead.
    /// Cost: one sequential read of the file.
    /// - Throws: ``WeightsError/checksumMismatch(path:expected:actual:)`` and read errors.
    public static func verify(_ file: URL, against entry: WeightManifest.Entry) throws {
        let expected = entry.expectedHash.lowercased()
        if file.lastPathComponent != entry.file || expected.isEmpty {
            _ = try Checkpoint(contentsOf: file)
            return
        }
        let actual: String
        do { actual = try SHA256.hex(fileAt: file) } catch {
            throw WeightsError.io(path: file.path, reason: "cannot hash: \(error)")
        }
        guard actual.hasPrefix(expected) else {
            throw WeightsError.checksumMismatch(path: file.path, expected: expected, actual: actual)
        }
    }

    /// The verified-present checkpoint for `model`, or an error telling exactly how to get it.
    /// Verification here is only a size check (hashing happens at fetch/verify time) to keep startup fast.
    public func resolve(model: String, manifest: WeightManifest) throws -> URL {
        let entry = try manifest.entry(for: model)
        guard let url = locate(entry) else {
            throw WeightsError.fetchFailed(model: model, reason: "no checkpoint in \(directory.path)",
                                           instructions: WeightFetcher.instructions(for: entry, cache: self))
        }
        if url.lastPathComponent == entry.file, let size = entry.size,
           let actual = (try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? Int, actual != size {
            throw WeightsError.truncated(path: url.path, reason: "\(actual) bytes, expected \(size); run `bottleneck weights fetch \(model)` again")
        }
        return url
    }
}
