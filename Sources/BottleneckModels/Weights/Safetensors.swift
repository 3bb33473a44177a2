import BottleneckCore
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

    /// The tensors of a safetensors file in data order. Refuses (naming the file and tensor) a
    /// header length beyond the file or over ``CheckpointLimits/maxSafetensorsHeaderBytes``,
    /// non-integer or negative shapes and offsets, byte ranges that disagree with dtype and shape,
    /// lie outside the data section, or overlap another tensor's.
    static func read(_ file: RandomAccessFile) throws -> [(String, Checkpoint.Entry)] {
        let path = file.path
        guard file.size >= 8 else { throw WeightsError.truncated(path: path, reason: "only \(file.size) bytes, no safetensors header") }
        var lengthField = ByteReader(try file.bytes(at: 0, count: 8), path: path)
        let n: Int
        do {
            n = try lengthField.length(UInt64.self, "safetensors header length", limit: CheckpointLimits.maxSafetensorsHeaderBytes, inline: false)
        } catch let e as MalformedBytes {
            throw WeightsError.notACheckpoint(path: path, reason: "\(e.reason) at byte 0")
        }
        guard n > 0 else { throw WeightsError.notACheckpoint(path: path, reason: "empty safetensors header") }
        guard CheckedSize.fits(offset: 8, count: n, in: file.size) else {
            throw WeightsError.truncated(path: path, reason: "safetensors header needs \(8 + n) bytes, the file has \(file.size)")
        }
        let dataStart = 8 + n
        let dataSize = file.size - dataStart
        let header = try file.bytes(at: 8, count: n)
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(header))
        } catch {
            throw WeightsError.malformed(path: path, reason: "safetensors header (bytes 8..<\(dataStart)) is not valid JSON: \(error.localizedDescription)")
        }
        guard let json = parsed as? [String: Any] else {
            throw WeightsError.malformed(path: path, reason: "safetensors header is not a JSON object")
        }
        var out: [(key: String, entry: Checkpoint.Entry, range: Range<Int>)] = []
        for (key, value) in json where key != "__metadata__" {
            guard let info = value as? [String: Any], let dt = info["dtype"] as? String,
                  let shape = integers(info["shape"]), !shape.contains(where: { $0 < 0 }),
                  let offs = integers(info["data_offsets"]), offs.count == 2
            else { throw WeightsError.malformed(path: path, reason: "bad safetensors entry for '\(key)' (needs dtype, shape of non-negative integers, two data_offsets)") }
            guard offs[0] >= 0, offs[0] <= offs[1] else {
                throw WeightsError.malformed(path: path, reason: "'\(key)': data_offsets \(offs) are not an ascending pair of byte offsets")
            }
            guard offs[1] <= dataSize else {
                throw WeightsError.truncated(path: path, reason: "'\(key)': data_offsets \(offs) reach past the \(dataSize)-byte data section (bytes \(dataStart)..<\(file.size))")
            }
            let type = dtype(dt)
            if case .unsupported = type {} else {
                guard let count = CheckedSize.product(shape), let bytes = CheckedSize.multiply(count, type.size),
                      offs[1] - offs[0] == bytes else {
                    throw WeightsError.malformed(path: path, reason: "'\(key)': data_offsets \(offs) do not match \(dt)\(shape)")
                }
            }
            out.append((key, Checkpoint.Entry(dtype: type, shape: shape, strides: Checkpoint.contiguousStrides(shape),
                                              base: dataStart + offs[0], offset: 0), offs[0]..<offs[1]))
        }
        // JSON objects are unordered; the data order is the file's natural order.
        out.sort { $0.range.lowerBound != $1.range.lowerBound ? $0.range.lowerBound < $1.range.lowerBound : $0.key < $1.key }
        var previous: (key: String, end: Int)? = nil
        for t in out where !t.range.isEmpty {
            if let p = previous, t.range.lowerBound < p.end {
                throw WeightsError.malformed(path: path, reason: "tensors '\(p.key)' and '\(t.key)' overlap in the data section (bytes \(t.range.lowerBound)..<\(p.end))")
            }
            previous = (t.key, t.range.upperBound)
        }
        return out.map { ($0.key, $0.entry) }
    }

    /// A JSON array of integers (booleans and fractions refused), or nil.
    private static func integers(_ value: Any?) -> [Int]? {
        guard let array = value as? [Any] else { return nil }
        var out: [Int] = []
        out.reserveCapacity(array.count)
        for v in array {
            guard let number = v as? NSNumber, String(cString: number.objCType) != "c", let i = v as? Int else { return nil }
            out.append(i)
        }
        return out
    }
}
