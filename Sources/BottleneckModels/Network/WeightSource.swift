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
    /// `key` holds values impossible for a weight: NaN or infinity, or a negative BatchNorm variance.
    case invalidValues(key: String, reason: String, source: String)

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
        case let .invalidValues(key, reason, source):
            return "\(source): weight '\(key)' \(reason); the checkpoint is corrupt or was saved from a diverged model"
        }
    }
}

/// Checks a network loads on every tensor before use, so a damaged checkpoint is refused at load
/// instead of producing NaN features. One pass over the values, no allocation.
public enum WeightValidation {
    /// Throws ``ModelLoadingError/invalidValues(key:reason:source:)`` when `values` contains NaN or
    /// infinity, or when `key` is a BatchNorm running variance (`*.running_var`) with a negative
    /// entry (its square root normalises activations).
    public static func check(_ values: [Float], key: String, source: String) throws {
        let isVariance = key.hasSuffix(".running_var")
        // Branch-free scan (vectorises): flags an all-ones exponent (NaN, infinity) and, for a
        // variance, any value below zero. The failing element is located only when one exists.
        let suspicious = values.withUnsafeBufferPointer { buf -> Bool in
            var flag: UInt32 = 0
            for v in buf {
                flag |= (v.bitPattern & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0
                if isVariance { flag |= v < 0 ? 1 : 0 }
            }
            return flag != 0
        }
        guard suspicious else { return }
        for (i, v) in values.enumerated() {
            guard v.isFinite else {
                throw ModelLoadingError.invalidValues(key: key, reason: "holds \(v) at element \(i)", source: source)
            }
            if isVariance, v < 0 {
                throw ModelLoadingError.invalidValues(key: key, reason: "is a BatchNorm variance with negative value \(v) at element \(i)", source: source)
            }
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
