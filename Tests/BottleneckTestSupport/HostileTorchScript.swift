import BottleneckCore
import Foundation

/// TorchScript archives (`torch.jit.save` layout) written by code at test time: a valid small one and
/// hostile variants, for the TorchScript reader's tests.
///
/// The valid archive holds `archive/data.pkl` (protocol 2: `__torch__.Net` with a `layers` submodule
/// `__torch__.Layer` whose attributes are `weight` [2, 3] = 0...5, `beta` [2] = 10, 11, an int
/// `stride` and an int-list `padding`), `archive/constants.pkl`, `archive/code/__torch__.py`,
/// `archive/version` and one storage record per tensor in `archive/data/<key>`.
public enum HostileTorchScript {
    /// How to damage the valid archive.
    public enum Variant: CaseIterable, Sendable {
        /// The valid archive.
        case valid
        /// A module attribute is `os.system('true')`, called with REDUCE.
        case unknownGlobal
        /// Storage record `archive/data/1` is absent from the zip.
        case missingStorageRecord
        /// `weight` views 6 elements from offset 4 of its 6-element storage.
        case tensorPastItsStorage
        /// `layers` lists itself among its attributes (a cycle through the memo).
        case moduleContainsItself
        /// `data.pkl` holds an OrderedDict of tensors, not a `__torch__` module.
        case rootIsNotAModule
        /// Modules nested 300 levels deep.
        case deepNesting
    }

    /// The expected tensors of `.valid`: key, shape, values.
    public static let validTensors: [(key: String, shape: [Int], values: [Float])] = [
        ("layers.weight", [2, 3], [0, 1, 2, 3, 4, 5]), ("layers.beta", [2], [10, 11]),
    ]

    /// The bytes of `variant`.
    public static func archive(_ variant: Variant) -> [UInt8] {
        var p = PickleWriter()
        p.proto()
        switch variant {
        case .rootIsNotAModule:
            p.global("collections", "OrderedDict"); p.op(0x29); p.op(0x52)  // OrderedDict()
            p.op(0x28)
            p.string("weight"); p.tensor(storage: "0", count: 6, offset: 0, shape: [2, 3])
            p.op(0x75)  // SETITEMS
        case .deepNesting:
            for i in 0..<300 {
                p.object("__torch__.Net")
                p.string("child\(i)")
            }
            p.object("__torch__.Layer"); p.op(0x7D); p.op(0x62)  // empty state, BUILD
            for _ in 0..<300 { p.op(0x73); p.op(0x62) }  // SETITEM into each state, BUILD
        default:
            p.object("__torch__.Net")  // NEWOBJ, then its state dict under construction
            p.op(0x28)
            p.string("training"); p.op(0x89)
            p.string("layers")
            p.object("__torch__.Layer", memo: 1)
            p.op(0x28)
            p.string("weight")
            p.tensor(storage: "0", count: 6, offset: variant == .tensorPastItsStorage ? 4 : 0, shape: [2, 3])
            p.string("beta"); p.tensor(storage: "1", count: 2, offset: 0, shape: [2])
            p.string("stride"); p.int(1)
            p.string("padding"); p.global("torch.jit._pickle", "build_intlist"); p.op(0x28); p.op(0x5D); p.op(0x28)
            p.int(0); p.int(1); p.op(0x65); p.op(0x74); p.op(0x52)  // build_intlist(([0, 1],))
            if variant == .unknownGlobal {
                p.string("hook"); p.global("os", "system"); p.op(0x28); p.string("true"); p.op(0x74); p.op(0x52)
            }
            if variant == .moduleContainsItself { p.string("again"); p.memoGet(1) }
            p.op(0x75); p.op(0x62)  // SETITEMS, BUILD (layers)
            p.op(0x75); p.op(0x62)  // SETITEMS, BUILD (net)
        }
        p.op(0x2E)  // STOP
        var entries: [(String, [UInt8])] = [
            ("archive/data.pkl", p.bytes), ("archive/code/__torch__.py", Array("class Net(Module):\n  pass\n".utf8)),
            ("archive/constants.pkl", [0x80, 0x02, 0x29, 0x2E]), ("archive/version", Array("3\n".utf8)),
        ]
        let weight: [Float] = [0, 1, 2, 3, 4, 5], beta: [Float] = [10, 11]
        entries.append(("archive/data/0", weight.withUnsafeBytes(Array.init)))
        if variant != .missingStorageRecord { entries.append(("archive/data/1", beta.withUnsafeBytes(Array.init))) }
        return StoredZip.archive(entries)
    }

    /// Writes `variant` to a new file in `directory` and returns its URL.
    public static func write(_ variant: Variant, in directory: URL) throws -> URL {
        let url = directory.appendingPathComponent("torchscript-\(variant).pt")
        try Data(archive(variant)).write(to: url)
        return url
    }
}

/// A protocol-2 pickle under construction (only the opcodes TorchScript archives use).
struct PickleWriter {
    var bytes: [UInt8] = []

    mutating func op(_ code: UInt8) { bytes.append(code) }
    mutating func proto() { bytes += [0x80, 0x02] }
    mutating func string(_ s: String) {
        let u = Array(s.utf8)
        op(0x58); bytes += withUnsafeBytes(of: UInt32(u.count).littleEndian, Array.init); bytes += u
    }
    mutating func int(_ v: Int) { op(0x4A); bytes += withUnsafeBytes(of: Int32(v).littleEndian, Array.init) }
    mutating func global(_ module: String, _ name: String) { op(0x63); bytes += Array("\(module)\n\(name)\n".utf8) }
    mutating func memoPut(_ i: UInt8) { bytes += [0x71, i] }
    mutating func memoGet(_ i: UInt8) { bytes += [0x68, i] }
    /// `cls()` via NEWOBJ (memoised as `memo` when given), then EMPTY_DICT for its BUILD state.
    mutating func object(_ cls: String, memo: UInt8? = nil) {
        let dot = cls.lastIndex(of: ".")!
        global(String(cls[..<dot]), String(cls[cls.index(after: dot)...]))
        op(0x29); op(0x81)
        if let memo { memoPut(memo) }
        op(0x7D)
    }
    /// `_rebuild_tensor_v2((storage, FloatStorage, key, cpu, count), offset, shape, contiguous strides, False, OrderedDict())`.
    mutating func tensor(storage key: String, count: Int, offset: Int, shape: [Int]) {
        global("torch._utils", "_rebuild_tensor_v2")
        op(0x28)
        op(0x28); string("storage"); global("torch", "FloatStorage"); string(key); string("cpu"); int(count); op(0x74); op(0x51)
        int(offset)
        op(0x28); shape.forEach { int($0) }; op(0x74)
        var strides = [Int](repeating: 1, count: shape.count)
        for d in stride(from: shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * shape[d + 1] }
        op(0x28); strides.forEach { int($0) }; op(0x74)
        op(0x89)
        global("collections", "OrderedDict"); op(0x29); op(0x52)
        op(0x74); op(0x52)
    }
}

/// A zip archive of stored (uncompressed) entries with correct CRC-32s.
enum StoredZip {
    static func archive(_ entries: [(String, [UInt8])]) -> [UInt8] {
        func le16(_ v: Int) -> [UInt8] { withUnsafeBytes(of: UInt16(v).littleEndian, Array.init) }
        func le32(_ v: Int) -> [UInt8] { withUnsafeBytes(of: UInt32(truncatingIfNeeded: v).littleEndian, Array.init) }
        var out: [UInt8] = [], central: [UInt8] = []
        for (name, data) in entries {
            let n = Array(name.utf8), crc = Int(crc32(data)), offset = out.count
            out += le32(0x0403_4B50) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0)
            out += le32(crc) + le32(data.count) + le32(data.count) + le16(n.count) + le16(0) + n + data
            central += le32(0x0201_4B50) + le16(20) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0)
            central += le32(crc) + le32(data.count) + le32(data.count) + le16(n.count) + le16(0) + le16(0)
            central += le16(0) + le16(0) + le32(0) + le32(offset) + n
        }
        let cdOffset = out.count
        out += central
        out += le32(0x0605_4B50) + le16(0) + le16(0) + le16(entries.count) + le16(entries.count)
        out += le32(central.count) + le32(cdOffset) + le16(0)
        return out
    }

    /// CRC-32 (IEEE), bitwise.
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c >> 1) ^ (0xEDB8_8320 & (0 &- (c & 1))) }
        }
        return ~c
    }
}
