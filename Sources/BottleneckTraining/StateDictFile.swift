import BottleneckCore
import BottleneckModels
import Foundation

/// Float32 state dicts stored as `.safetensors` (8-byte little-endian header length, JSON header mapping
/// each key to `dtype` "F32", `shape` and `data_offsets`, then the raw little-endian data). Used for the
/// fine-tuned stages saved next to a model file; any safetensors reader (and BottleneckModels' checkpoint
/// reader) opens them. Only F32 tensors are written or read here.
public struct StateDictFile: WeightSource {
    /// The tensors.
    public let state: StateDict
    /// Free-form `__metadata__` strings.
    public let metadata: [String: String]

    /// Wraps an in-memory state dict.
    public init(state: StateDict, metadata: [String: String] = [:]) {
        self.state = state
        self.metadata = metadata
    }

    /// Reads a file written by ``write(to:)`` (or any safetensors file whose tensors are all F32).
    /// - Throws: ``TrainingError/data(path:reason:)`` for a truncated or malformed file or a non-F32 tensor.
    public init(contentsOf url: URL) throws {
        let path = url.path
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw TrainingError.data(path: path, reason: "cannot read: \(error.localizedDescription)") }
        guard data.count >= 8 else { throw TrainingError.data(path: path, reason: "truncated: no header length") }
        let n = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard n <= UInt64(data.count - 8) else { throw TrainingError.data(path: path, reason: "truncated: header of \(n) bytes") }
        let headerEnd = 8 + Int(n)
        guard let header = try? JSONSerialization.jsonObject(with: data.subdata(in: 8..<headerEnd)) as? [String: Any] else {
            throw TrainingError.data(path: path, reason: "header is not a JSON object")
        }
        var state = StateDict()
        var meta: [String: String] = [:]
        for (key, value) in header {
            if key == "__metadata__" {
                meta = (value as? [String: String]) ?? [:]
                continue
            }
            guard let entry = value as? [String: Any], let dtype = entry["dtype"] as? String,
                  let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2 else {
                throw TrainingError.data(path: path, reason: "malformed header entry '\(key)'")
            }
            guard dtype == "F32" else { throw TrainingError.data(path: path, reason: "'\(key)' is \(dtype); only F32 is supported") }
            let count = shape.reduce(1, *)
            let lo = headerEnd + offsets[0], hi = headerEnd + offsets[1]
            guard offsets[0] >= 0, hi - lo == count * 4, hi <= data.count else {
                throw TrainingError.data(path: path, reason: "'\(key)': data offsets \(offsets) do not fit shape \(shape) in the file")
            }
            let values = data.subdata(in: lo..<hi).withUnsafeBytes { raw in
                (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            }
            state.set(key, shape: shape, values: values)
        }
        self.state = state
        self.metadata = meta
    }

    /// Writes the file atomically, keys in sorted order.
    public func write(to url: URL) throws {
        var header: [String: Any] = [:]
        var body = Data()
        for key in state.entries.keys.sorted() {
            let e = state.entries[key]!
            let start = body.count
            e.values.withUnsafeBufferPointer { p in
                for v in p { var le = v.bitPattern.littleEndian; withUnsafeBytes(of: &le) { body.append(contentsOf: $0) } }
            }
            header[key] = ["dtype": "F32", "shape": e.shape, "data_offsets": [start, body.count]] as [String: Any]
        }
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces to 8 bytes so the data section is aligned, as the format recommends.
        while json.count % 8 != 0 { json.append(0x20) }
        var out = Data()
        var len = UInt64(json.count).littleEndian
        withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
        out.append(json)
        out.append(body)
        try AtomicFile.write(out, to: url)
    }

    public var keys: [String] { Array(state.entries.keys) }
    public func shape(of key: String) -> [Int]? { state.entries[key]?.shape }
    public func load(_ key: String) throws -> [Float] { try state.get(key).values }
}

/// A checkpoint with some tensors replaced: the base weights overlaid with fine-tuned ones.
/// `Network(architecture:weights:)` on this runs the fine-tuned backbone.
public struct OverlayWeights: WeightSource {
    /// The original checkpoint.
    public let base: WeightSource
    /// Replacements (keys absent from `base` are ignored).
    public let overrides: WeightSource

    /// Creates the overlay.
    public init(base: WeightSource, overrides: WeightSource) {
        self.base = base
        self.overrides = overrides
    }

    public var keys: [String] { base.keys }
    public func shape(of key: String) -> [Int]? { base.shape(of: key) }
    public func load(_ key: String) throws -> [Float] {
        if overrides.shape(of: key) != nil { return try overrides.load(key) }
        return try base.load(key)
    }
}
