import Foundation

/// Reads the tensors of a TorchScript archive (`torch.jit.save`) without executing anything.
///
/// Layout: a zip whose `<prefix>/data.pkl` pickles the module tree (protocol 2): each module is
/// `NEWOBJ` of a `__torch__.*` class followed by `BUILD` with its attributes (submodules, tensors,
/// ints, int lists via `torch.jit._pickle.build_intlist`); tensors come from
/// `torch._utils._rebuild_tensor_v2` over storages in `<prefix>/data/<key>`, exactly as in
/// `torch.save`'s zip format, whose reader (`TorchFormats.readZip`) this one reuses. The archive also
/// holds `<prefix>/code/` (the TorchScript source) and `<prefix>/constants.pkl`; neither is read
/// beyond detecting the format. The code is never run: the architecture comes from the model zoo.
///
/// Names: a tensor attribute `t` of the module reached through attributes `a`, `b` is `a.b.t`, the key
/// `torch.jit.load(f).state_dict()` gives it (e.g. `net.layers.conv.weight`).
///
/// Refused, naming the file: globals other than `__torch__.*` classes, `torch._utils._rebuild_tensor_v2`,
/// `torch.*Storage`, `collections.OrderedDict` and `torch.jit._pickle`'s typed-list builders (with
/// the pickle's byte offset); a root that is not a `__torch__` object; module trees that refer to
/// themselves, nest deeper than `maximumDepth` or have more than `maximumObjects` objects; and
/// everything the zip format refuses (missing, compressed or short storage records, tensors past
/// their storage or the file).
enum TorchScriptFormat {
    /// Deepest module nesting accepted (real models nest a few levels; bounds the recursion).
    static let maximumDepth = 256
    /// Most module objects visited (bounds the walk of a pickle whose objects are shared many times).
    static let maximumObjects = 1 << 20

    /// Whether `zip` is a TorchScript archive: it has `<prefix>/constants.pkl` or `<prefix>/code/` entries.
    static func isArchive(_ zip: ZipArchive) -> Bool {
        zip.entries.contains { e in
            e.name == "constants.pkl" || e.name.hasSuffix("/constants.pkl") || e.name.hasPrefix("code/") || e.name.contains("/code/")
        }
    }

    /// The globals a TorchScript `data.pkl` may name.
    static func allowsGlobal(_ module: String, _ name: String) -> Bool {
        switch (module, name) {
        case _ where module == "__torch__" || module.hasPrefix("__torch__."): return true
        case ("torch._utils", "_rebuild_tensor_v2"), ("collections", "OrderedDict"): return true
        case ("torch", _): return name.hasSuffix("Storage")
        case ("torch.jit._pickle", "build_intlist"), ("torch.jit._pickle", "build_floatlist"),
             ("torch.jit._pickle", "build_boollist"), ("torch.jit._pickle", "build_doublelist"),
             ("torch.jit._pickle", "restore_type_tag"):
            return true
        default: return false
        }
    }

    /// Indexes the tensors of the TorchScript archive `file` (no tensor data is read).
    static func read(_ file: RandomAccessFile) throws -> [(String, Checkpoint.Entry)] {
        try TorchFormats.readZip(file, allowsGlobal: allowsGlobal, tensors: moduleTensors)
    }

    /// Every tensor attribute of the module tree under `root`, named by its attribute path, in pickle order.
    static func moduleTensors(_ root: PickleValue, path: String, base: (StorageRef) -> Int) throws -> [(String, Checkpoint.Entry)] {
        guard case .dict(let module) = root, module.className != nil else {
            throw WeightsError.notACheckpoint(path: path, reason: "TorchScript archive whose data.pkl does not hold a __torch__ module")
        }
        var out: [(String, Checkpoint.Entry)] = []
        var visited = 0
        var onPath = Set<ObjectIdentifier>()
        func walk(_ object: PickleDict, _ prefix: String, depth: Int) throws {
            visited += 1
            guard visited <= maximumObjects else {
                throw WeightsError.malformed(path: path, reason: "TorchScript module tree has more than \(maximumObjects) objects")
            }
            guard depth <= maximumDepth else {
                throw WeightsError.malformed(path: path, reason: "TorchScript module '\(prefix)' nests deeper than \(maximumDepth) levels")
            }
            guard onPath.insert(ObjectIdentifier(object)).inserted else {
                throw WeightsError.malformed(path: path, reason: "TorchScript module '\(prefix)' contains itself")
            }
            defer { onPath.remove(ObjectIdentifier(object)) }
            for (k, v) in object.items {
                guard let name = k.string else { continue }
                switch v {
                case .tensor(let t):
                    out.append((prefix + name, try TorchFormats.entry(for: t, key: prefix + name, path: path, base: base)))
                case .dict(let child) where child.className != nil:
                    try walk(child, prefix + name + ".", depth: depth + 1)
                default:
                    continue  // ints, bools, int lists, None: configuration, not weights
                }
            }
        }
        try walk(module, "", depth: 0)
        return out
    }
}
