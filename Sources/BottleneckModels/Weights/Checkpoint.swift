import BottleneckCore
import Foundation

/// Bounds the checkpoint readers enforce on untrusted files. Each is far above what any real
/// checkpoint needs; a file over one is refused with an error naming the file and the limit,
/// never read into memory or followed into deep recursion.
public enum CheckpointLimits {
    /// Largest zip member or pickle read wholly into memory (a `data.pkl`, the legacy header
    /// pickles, a safetensors JSON header is bounded separately). A ResNet-152 state dict's pickle
    /// is under 100 KiB; 256 MiB bounds memory without refusing any real checkpoint.
    public static let maxInMemoryBytes = 256 << 20
    /// Deepest container nesting (lists, dicts, tuples) a pickle may build. A state dict nests 4
    /// levels (dict, rebuild arguments, shape tuple) and training checkpoints under 20; the bound
    /// keeps every recursive walk, and the recursive release of nested values, far from the stack
    /// limit of a secondary thread (512 KiB).
    public static let maxNestingDepth = 200
    /// Largest inflated/compressed ratio of a zip member past ``inflationAllowance``. Weights
    /// compress about 1.1:1 and pickles or text under 20:1; deflate's own maximum is 1032:1, which
    /// only zero-filled or crafted data approaches (a 3 MB member inflating to 3 GiB).
    public static let maxInflationRatio = 200
    /// Inflated bytes a zip member may produce before ``maxInflationRatio`` applies, so small,
    /// highly repetitive members (a short text file) are never refused.
    public static let inflationAllowance = 1 << 20
    /// Largest safetensors JSON header, as the reference implementation enforces (100 MB).
    public static let maxSafetensorsHeaderBytes = 100_000_000
    /// Largest element count of a view that repeats storage elements (stride 0, as `expand`
    /// writes), which loading materialises: 2^28 elements, 1 GiB of float32. Views that repeat no
    /// element are bounded by the file's size instead.
    public static let maxRepeatedViewElements = 1 << 28
}

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
/// Files are untrusted: every length and offset is checked against the bytes that exist, the
/// bounds in ``CheckpointLimits`` apply, and damage is reported as a ``WeightsError`` naming the
/// file (and, for parse errors, the byte offset), never a crash. Values are not inspected here:
/// `Network` refuses NaN/Inf and negative BatchNorm variances as it loads them (``WeightValidation``).
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
    /// - Throws: ``WeightsError`` naming the file: `.fileNotFound`, `.io`, `.truncated` (a declared
    ///   length or offset runs past the end), `.notACheckpoint`, `.malformed` (impossible values,
    ///   overlapping safetensors ranges, a limit of ``CheckpointLimits`` exceeded), `.unsupportedPickle`.
    public init(contentsOf url: URL) throws {
        let file = try RandomAccessFile(path: url.path)
        self.url = url
        self.file = file
        let head = try file.bytes(at: 0, count: min(file.size, 16))
        let parsed: (Format, [(String, Entry)])
        switch Self.detect(head, fileSize: file.size, pathExtension: url.pathExtension) {
        case .torchZip:
            parsed = try TorchScriptFormat.isArchive(ZipArchive(file: file))
                ? (.torchScript, try TorchScriptFormat.read(file)) : (.torchZip, try TorchFormats.readZip(file))
        case .torchScript: parsed = (.torchScript, try TorchScriptFormat.read(file))
        case .torchLegacy: parsed = (.torchLegacy, try TorchFormats.readLegacy(file))
        case .safetensors: parsed = (.safetensors, try SafetensorsFormat.read(file))
        case nil:
            if file.size < 9, ["safetensors", "pth", "pt"].contains(url.pathExtension) {
                throw WeightsError.truncated(path: url.path, reason: "only \(file.size) bytes")
            }
            throw WeightsError.notACheckpoint(path: url.path, reason: "starts with neither a zip signature, a pickle, nor a safetensors header")
        }
        format = parsed.0
        keys = parsed.1.map(\.0)
        var map: [String: Entry] = [:]
        for (k, e) in parsed.1 { map[k] = e }
        entries = map
        for k in keys { try validate(k, map[k]!) }
    }

    /// The format `head` (the file's first bytes) announces, by magic numbers that cannot collide:
    /// zip = `PK\x03\x04`; safetensors = an 8-byte little-endian header length n with 8 + n within
    /// the file, followed by `{`; pickle = 0x80 then a protocol byte 2...5. A safetensors-shaped
    /// start whose header would run past the end (a cut download), or a file named `.safetensors`,
    /// is read as safetensors so its error explains the truncation. Nil: none of them.
    static func detect(_ head: [UInt8], fileSize: Int, pathExtension: String) -> Format? {
        if ZipArchive.looksLikeZip(head) { return .torchZip }
        var headerLength: Int? = nil
        if head.count >= 9, head[8] == UInt8(ascii: "{") {
            headerLength = Int(exactly: (0..<8).reduce(UInt64(0)) { $0 | UInt64(head[$1]) << (8 * $1) })
        }
        if let n = headerLength, CheckedSize.fits(offset: 8, count: n, in: fileSize) { return .safetensors }
        if head.first == 0x80, head.count < 2 || (2...5).contains(head[1]) { return .torchLegacy }
        if let n = headerLength, n <= CheckpointLimits.maxSafetensorsHeaderBytes { return .safetensors }
        if pathExtension == "safetensors", head.count >= 9 { return .safetensors }
        return nil
    }

    /// Rejects tensors whose geometry is impossible (negative dimensions or strides, element
    /// counts or extents that overflow) or whose elements would lie beyond the end of the file (a
    /// truncated download). After this, every size ``load(_:)`` computes fits in an `Int`.
    private func validate(_ key: String, _ e: Entry) throws {
        guard e.shape.count == e.strides.count, let count = CheckedSize.product(e.shape),
              let last = Self.lastIndex(shape: e.shape, strides: e.strides), e.offset >= 0, e.base >= 0 else {
            throw WeightsError.malformed(path: url.path, reason: "tensor '\(key)' has an impossible shape \(e.shape) or strides \(e.strides)")
        }
        if count == 0 { return }
        guard let elements = CheckedSize.add(e.offset, last + 1), let bytes = CheckedSize.multiply(elements, e.dtype.size),
              let end = CheckedSize.add(e.base, bytes), end <= file.size else {
            throw WeightsError.truncated(path: url.path, reason: "tensor '\(key)' needs \(last + 1) elements of \(e.dtype.size) bytes from element \(e.offset) of the storage at byte \(e.base), beyond the file's \(file.size) bytes")
        }
        guard count <= last + 1 || count <= CheckpointLimits.maxRepeatedViewElements else {
            throw WeightsError.malformed(path: url.path, reason: "tensor '\(key)' repeats storage elements into \(count) elements (limit \(CheckpointLimits.maxRepeatedViewElements))")
        }
    }

    /// Largest element index (relative to the tensor's offset) a strided view touches: -1 for an
    /// empty view; nil when a dimension or stride is negative or the index overflows `Int`.
    static func lastIndex(shape: [Int], strides: [Int]) -> Int? {
        guard shape.count == strides.count, !shape.contains(where: { $0 < 0 }), !strides.contains(where: { $0 < 0 }) else { return nil }
        if shape.contains(0) { return -1 }
        var last = 0
        for (n, s) in zip(shape, strides) {
            guard let step = CheckedSize.multiply(n - 1, s), let sum = CheckedSize.add(last, step) else { return nil }
            last = sum
        }
        return last
    }

    /// C-order strides of `shape` (saturating at `Int.max` for shapes whose size overflows, which
    /// ``validate(_:_:)`` refuses).
    static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) { s[i] = acc; acc = CheckedSize.multiply(acc, shape[i]) ?? Int.max }
        return s
    }

    /// Shape of `key` (outermost first), or nil when the file has no such tensor.
    public func shape(of key: String) -> [Int]? { entries[key]?.shape }

    /// Element type of `key` as stored ("float32", "float16", "bfloat16", ...), or nil.
    public func dtypeName(of key: String) -> String? { entries[key]?.dtype.name }

    /// Total bytes of tensor data the file's tensors view (a measure of the checkpoint's size).
    public var tensorBytes: Int {
        entries.values.reduce(0) { sum, e in
            CheckedSize.add(sum, CheckedSize.multiply(CheckedSize.product(e.shape) ?? 0, e.dtype.size) ?? Int.max) ?? Int.max
        }
    }

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
        let spanCount = (Self.lastIndex(shape: e.shape, strides: e.strides) ?? -1) + 1
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
