import BottleneckCore
import Foundation

/// Parsers for the two `torch.save` layouts. Both pickle the state dict with each storage
/// replaced by a persistent id; they differ in where the storage bytes live.
enum TorchFormats {
    /// torch's legacy-format magic number 0x1950a86a20f9469cfc6c, as LONG1 little-endian bytes.
    static let legacyMagic: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19]

    // MARK: zip format

    /// `<prefix>/data.pkl` holds the pickle; storage `k` is the stored record `<prefix>/data/k`.
    /// `allowsGlobal` restricts the pickle's globals; `tensors` turns the unpickled root into entries
    /// (the state dict's by default; TorchScript archives walk their module tree instead).
    static func readZip(_ file: RandomAccessFile, allowsGlobal: ((String, String) -> Bool)? = nil,
                        tensors: (PickleValue, String, (StorageRef) -> Int) throws -> [(String, Checkpoint.Entry)] = entries)
        throws -> [(String, Checkpoint.Entry)] {
        let zip = try ZipArchive(file: file)
        guard let pkl = zip.entries.filter({ $0.name == "data.pkl" || $0.name.hasSuffix("/data.pkl") })
            .min(by: { $0.name.count < $1.name.count }) else {
            throw WeightsError.notACheckpoint(path: file.path, reason: "zip archive without data.pkl (not written by torch.save)")
        }
        let prefix = String(pkl.name.dropLast("data.pkl".count))
        if let bo = zip.entry(named: prefix + "byteorder") {
            // torch writes "little" or "big"; anything longer is not a byteorder record.
            let order = String(decoding: try zip.contents(of: bo, maxBytes: 16), as: UTF8.self)
            guard order == "little" else {
                throw WeightsError.malformed(path: file.path, reason: "byteorder '\(order)': only little-endian checkpoints are supported")
            }
        }
        var storages: [String: StorageRef] = [:]
        var machine = PickleMachine(path: file.path, bytes: try zip.contents(of: pkl), member: pkl.name) { pid in
            let ref = try storageRef(pid, path: file.path)
            storages[ref.key] = ref
            return .storage(ref)
        }
        machine.allowsGlobal = allowsGlobal
        let root: PickleValue
        do { root = try machine.run() } catch let e as MalformedBytes { throw WeightsError(e, member: pkl.name) }
        var bases: [String: Int] = [:]
        for (key, ref) in storages {
            guard let rec = zip.entry(named: prefix + "data/" + key) else {
                throw WeightsError.truncated(path: file.path, reason: "storage record \(prefix)data/\(key) is missing")
            }
            guard rec.method == 0 else {
                throw WeightsError.malformed(path: file.path, reason: "storage record \(rec.name) is compressed; torch stores them uncompressed")
            }
            let needed = CheckedSize.multiply(ref.numel, ref.dtype.size)
            guard let needed, rec.uncompressedSize >= needed else {
                throw WeightsError.malformed(path: file.path, reason: "storage record \(rec.name) holds \(rec.uncompressedSize) bytes, expected \(ref.numel) elements of \(ref.dtype.size) bytes")
            }
            bases[key] = try zip.dataOffset(of: rec)
        }
        return try tensors(root, file.path) { bases[$0.key] ?? -1 }
    }

    /// The storage a persistent id names: `('storage', storage_type, key, location, numel[, view_metadata])`.
    private static func storageRef(_ pid: PickleValue, path: String) throws -> StorageRef {
        guard let t = pid.tuple, t.count >= 5, t[0].string == "storage", case .global(_, let type) = t[1],
              let key = t[2].string, let numel = t[4].int else {
            throw WeightsError.unsupportedPickle(path: path, reason: "persistent id is not a torch storage", offset: 0)
        }
        guard numel >= 0 else { throw WeightsError.malformed(path: path, reason: "storage \(key) declares \(numel) elements") }
        return StorageRef(dtype: TensorDType(torchStorage: type), key: key, numel: numel, viewOffset: 0)
    }

    // MARK: legacy format

    /// Layout: pickle(magic) pickle(protocol 1001) pickle(sys_info) pickle(state dict, storages as
    /// persistent ids) pickle([storage keys]) then, per key in that list, an int64 element count
    /// followed by the storage's raw little-endian elements.
    static func readLegacy(_ file: RandomAccessFile) throws -> [(String, Checkpoint.Entry)] {
        // The pickles are small and at the front; read a prefix and grow it (up to the in-memory
        // limit) while a pickle runs past it.
        let maxWindow = min(file.size, CheckpointLimits.maxInMemoryBytes)
        var window = min(maxWindow, 1 << 20)
        while true {
            let bytes = try file.bytes(at: 0, count: window)
            do {
                return try parseLegacy(file, bytes)
            } catch let e as MalformedBytes {
                if e.kind == .truncated, window < maxWindow {
                    window = min(maxWindow, window * 4)
                    continue
                }
                if e.kind == .truncated, window < file.size {
                    throw WeightsError.malformed(path: file.path, reason: "at byte \(e.offset): \(e.reason): the header pickles exceed \(CheckpointLimits.maxInMemoryBytes >> 20) MiB")
                }
                throw WeightsError(e)
            }
        }
    }

    /// Parses the legacy layout from `bytes`, the file's first bytes. Throws ``MalformedBytes``
    /// (`.truncated` when a pickle runs past `bytes`) or ``WeightsError``.
    private static func parseLegacy(_ file: RandomAccessFile, _ bytes: [UInt8]) throws -> [(String, Checkpoint.Entry)] {
        let path = file.path
        let noPersistent: (PickleValue) throws -> PickleValue = { _ in
            throw WeightsError.unsupportedPickle(path: path, reason: "unexpected persistent id in a header pickle", offset: 0)
        }
        var m = PickleMachine(path: path, bytes: bytes, persistentLoad: noPersistent)
        guard case .bigInt(let magic) = try m.run(), magic == legacyMagic else {
            throw WeightsError.notACheckpoint(path: path, reason: "pickle file without torch's magic number")
        }
        m = PickleMachine(path: path, bytes: bytes, start: m.pos, persistentLoad: noPersistent)
        guard let proto = try m.run().int, proto == 1001 else {
            throw WeightsError.malformed(path: path, reason: "unsupported legacy protocol version (expected 1001)")
        }
        m = PickleMachine(path: path, bytes: bytes, start: m.pos, persistentLoad: noPersistent)
        if case .dict(let info) = try m.run(),
           let le = info.items.first(where: { $0.0.string == "little_endian" })?.1, case .bool(false) = le {
            throw WeightsError.malformed(path: path, reason: "big-endian checkpoints are not supported")
        }
        var storages: [String: StorageRef] = [:]
        m = PickleMachine(path: path, bytes: bytes, start: m.pos) { pid in
            let root = try storageRef(pid, path: path)
            storages[root.key] = root
            // Very old files pickle views of a storage: (view_key, element offset, view size).
            if let t = pid.tuple, t.count >= 6, let view = t[5].tuple, view.count == 3, let off = view[1].int {
                guard off >= 0 else { throw WeightsError.malformed(path: path, reason: "storage view of \(root.key) at element \(off)") }
                return .storage(StorageRef(dtype: root.dtype, key: root.key, numel: root.numel, viewOffset: off))
            }
            return .storage(root)
        }
        let root = try m.run()
        m = PickleMachine(path: path, bytes: bytes, start: m.pos, persistentLoad: noPersistent)
        guard let keyList = try m.run().tuple?.compactMap(\.string) else {
            throw WeightsError.malformed(path: path, reason: "storage key list missing after the state dict")
        }
        var cursor = m.pos
        var bases: [String: Int] = [:]
        for key in keyList {
            guard let headerEnd = CheckedSize.add(cursor, 8), headerEnd <= file.size else {
                throw WeightsError.truncated(path: path, reason: "storage \(key) header at byte \(cursor) lies beyond the end (\(file.size) bytes)")
            }
            var field = ByteReader(try file.bytes(at: cursor, count: 8), path: path, baseOffset: cursor)
            let numel = Int(Int64(bitPattern: try field.le(UInt64.self, "storage element count")))
            let esize = storages[key]?.dtype.size ?? 1
            guard numel >= 0, numel == storages[key]?.numel ?? numel else {
                throw WeightsError.malformed(path: path, reason: "storage \(key) at byte \(cursor) declares \(numel) elements, the pickle says \(storages[key]?.numel ?? -1)")
            }
            guard let dataBytes = CheckedSize.multiply(numel, esize), let end = CheckedSize.add(headerEnd, dataBytes),
                  end <= file.size else {
                throw WeightsError.truncated(path: path, reason: "storage \(key) at byte \(cursor) declares \(numel) elements of \(esize) bytes, more than the file's \(file.size) bytes hold")
            }
            bases[key] = headerEnd
            cursor = end
        }
        return try entries(from: root, path: path) { ref in bases[ref.key] ?? -1 }
    }

    // MARK: shared

    /// Finds the state dict in `root` (unwrapping `{"state_dict": ...}`-style checkpoints) and
    /// turns its tensors into entries; `base` gives the file offset of a storage's first element
    /// (negative when the storage has no data). Each tensor's view is checked to lie inside its
    /// storage; ``Checkpoint`` then checks byte extents against the file.
    static func entries(from root: PickleValue, path: String, base: (StorageRef) -> Int) throws -> [(String, Checkpoint.Entry)] {
        guard let dict = stateDict(in: root) else {
            throw WeightsError.notACheckpoint(path: path, reason: "the pickle holds no dictionary of tensors")
        }
        var out: [(String, Checkpoint.Entry)] = []
        for (k, v) in dict.items {
            guard let key = k.string else { continue }
            switch v {
            case .tensor(let t):
                out.append((key, try entry(for: t, key: key, path: path, base: base)))
            case .opaque(let callable) where callable.hasPrefix("torch"):
                throw WeightsError.unsupportedPickle(path: path, reason: "tensor '\(key)' is rebuilt by \(callable), which this reader does not support", offset: 0)
            default:
                continue  // non-tensor entries (ints, strings) are not weights
            }
        }
        return out
    }

    /// The entry of tensor `key`, checked to lie within its storage; `base` as in `entries`.
    static func entry(for t: TensorRef, key: String, path: String, base: (StorageRef) -> Int) throws -> Checkpoint.Entry {
        let b = base(t.storage)
        guard b >= 0 else { throw WeightsError.truncated(path: path, reason: "storage \(t.storage.key) of '\(key)' has no data") }
        guard let last = Checkpoint.lastIndex(shape: t.shape, strides: t.strides), t.offset >= 0,
              let first = CheckedSize.add(t.storage.viewOffset, t.offset),
              last < 0 || CheckedSize.fits(offset: first, count: last + 1, in: t.storage.numel) else {
            throw WeightsError.malformed(path: path, reason: "tensor '\(key)' (offset \(t.offset), shape \(t.shape), strides \(t.strides)) does not lie inside its storage of \(t.storage.numel) elements")
        }
        return Checkpoint.Entry(dtype: t.storage.dtype, shape: t.shape, strides: t.strides, base: b, offset: first)
    }

    private static func hasTensors(_ d: PickleDict) -> Bool {
        d.items.contains { if case .tensor = $0.1 { return true }; return false }
    }

    /// The dictionary holding the weights: `root` itself or a well-known wrapper key, else the one
    /// nested dictionary of tensors. Results are memoised per dictionary (a pickle may share one
    /// dictionary between many parents), so the walk is linear in the pickle's size; its recursion
    /// depth is bounded by ``CheckpointLimits/maxNestingDepth`` and the pickle's values are acyclic.
    static func stateDict(in root: PickleValue) -> PickleDict? {
        var memo: [ObjectIdentifier: PickleDict?] = [:]
        func search(_ value: PickleValue) -> PickleDict? {
            guard case .dict(let d) = value else { return nil }
            if let known = memo[ObjectIdentifier(d)] { return known }
            let result = find(in: d)
            memo[ObjectIdentifier(d)] = .some(result)
            return result
        }
        func find(in d: PickleDict) -> PickleDict? {
            if hasTensors(d) { return d }
            for name in ["state_dict", "model", "model_state_dict", "state_dict_ema", "model_ema", "module", "net", "params"] {
                if let v = d.items.first(where: { $0.0.string == name })?.1, let inner = search(v) { return inner }
            }
            let nested = d.items.compactMap { search($0.1) }
            return nested.count == 1 ? nested[0] : nil
        }
        return search(root)
    }
}
