import BottleneckImage
import BottleneckTensor
import Foundation

/// A network built from a real checkpoint, with what callers need to feed it and to record it.
public struct PretrainedModel {
    /// The runnable (possibly truncated) network.
    public let network: Network
    /// The checkpoint file the weights came from.
    public let checkpoint: URL
    /// Identity of the checkpoint: the manifest's full SHA-256 or published prefix when the file has
    /// the published name (and size, where known); otherwise the SHA-256 computed from the file.
    public let weightsSHA256: String
    /// Input preprocessing the architecture expects (`imagenet` or `lite`).
    public let preset: PreprocessPreset

    /// Resolves `model`'s checkpoint (the explicit `weights` file, else the cache) and builds the
    /// network ending at `selection`, reducing spatial outputs with `pool`.
    /// - Throws: `ModelLoadingError` (unknown model/layer, bad cut, missing/unexpected key, shape
    ///   mismatch) or ``WeightsError`` (checkpoint absent — with fetch instructions — truncated, corrupt).
    /// - Complexity: reads the needed tensors once; peak memory is the packed network plus one tensor.
    public static func load(model: String, weights: URL? = nil, selection: StageSelection = .cut(0),
                            pool: Pooling = .none, cache: WeightCache = .default,
                            options: EngineOptions = .default) throws -> PretrainedModel {
        let arch = try ModelZoo.architecture(model)
        guard let preset = PreprocessPreset.named(arch.presetName) else {
            throw WeightsError.malformed(path: model, reason: "architecture asks for unknown preprocessing preset '\(arch.presetName)'")
        }
        let (url, sha) = try resolveCheckpoint(model: model, weights: weights, cache: cache)
        let checkpoint = try Checkpoint(contentsOf: url)
        let network = try Network(architecture: arch, weights: checkpoint, cut: selection, pool: pool, sourceName: url.path,
                                  options: options)
        return PretrainedModel(network: network, checkpoint: url, weightsSHA256: sha, preset: preset)
    }

    /// The checkpoint file for `model` (the explicit `weights` file, else the cache) and its identity, without
    /// reading any tensor: callers that overlay other weights build their own `Network` from it.
    /// - Throws: ``WeightsError`` when the file is absent (with fetch instructions) or unreadable.
    public static func resolveCheckpoint(model: String, weights: URL? = nil,
                                         cache: WeightCache = .default) throws -> (url: URL, weightsSHA256: String) {
        let manifest = try WeightManifest.bundled()
        let url: URL
        if let weights {
            guard FileManager.default.fileExists(atPath: weights.path) else { throw WeightsError.fileNotFound(path: weights.path) }
            url = weights
        } else {
            url = try cache.resolve(model: model, manifest: manifest)
        }
        // The published file (same name, and same size where the manifest knows it) is identified by its
        // manifest hash; anything else is hashed, which costs one read of the file.
        if let entry = try? manifest.entry(for: model), url.lastPathComponent == entry.file, !entry.expectedHash.isEmpty {
            let size = (try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? Int
            if entry.size == nil || entry.size == size { return (url, entry.expectedHash) }
        }
        return (url, try BottleneckCoreSHA.hex(url))
    }
}
