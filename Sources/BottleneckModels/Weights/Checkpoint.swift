import Foundation

/// A checkpoint file opened for lazy reading: the header (zip directory and pickle, or the
/// safetensors JSON) is parsed once; each tensor's bytes are read with `pread` only when
/// ``load(_:)`` asks for it, straight into the returned array. Loading a model therefore holds
/// at most one tensor beyond the model's own copy of the weights.
///
/// Formats (detected from the content, not the file name):
/// - ``Format/torchZip``: `torch.save` since PyTorch 1.6 (a zip of `data.pkl` + `data/<key>` records).
/// - ``Format/torchLegacy``: `torch.save(..., _use_new_zipfile_serialization=False)` (pickles + raw storages).
/// - ``Format/safetensors``: 8-byte header length, JSON header, raw tensor data.
/// - ``Format/torchScript``: `torch.jit.save` archives (module tree in `data.pkl`; see `TorchScriptFormat`).
///
/// State dicts nested in a training checkpoint (`{"state_dict": ...}`, `{"model": ...}`) are unwrapped.
/// Thread safety: reads are `pread`s on a private descriptor, so concurrent `load` calls are safe.
public final class Checkpoint: WeightSource, @unchecked Sendable {
    /// On-disk layout of a checkpoint.
    public enum Format: String, Sendable {
        /// PyTorch >= 1.6 zip archive.
        case torchZip = "torch-zip"
        /// PyTorch legacy (pre-zip) serialization.
        case torchLegacy = "torch-legacy"
        /// Hugging Face safetensors.
        case safetensors
        /// TorchScript archive (`torch.jit.save`): tensors named by their module paths.
        case torchScript = "torchscript"
    }

    /// Where one tensor's elements live in the file.
    struct Entry {
        let dtype: TensorDType
        let shape: [Int]
        /// Strides in elements.
        let strides: [Int]
        /// File offset of storage element 0.
        let base: Int
        /// Offset of the tensor's first element within the storage, in elements.
        let offset: Int
    }

    /// The file's path.
    public let url: URL
    /// The detected format.
    public let format: Format
    /// Tensor names in file order (the state dict's insertion order for torch files).
    public let keys: [String]
    let entries: [String: Entry]
    private let file: RandomAccessFile

    /// Opens and indexes `url`; no tensor data is read.
    /// - Throws: ``WeightsError`` naming the file: `.fileNotFound`, `.truncated`, `.notACheckpoint`,
    ///   `.malformed`, `.unsupportedPickle`.
    public init(contentsOf url: URL) throws {
        let file = try RandomAccessFile(path: url.path)
        self.url = url
        self.file = file
        let head = try file.bytes(at: 0, count: min(file.size, 16))
        let parsed: (Format, [(String, Entry)])
        if ZipArchive.looksLikeZip(head) {
            parsed = try TorchScriptFormat.isArchive(ZipArchive(file: file))
                ? (.torchScript, try TorchScriptFormat.read(file)) : (.torchZip, try TorchFormats.readZip(file))
        } else if head.first == 0x80 {
            parsed = (.torchLegacy, try TorchFormats.readLegacy(file))
        } else if head.count >= 9, head[8] == UInt8(ascii: "{") || (url.pathExtension == "safetensors") {
            parsed = (.safetensors, try SafetensorsFormat.read(file))
        } else if head.count < 9, url.pathExtension == "safetensors" || url.pathExtension == "pth" || url.pathExtension == "pt" {
            throw WeightsError.truncated(path: url.path, reason: "only \(file.size) bytes")
        } else {
            throw WeightsError.notACheckpoint(path: url.path, reason: "starts with neither a zip signature, a pickle, nor a safetensors header")
        }
        format = parsed.0
        keys = parsed.1.map(\.0)
        var map: [String: Entry] = [:]
        for (k, e) in parsed.1 { map[k] = e }
        entries = map
        for k in keys { try validateExtent(k, map[k]!) }
    }

    /// Rejects tensors whose elements would lie beyond the end of the file (a truncated download).
    private func validateExtent(_ key: String, _ e: Entry) throws {
        let span = Self.span(shape: e.shape, strides: e.strides)
        guard span.min >= 0 else { throw WeightsError.malformed(path: url.path, reason: "tensor '\(key)' has negative strides") }
        let end = e.base + (e.offset + span.max + 1) * e.dtype.size
        guard end <= file.size else {
            throw WeightsError.truncated(path: url.path, reason: "tensor '\(key)' needs bytes up to \(end) but the file has \(file.size)")
        }
    }

    /// Smallest and largest element index (relative to the tensor's offset) a strided view touches.
    static func span(shape: [Int], strides: [Int]) -> (min: Int, max: Int) {
        if shape.contains(0) { return (0, -1) }
        var lo = 0, hi = 0
        for (n, s) in zip(shape, strides) { if s >= 0 { hi += (n - 1) * s } else { lo += (n - 1) * s } }
        return (lo, hi)
    }

    static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) { s[i] = acc; acc *= shape[i] }
        return s
    }

    /// Shape of `key` (outermost first), or nil when the file has no such tensor.
    public func shape(of key: String) -> [Int]? { entries[key]?.shape }

    /// Element type of `key` as stored ("float32", "float16", "bfloat16", ...), or nil.
    public func dtypeName(of key: String) -> String? { entries[key]?.dtype.name }

    /// Total bytes of tensor data the file's tensors view (a measure of the checkpoint's size).
    public var tensorBytes: Int { entries.values.reduce(0) { $0 + $1.shape.reduce(1, *) * $1.dtype.size } }

    /// Reads `key` as float32 in C order, materialising strided views and converting
    /// float16/bfloat16/float64/integer storages. Cost: one `pread` of the tensor's byte span.
    /// - Throws: `.missingKey`, `.unsupportedDType`, `.truncated`/`.io` if the file changed underneath.
    public func load(_ key: String) throws -> [Float] {
        guard let e = entries[key] else { throw WeightsError.missingKey(path: url.path, key: key) }
        if case .unsupported(let name) = e.dtype { throw WeightsError.unsupportedDType(path: url.path, key: key, dtype: name) }
        let count = e.shape.reduce(1, *)
        if count == 0 { return [] }
        let contiguous = e.strides == Self.contiguousStrides(e.shape) || count == 1
        let start = e.base + e.offset * e.dtype.size
        if contiguous, e.dtype == .float32 {
            return try [Float](unsafeUninitializedCapacity: count) { buf, n in
                try file.read(into: UnsafeMutableRawBufferPointer(buf), at: start)
                n = count
            }
        }
        let span = Self.span(shape: e.shape, strides: e.strides)
        let spanCount = span.max + 1
        var raw = [UInt8](repeating: 0, count: spanCount * e.dtype.size)
        try raw.withUnsafeMutableBytes { try file.read(into: $0, at: start) }
        return raw.withUnsafeBytes { src in
            [Float](unsafeUninitializedCapacity: count) { dst, n in
                if contiguous {
                    Self.convert(src, e.dtype, into: dst.baseAddress!, indices: nil, count: count)
                } else {
                    // Gather the view in C order: element i of the result comes from sum(idx_d * stride_d).
                    var indices = [Int](repeating: 0, count: count)
                    var idx = [Int](repeating: 0, count: e.shape.count)
                    var off = 0
                    for i in 0..<count {
                        indices[i] = off
                        var d = e.shape.count - 1
                        while d >= 0 {
                            idx[d] += 1; off += e.strides[d]
                            if idx[d] < e.shape[d] { break }
                            off -= idx[d] * e.strides[d]; idx[d] = 0; d -= 1
                        }
                    }
                    indices.withUnsafeBufferPointer { Self.convert(src, e.dtype, into: dst.baseAddress!, indices: $0, count: count) }
                }
                n = count
            }
        }
    }

    /// Converts `count` little-endian elements (at `indices`, or consecutive) to Float.
    private static func convert(_ src: UnsafeRawBufferPointer, _ dtype: TensorDType, into dst: UnsafeMutablePointer<Float>,
                                indices: UnsafeBufferPointer<Int>?, count: Int) {
        @inline(__always) func each<T>(_ type: T.Type, _ f: (T) -> Float) {
            let p = src.baseAddress!
            if let ix = indices {
                for i in 0..<count { dst[i] = f(p.loadUnaligned(fromByteOffset: ix[i] * MemoryLayout<T>.size, as: T.self)) }
            } else {
                for i in 0..<count { dst[i] = f(p.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)) }
            }
        }
        switch dtype {
        case .float32: each(Float.self) { $0 }
        case .float64: each(Double.self) { Float($0) }
        case .float16: each(UInt16.self) { halfToFloat($0) }
        case .bfloat16: each(UInt16.self) { Float(bitPattern: UInt32($0) << 16) }
        case .int64: each(Int64.self) { Float($0) }
        case .int32: each(Int32.self) { Float($0) }
        case .int16: each(Int16.self) { Float($0) }
        case .int8: each(Int8.self) { Float($0) }
        case .uint8, .bool: each(UInt8.self) { Float($0) }
        case .unsupported: break
        }
    }

    /// IEEE half to float, exact for every half value (normals, subnormals, infinities, NaN).
    @inline(__always) static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = UInt32((h >> 10) & 0x1F)
        let man = UInt32(h & 0x3FF)
        if exp == 0 {
            let mag = Float(man) * 0x1p-24
            return sign != 0 ? -mag : mag
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (man << 13)) }
        return Float(bitPattern: sign | ((exp + 112) << 23) | (man << 13))
    }
}
