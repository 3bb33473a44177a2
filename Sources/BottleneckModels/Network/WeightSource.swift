import BottleneckTensor

/// A keyed store of float32 tensors named like a PyTorch state dict (`layer1.0.conv1.weight`).
/// Implemented by the checkpoint readers (torch `.pth`, `.safetensors`) and by `SyntheticWeights`.
/// `Network` loads one tensor at a time and drops it after repacking, so a source should read lazily.
public protocol WeightSource {
    /// Every state-dict key the source holds (order unspecified).
    var keys: [String] { get }
    /// The shape of `key`, or nil when absent.
    func shape(of key: String) -> [Int]?
    /// The values of `key` as float32 in C order (PyTorch's storage order).
    func load(_ key: String) throws -> [Float]
}

/// Errors raised while turning an architecture plus a weight source into a runnable `Network`.
public enum ModelLoadingError: Error, CustomStringConvertible {
    /// The architecture needs `key` but the source lacks it.
    case missingKey(String, source: String)
    /// The source holds keys the architecture does not know (a different model, or a wrapped state
    /// dict such as `module.`-prefixed DataParallel checkpoints).
    case unexpectedKeys([String], source: String)
    /// `key` exists with a different shape.
    case shapeMismatch(key: String, expected: [Int], found: [Int], source: String)
    /// No architecture with that name.
    case unknownModel(String)
    /// `layer` names no stage of `model`.
    case unknownLayer(model: String, layer: String, available: [String])
    /// `cut` is outside `0..<stageCount`.
    case invalidCut(model: String, cut: Int, stageCount: Int)

    public var description: String {
        switch self {
        case let .missingKey(key, source):
            return "\(source): missing weight '\(key)' (is this checkpoint for the chosen model?)"
        case let .unexpectedKeys(keys, source):
            let shown = keys.prefix(5).joined(separator: ", ")
            return "\(source): \(keys.count) unexpected weight(s) not in the architecture: \(shown)\(keys.count > 5 ? ", ..." : "")"
        case let .shapeMismatch(key, expected, found, source):
            return "\(source): weight '\(key)' has shape \(found), the architecture expects \(expected)"
        case let .unknownModel(name):
            return "unknown model '\(name)'; known models: \(ModelZoo.names.joined(separator: ", "))"
        case let .unknownLayer(model, layer, available):
            return "\(model) has no stage '\(layer)'; stages: \(available.joined(separator: ", "))"
        case let .invalidCut(model, cut, count):
            return "\(model): --cut \(cut) is out of range; use 0...\(count - 1) (0 keeps the logits)"
        }
    }
}

/// Deterministic synthetic weights for an architecture (see `SyntheticFill` for the exact rule,
/// mirrored by `Tests/Reference/models/synthetic.py`). Values are generated on demand per key, so
/// nothing is held in memory; used for parity tests and benchmarks without weight files.
public struct SyntheticWeights: WeightSource {
    private let specs: [String: ParameterSpec]
    private let order: [String]

    /// Synthetic weights for every parameter of `architecture`.
    public init(architecture: Architecture) {
        var specs: [String: ParameterSpec] = [:]
        for p in architecture.parameters { specs[p.name] = p }
        self.specs = specs
        order = architecture.parameters.map(\.name)
    }

    public var keys: [String] { order }

    public func shape(of key: String) -> [Int]? { specs[key]?.shape }

    public func load(_ key: String) throws -> [Float] {
        guard let spec = specs[key] else { throw ModelLoadingError.missingKey(key, source: "synthetic weights") }
        return SyntheticFill.values(name: key, kind: spec.kind, shape: spec.shape)
    }
}
