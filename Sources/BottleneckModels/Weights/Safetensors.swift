import Foundation

/// Parser for Hugging Face `.safetensors`: an 8-byte little-endian header length N, N bytes of
/// JSON `{"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}` (offsets
/// relative to the end of the header), then the raw C-order little-endian data.
enum SafetensorsFormat {
    static func dtype(_ s: String) -> TensorDType {
        switch s {
        case "F32": return .float32
        case "F16": return .float16
        case "BF16": return .bfloat16
        case "F64": return .float64
        case "I64": return .int64
        case "I32": return .int32
        case "I16": return .int16
        case "I8": return .int8
        case "U8": return .uint8
        case "BOOL": return .bool
        default: return .unsupported(s)
        }
    }

    static func read(_ file: RandomAccessFile) throws -> [(String, Checkpoint.Entry)] {
        let path = file.path
        guard file.size >= 8 else { throw WeightsError.truncated(path: path, reason: "only \(file.size) bytes, no safetensors header") }
        let n = Int(clamping: try file.bytes(at: 0, count: 8).le(UInt64.self, at: 0))
        guard n > 0, n < 512 << 20 else { throw WeightsError.notACheckpoint(path: path, reason: "implausible safetensors header length \(n)") }
        guard 8 + n <= file.size else {
            throw WeightsError.truncated(path: path, reason: "safetensors header needs \(8 + n) bytes, the file has \(file.size)")
        }
        let header = try file.bytes(at: 8, count: n)
        guard let json = try? JSONSerialization.jsonObject(with: Data(header)) as? [String: Any] else {
            throw WeightsError.malformed(path: path, reason: "safetensors header is not a JSON object")
        }
        var out: [(String, Checkpoint.Entry, Int)] = []
        for (key, value) in json where key != "__metadata__" {
            guard let info = value as? [String: Any], let dt = info["dtype"] as? String,
                  let shape = (info["shape"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }),
                  let offs = (info["data_offsets"] as? [Any])?.compactMap({ ($0 as? NSNumber)?.intValue }), offs.count == 2
            else { throw WeightsError.malformed(path: path, reason: "bad safetensors entry for '\(key)'") }
            let type = dtype(dt)
            let bytes = shape.reduce(1, *) * type.size
            if case .unsupported = type {} else {
                guard offs[1] - offs[0] == bytes, offs[0] >= 0 else {
                    throw WeightsError.malformed(path: path, reason: "'\(key)': data_offsets \(offs) do not match \(dt)\(shape)")
                }
            }
            out.append((key, Checkpoint.Entry(dtype: type, shape: shape, strides: Checkpoint.contiguousStrides(shape),
                                              base: 8 + n + offs[0], offset: 0), offs[0]))
        }
        // JSON objects are unordered; the data order is the file's natural order.
        return out.sorted { $0.2 != $1.2 ? $0.2 < $1.2 : $0.0 < $1.0 }.map { ($0.0, $0.1) }
    }
}
