import BottleneckModels
import Foundation

/// Errors raised while building, loading or training a differentiable network.
public enum TrainingError: Error, CustomStringConvertible {
    /// A tensor had the wrong shape for the layer that received it.
    case shapeMismatch(layer: String, expected: String, got: [Int])
    /// A state-dict entry the layer needs is absent.
    case missingKey(String)
    /// A configuration value is outside its allowed range.
    case invalidConfiguration(String)
    /// A dataset or image could not be used.
    case data(path: String, reason: String)

    public var description: String {
        switch self {
        case let .shapeMismatch(layer, expected, got):
            return "\(layer): expected input of shape \(expected), got \(got)"
        case let .missingKey(key):
            return "weights: missing key '\(key)'"
        case let .invalidConfiguration(reason):
            return "invalid configuration: \(reason)"
        case let .data(path, reason):
            return "\(path): \(reason)"
        }
    }
}

/// Named float tensors keyed by PyTorch state-dict names: the exchange format between checkpoints and layers.
public struct StateDict: Sendable {
    /// Entries: key → (shape, values in C order).
    public var entries: [String: (shape: [Int], values: [Float])]

    /// An empty dictionary.
    public init() { entries = [:] }

    /// Adds or replaces one entry.
    public mutating func set(_ key: String, shape: [Int], values: [Float]) {
        precondition(values.count == shape.reduce(1, *), "StateDict.set(\(key)): count/shape mismatch")
        entries[key] = (shape, values)
    }

    /// Looks up one entry, throwing ``TrainingError/missingKey(_:)`` when absent.
    public func get(_ key: String) throws -> (shape: [Int], values: [Float]) {
        guard let e = entries[key] else { throw TrainingError.missingKey(key) }
        return e
    }

    /// Whether a key is present.
    public func contains(_ key: String) -> Bool { entries[key] != nil }
}

extension StateDict {
    /// The parameters' current values under their names.
    public init(_ parameters: [Parameter]) {
        self.init()
        for p in parameters { set(p.name, shape: p.shape, values: p.value) }
    }
}
