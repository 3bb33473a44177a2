import Foundation

/// Errors raised while building, loading or training a differentiable network.
public enum TrainingError: Error, CustomStringConvertible {
    /// A tensor had the wrong shape for the layer that received it.
    case shapeMismatch(layer: String, expected: String, got: [Int])
    /// A state-dict entry the layer needs is absent.
    case missingKey(String)
    /// A state-dict entry has a different shape from the layer's parameter.
    case parameterShape(key: String, expected: [Int], got: [Int])
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
        case let .parameterShape(key, expected, got):
            return "weights: '\(key)' has shape \(got), the layer needs \(expected)"
        case let .invalidConfiguration(reason):
            return "invalid configuration: \(reason)"
        case let .data(path, reason):
            return "\(path): \(reason)"
        }
    }
}

/// A dense float32 tensor in C order, used for activations and gradients during training.
///
/// Image-like tensors are NCHW (`[batch, channels, height, width]`); feature matrices are `[batch, features]`.
/// Storage is a Swift array, so copies are copy-on-write.
public struct TrainTensor: Sendable, Equatable {
    /// Dimensions, outermost first.
    public var shape: [Int]
    /// Elements in C order; `count == shape.product`.
    public var data: [Float]

    /// Wraps existing values. Precondition: `data.count` equals the product of `shape`.
    public init(shape: [Int], data: [Float]) {
        precondition(data.count == shape.reduce(1, *), "TrainTensor: \(data.count) values for shape \(shape)")
        self.shape = shape
        self.data = data
    }

    /// A zero-filled tensor of the given shape.
    public init(zeros shape: [Int]) {
        self.shape = shape
        self.data = [Float](repeating: 0, count: shape.reduce(1, *))
    }

    /// Number of elements.
    public var count: Int { data.count }
    /// Batch size (first dimension).
    public var batch: Int { shape[0] }
    /// Channels of an NCHW tensor (second dimension).
    public var channels: Int { shape[1] }
    /// Height of an NCHW tensor.
    public var height: Int { shape[2] }
    /// Width of an NCHW tensor.
    public var width: Int { shape[3] }
}

/// A trainable or buffered tensor owned by a layer, named with its PyTorch state-dict key.
public final class Parameter {
    /// State-dict key, e.g. `_blocks.15._bn1.weight`.
    public let name: String
    /// Shape as PyTorch stores it.
    public let shape: [Int]
    /// Current values.
    public var value: [Float]
    /// Gradient accumulated by backward passes since the last `zeroGrad` (unused for buffers).
    public var grad: [Float]
    /// Whether the optimiser updates it (false for BatchNorm running statistics).
    public let isTrainable: Bool

    /// Creates a zero-filled parameter.
    public init(name: String, shape: [Int], trainable: Bool = true) {
        self.name = name
        self.shape = shape
        let n = shape.reduce(1, *)
        self.value = [Float](repeating: 0, count: n)
        self.grad = trainable ? [Float](repeating: 0, count: n) : []
        self.isTrainable = trainable
    }

    /// Sets the gradient to zero.
    public func zeroGrad() {
        if !grad.isEmpty { grad.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
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
