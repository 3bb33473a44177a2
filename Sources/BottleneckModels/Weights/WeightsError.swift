import BottleneckCore
import Foundation

/// Errors raised while reading checkpoint files, the weights manifest and the weights cache.
/// Every case names the file it concerns so the message alone tells the user what to fix.
public enum WeightsError: Error, CustomStringConvertible, Equatable {
    /// The file does not exist.
    case fileNotFound(path: String)
    /// The file could not be opened or read; `reason` is the system's message.
    case io(path: String, reason: String)
    /// The file ends before a structure it declares (header, pickle, tensor data) is complete.
    case truncated(path: String, reason: String)
    /// The file is none of the supported checkpoint formats (torch zip, legacy torch, safetensors).
    case notACheckpoint(path: String, reason: String)
    /// The file is a checkpoint but violates its format in a way that prevents reading it.
    case malformed(path: String, reason: String)
    /// A tensor uses an element type this reader cannot convert to float32.
    case unsupportedDType(path: String, key: String, dtype: String)
    /// The pickle stream uses an opcode (or a global) outside the subset state dicts need.
    case unsupportedPickle(path: String, reason: String, offset: Int)
    /// The requested tensor key is not in the file.
    case missingKey(path: String, key: String)
    /// The file's SHA-256 (or its published prefix) does not match the manifest.
    case checksumMismatch(path: String, expected: String, actual: String)
    /// A model name is not in the weights manifest.
    case unknownModel(name: String, known: [String])
    /// Weights could not be obtained automatically; `instructions` says what the user should do.
    case fetchFailed(model: String, reason: String, instructions: String)

    public var description: String {
        switch self {
        case .fileNotFound(let p): return "\(p): no such file"
        case .io(let p, let r): return "\(p): \(r)"
        case .truncated(let p, let r): return "\(p): truncated file: \(r)"
        case .notACheckpoint(let p, let r): return "\(p): not a PyTorch or safetensors checkpoint: \(r)"
        case .malformed(let p, let r): return "\(p): malformed checkpoint: \(r)"
        case .unsupportedDType(let p, let k, let d): return "\(p): tensor '\(k)' has unsupported dtype \(d) (supported: float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8, bool)"
        case .unsupportedPickle(let p, let r, let o): return "\(p): unsupported pickle content at byte \(o): \(r)"
        case .missingKey(let p, let k): return "\(p): no tensor named '\(k)'"
        case .checksumMismatch(let p, let e, let a): return "\(p): SHA-256 mismatch: expected \(e), got \(a); the file is corrupt or a different checkpoint, delete it and fetch again"
        case .unknownModel(let n, let known): return "unknown model '\(n)'; known: \(known.joined(separator: ", "))"
        case .fetchFailed(let m, let r, let i): return "cannot fetch weights for \(m): \(r)\n\(i)"
        }
    }
}

extension WeightsError {
    /// A parser's ``MalformedBytes`` as a checkpoint error keeping its path and byte offset:
    /// `.truncated` when a declared length runs past the bytes that exist, `.malformed` otherwise.
    /// `member` names the zip member the offset is relative to (nil: offsets are file offsets).
    init(_ error: MalformedBytes, member: String? = nil) {
        let place = member.map { "in \($0) at byte \(error.offset)" } ?? "at byte \(error.offset)"
        switch error.kind {
        case .truncated: self = .truncated(path: error.path, reason: "\(place): \(error.reason)")
        case .invalid: self = .malformed(path: error.path, reason: "\(place): \(error.reason)")
        }
    }
}
