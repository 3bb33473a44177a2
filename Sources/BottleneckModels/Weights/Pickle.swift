import BottleneckCore
import Foundation

/// Element types a checkpoint tensor may be stored in.
enum TensorDType: Equatable {
    case float32, float16, bfloat16, float64, int64, int32, int16, int8, uint8, bool
    /// A type this reader cannot convert (complex, quantized, ...), kept by name for the error.
    case unsupported(String)

    /// Bytes per element (1 for unsupported types, whose data is never read).
    var size: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool, .unsupported: return 1
        }
    }

    var name: String {
        switch self {
        case .unsupported(let s): return s
        default: return "\(self)"
        }
    }

    /// The dtype of a `torch.<Name>Storage` class.
    init(torchStorage name: String) {
        switch name {
        case "FloatStorage": self = .float32
        case "HalfStorage": self = .float16
        case "BFloat16Storage": self = .bfloat16
        case "DoubleStorage": self = .float64
        case "LongStorage": self = .int64
        case "IntStorage": self = .int32
        case "ShortStorage": self = .int16
        case "CharStorage": self = .int8
        case "ByteStorage": self = .uint8
        case "BoolStorage": self = .bool
        default: self = .unsupported("torch.\(name)")
        }
    }
}

/// A storage referenced by a persistent id: `key` names its bytes in the container.
struct StorageRef {
    let dtype: TensorDType
    let key: String
    /// Elements in the storage.
    let numel: Int
    /// Element offset of a legacy storage view into its parent storage (0 otherwise).
    let viewOffset: Int
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
struct TensorRef {
    let storage: StorageRef
    /// Offset into the storage, in elements.
    let offset: Int
    let shape: [Int]
    let strides: [Int]
}

/// A pickled list (or set). Mutated only by ``PickleMachine`` while it is not yet inside another
/// container, so its recorded `depth` is exact and no value can contain itself.
final class PickleList {
    fileprivate(set) var items: [PickleValue] = []
    /// Container nesting depth: 1 for a list of scalars.
    fileprivate(set) var depth = 1
    /// Whether the list has been placed inside another container (after which it is frozen).
    fileprivate var isNested = false
}

/// A pickled dictionary (dict, OrderedDict), with the same freezing rule as ``PickleList``.
final class PickleDict {
    fileprivate(set) var items: [(PickleValue, PickleValue)] = []
    fileprivate(set) var depth = 1
    fileprivate var isNested = false
    /// The `__torch__.*` class of a TorchScript object made by NEWOBJ (BUILD puts its attributes in
    /// `items`); nil for dictionaries.
    fileprivate(set) var className: String?
}

/// Values of the pickle subset that state dicts use.
indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer too wide for Int64 (little-endian two's complement bytes), e.g. torch's magic number.
    case bigInt([UInt8])
    case float(Double)
    case string(String)
    case bytes([UInt8])
    case tuple([PickleValue])
    case list(PickleList)
    case dict(PickleDict)
    case global(module: String, name: String)
    case storage(StorageRef)
    case tensor(TensorRef)
    /// The result of calling a callable this reader does not model (optimizer state, numpy scalars, ...).
    case opaque(callable: String)

    var string: String? { if case .string(let s) = self { return s }; return nil }
    var int: Int? {
        switch self {
        case .int(let v): return v
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }
    var tuple: [PickleValue]? {
        switch self {
        case .tuple(let t): return t
        case .list(let l): return l.items
        default: return nil
        }
    }
}

/// A pickle virtual machine for the opcodes `torch.save` (protocol 2) and common protocol 3-5
/// writers emit. It never executes code: globals are names, and only the torch/collections
/// callables that rebuild tensors and dictionaries are interpreted.
///
/// Every read goes through a bounds-checked ``ByteReader``; lengths are validated against the
/// bytes that remain and ``CheckpointLimits/maxInMemoryBytes``; nesting is limited to
/// ``CheckpointLimits/maxNestingDepth``; a container cannot be changed once it is inside another, so
/// values are acyclic. Errors: ``MalformedBytes`` (truncated or impossible bytes, with the offset)
/// and ``WeightsError/unsupportedPickle(path:reason:offset:)``.
struct PickleMachine {
    let path: String
    /// The zip member the bytes come from (named in errors; offsets are then relative to it).
    let member: String?
    private var reader: ByteReader
    /// Position of the next opcode; after `run()`, one past the STOP opcode.
    var pos: Int { reader.position }
    /// Resolves a BINPERSID/PERSID id (the tuple torch writes for each storage).
    let persistentLoad: (PickleValue) throws -> PickleValue
    /// When set, GLOBAL/STACK_GLOBAL of a `(module, name)` it rejects fails with `.unsupportedPickle`.
    var allowsGlobal: ((_ module: String, _ name: String) -> Bool)?

    init(path: String, bytes: [UInt8], start: Int = 0, member: String? = nil,
         persistentLoad: @escaping (PickleValue) throws -> PickleValue) {
        self.path = path
        self.member = member
        self.reader = ByteReader(bytes, path: path, start: start)
        self.persistentLoad = persistentLoad
    }

    private func unsupported(_ r: String, at o: Int) -> WeightsError {
        .unsupportedPickle(path: path, reason: member.map { "in \($0): \(r)" } ?? r, offset: o)
    }

    /// Resolves a persistent id, placing the resolver's pickle errors at the opcode's offset.
    private func resolve(_ id: PickleValue, at: Int) throws -> PickleValue {
        do {
            return try persistentLoad(id)
        } catch WeightsError.unsupportedPickle(_, let reason, _) {
            throw unsupported(reason, at: at)
        }
    }

    private mutating func u8() throws -> Int { Int(try reader.u8("pickle opcode argument")) }
    private mutating func le(_ n: Int) throws -> UInt64 {
        let s = try reader.take(n, "pickle integer")
        var v: UInt64 = 0
        for (i, b) in s.enumerated() { v |= UInt64(b) << (8 * i) }
        return v
    }
    /// The bytes of a length-prefixed argument whose length has `T`'s width.
    private mutating func counted<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, _ what: String) throws -> ArraySlice<UInt8> {
        let n = try reader.length(type, what, limit: CheckpointLimits.maxInMemoryBytes)
        return try reader.take(n, what)
    }
    private mutating func line() throws -> String {
        String(decoding: try reader.line(terminator: 0x0A, maxLength: 1 << 16, "pickle text argument"), as: UTF8.self)
    }
    private static func utf8(_ b: ArraySlice<UInt8>) -> String { String(decoding: b, as: UTF8.self) }

    /// Decodes a little-endian two's complement integer (LONG1/LONG4).
    private static func long(_ b: ArraySlice<UInt8>) -> PickleValue {
        if b.isEmpty { return .int(0) }
        if b.count <= 8 {
            var v: UInt64 = 0
            for (i, x) in b.enumerated() { v |= UInt64(x) << (8 * i) }
            if b.count < 8, b.last! & 0x80 != 0 { v |= ~0 << (8 * UInt64(b.count)) }
            return .int(Int(Int64(bitPattern: v)))
        }
        return .bigInt(Array(b))
    }

    /// A stack or memo entry: the value and its container nesting depth (0 for scalars). Lists
    /// and dicts carry their depth themselves, as it grows while they are filled.
    private struct Slot {
        let value: PickleValue
        let fixedDepth: Int
        init(_ value: PickleValue, depth: Int = 0) { self.value = value; self.fixedDepth = depth }
        var depth: Int {
            switch value {
            case .list(let l): return l.depth
            case .dict(let d): return d.depth
            default: return fixedDepth
            }
        }
    }

    /// Throws unless a container holding values of depth `childDepth` stays within the limit.
    private func checkDepth(_ childDepth: Int, at: Int) throws -> Int {
        let depth = childDepth + 1
        guard depth <= CheckpointLimits.maxNestingDepth else {
            throw reader.error("containers nested deeper than \(CheckpointLimits.maxNestingDepth) levels", at: at)
        }
        return depth
    }

    /// Marks `slots` as placed inside a container (freezing lists and dicts) and returns their values.
    private static func nest(_ slots: [Slot]) -> [PickleValue] {
        for s in slots {
            switch s.value {
            case .list(let l): l.isNested = true
            case .dict(let d): d.isNested = true
            default: break
            }
        }
        return slots.map(\.value)
    }

    /// Whether `slot` is the container `target` itself (adding it would make a cycle).
    private static func isSame(_ slot: Slot, as target: AnyObject) -> Bool {
        switch slot.value {
        case .list(let l): return l === target
        case .dict(let d): return d === target
        default: return false
        }
    }

    /// Runs until STOP and returns the pickled object.
    mutating func run() throws -> PickleValue {
        var stack: [Slot] = []
        var marks: [Int] = []
        var memo: [Int: Slot] = [:]

        func pop(_ at: Int) throws -> Slot {
            guard let v = stack.popLast() else { throw unsupported("stack underflow", at: at) }
            return v
        }
        func popMark(_ at: Int) throws -> [Slot] {
            guard let m = marks.popLast(), m <= stack.count else { throw unsupported("MARK missing", at: at) }
            let items = Array(stack[m...])
            stack.removeSubrange(m...)
            return items
        }
        func top(_ at: Int) throws -> Slot {
            guard let v = stack.last else { throw unsupported("stack underflow", at: at) }
            return v
        }
        func tuple(_ items: [Slot], at: Int) throws -> Slot {
            let depth = try checkDepth(items.map(\.depth).max() ?? 0, at: at)
            return Slot(.tuple(Self.nest(items)), depth: depth)
        }
        func list(_ items: [Slot], at: Int) throws -> Slot {
            let l = PickleList()
            l.depth = try checkDepth(items.map(\.depth).max() ?? 0, at: at)
            l.items = Self.nest(items)
            return Slot(.list(l))
        }
        /// Pairs `items` (key, value, key, value, ...) into `d`, an unnested dict.
        func setItems(_ d: PickleDict, _ items: [Slot], at: Int) throws {
            guard !d.isNested else { throw unsupported("SETITEM on a dict already inside another container", at: at) }
            guard !items.contains(where: { Self.isSame($0, as: d) }) else { throw unsupported("dict contains itself", at: at) }
            d.depth = max(d.depth, try checkDepth(items.map(\.depth).max() ?? 0, at: at))
            let values = Self.nest(items)
            var i = 0
            while i + 1 < values.count { d.items.append((values[i], values[i + 1])); i += 2 }
        }
        /// Appends `items` to `l`, an unnested list.
        func append(_ l: PickleList, _ items: [Slot], at: Int) throws {
            guard !l.isNested else { throw unsupported("APPEND on a list already inside another container", at: at) }
            guard !items.contains(where: { Self.isSame($0, as: l) }) else { throw unsupported("list contains itself", at: at) }
            l.depth = max(l.depth, try checkDepth(items.map(\.depth).max() ?? 0, at: at))
            l.items += Self.nest(items)
        }
        func callable(_ callable: Slot, _ args: Slot, at: Int) throws -> Slot {
            let value = try reduce(callable.value, args.value.tuple ?? [], at: at)
            switch value {
            case .dict(let d):
                // Built from `args`' items, so never deeper than `args` plus one level.
                d.depth = try checkDepth(args.depth, at: at)
                return Slot(value)
            case .tensor, .storage, .opaque: return Slot(value, depth: 1)
            default: return Slot(value, depth: try checkDepth(args.depth, at: at))
            }
        }

        while true {
            let at = reader.position
            let op = try u8()
            switch op {
            case 0x80: _ = try u8()                                   // PROTO
            case 0x95: _ = try reader.take(8, "FRAME length")         // FRAME (framing is irrelevant in memory)
            case 0x2E:                                                // STOP
                return try pop(at).value
            case 0x28: marks.append(stack.count)                      // MARK
            case 0x7D: stack.append(Slot(.dict(PickleDict())))        // EMPTY_DICT
            case 0x5D: stack.append(Slot(.list(PickleList())))        // EMPTY_LIST
            case 0x29: stack.append(Slot(.tuple([]), depth: 1))       // EMPTY_TUPLE
            case 0x74: stack.append(try tuple(try popMark(at), at: at))  // TUPLE
            case 0x85: stack.append(try tuple([try pop(at)], at: at))    // TUPLE1
            case 0x86: let b = try pop(at), a = try pop(at); stack.append(try tuple([a, b], at: at))  // TUPLE2
            case 0x87: let c = try pop(at), b = try pop(at), a = try pop(at); stack.append(try tuple([a, b, c], at: at))  // TUPLE3
            case 0x6C: stack.append(try list(try popMark(at), at: at))  // LIST
            case 0x64:                                                // DICT
                let d = PickleDict()
                try setItems(d, try popMark(at), at: at)
                stack.append(Slot(.dict(d)))
            case 0x4E: stack.append(Slot(.none))                      // NONE
            case 0x88: stack.append(Slot(.bool(true)))                // NEWTRUE
            case 0x89: stack.append(Slot(.bool(false)))               // NEWFALSE
            case 0x4A: stack.append(Slot(.int(Int(Int32(bitPattern: UInt32(try le(4)))))))  // BININT
            case 0x4B: stack.append(Slot(.int(try u8())))             // BININT1
            case 0x4D: stack.append(Slot(.int(Int(try le(2)))))       // BININT2
            case 0x8A: stack.append(Slot(Self.long(try counted(UInt8.self, "LONG1"))))   // LONG1
            case 0x8B: stack.append(Slot(Self.long(try counted(UInt32.self, "LONG4"))))  // LONG4
            case 0x49:                                                // INT (text)
                let s = try line()
                if s == "01" { stack.append(Slot(.bool(true))) } else if s == "00" { stack.append(Slot(.bool(false))) }
                else if let v = Int(s) { stack.append(Slot(.int(v))) } else { throw unsupported("INT '\(s.prefix(40))'", at: at) }
            case 0x4C:                                                // LONG (text)
                var s = try line(); if s.hasSuffix("L") { s.removeLast() }
                guard let v = Int(s) else { throw unsupported("LONG '\(s.prefix(40))'", at: at) }
                stack.append(Slot(.int(v)))
            case 0x47: stack.append(Slot(.float(Double(bitPattern: try le(8).byteSwapped))))  // BINFLOAT (big-endian on disk)
            case 0x58: stack.append(Slot(.string(Self.utf8(try counted(UInt32.self, "BINUNICODE")))))        // BINUNICODE
            case 0x8C: stack.append(Slot(.string(Self.utf8(try counted(UInt8.self, "SHORT_BINUNICODE")))))   // SHORT_BINUNICODE
            case 0x8D: stack.append(Slot(.string(Self.utf8(try counted(UInt64.self, "BINUNICODE8")))))       // BINUNICODE8
            case 0x54: stack.append(Slot(.string(Self.utf8(try counted(UInt32.self, "BINSTRING")))))         // BINSTRING (py2 str)
            case 0x55: stack.append(Slot(.string(Self.utf8(try counted(UInt8.self, "SHORT_BINSTRING")))))    // SHORT_BINSTRING
            case 0x42: stack.append(Slot(.bytes(Array(try counted(UInt32.self, "BINBYTES")))))               // BINBYTES
            case 0x43: stack.append(Slot(.bytes(Array(try counted(UInt8.self, "SHORT_BINBYTES")))))          // SHORT_BINBYTES
            case 0x8E: stack.append(Slot(.bytes(Array(try counted(UInt64.self, "BINBYTES8")))))              // BINBYTES8
            case 0x63:                                                // GLOBAL "module\nname\n"
                let module = try line(), name = try line()
                try check(module, name, at: at)
                stack.append(Slot(.global(module: module, name: name)))
            case 0x93:                                                // STACK_GLOBAL
                let name = try pop(at), module = try pop(at)
                guard let m = module.value.string, let n = name.value.string else { throw unsupported("STACK_GLOBAL needs two strings", at: at) }
                try check(m, n, at: at)
                stack.append(Slot(.global(module: m, name: n)))
            case 0x71: memo[try u8()] = try top(at)                   // BINPUT
            case 0x72: memo[Int(try le(4))] = try top(at)             // LONG_BINPUT
            case 0x94: memo[memo.count] = try top(at)                 // MEMOIZE
            case 0x70:                                                // PUT (text)
                guard let i = Int(try line()) else { throw unsupported("PUT index", at: at) }
                memo[i] = try top(at)
            case 0x68, 0x6A, 0x67:                                    // BINGET, LONG_BINGET, GET
                let i: Int
                if op == 0x68 { i = try u8() } else if op == 0x6A { i = Int(try le(4)) } else {
                    guard let v = Int(try line()) else { throw unsupported("GET index", at: at) }
                    i = v
                }
                guard let v = memo[i] else { throw unsupported("memo index \(i) undefined", at: at) }
                stack.append(v)
            case 0x30: _ = try pop(at)                                // POP
            case 0x31: _ = try popMark(at)                            // POP_MARK
            case 0x32: stack.append(try top(at))                      // DUP
            case 0x51:                                                // BINPERSID
                let id = try pop(at)
                stack.append(Slot(try resolve(Self.nest([id])[0], at: at), depth: 1))
            case 0x50: stack.append(Slot(try resolve(.string(try line()), at: at), depth: 1))  // PERSID
            case 0x52, 0x81:                                          // REDUCE, NEWOBJ
                let args = try pop(at), callee = try pop(at)
                _ = Self.nest([args])
                stack.append(try callable(callee, args, at: at))
            case 0x62:                                                // BUILD
                // A TorchScript object's state (its attributes) becomes its items; other objects'
                // state is not needed.
                let state = try pop(at)
                if case .dict(let object) = try top(at).value, object.className != nil, case .dict(let attributes) = state.value {
                    if let name = attributes.items.first(where: { if case .dict(let d) = $0.1 { return d === object }; return false })?.0 {
                        throw unsupported("TorchScript object \(object.className ?? "") contains itself (attribute '\(name.string ?? "?")')", at: at)
                    }
                    guard !object.isNested, attributes !== object else {
                        throw unsupported("BUILD on a TorchScript object already inside another container", at: at)
                    }
                    object.depth = max(object.depth, try checkDepth(state.depth, at: at))
                    _ = Self.nest([state])
                    object.items += attributes.items
                }
            case 0x73:                                                // SETITEM
                let v = try pop(at), k = try pop(at)
                guard case .dict(let d) = try top(at).value else { throw unsupported("SETITEM on a non-dict", at: at) }
                try setItems(d, [k, v], at: at)
            case 0x75:                                                // SETITEMS
                let items = try popMark(at)
                guard case .dict(let d) = try top(at).value else { throw unsupported("SETITEMS on a non-dict", at: at) }
                try setItems(d, items, at: at)
            case 0x61:                                                // APPEND
                let v = try pop(at)
                guard case .list(let l) = try top(at).value else { throw unsupported("APPEND on a non-list", at: at) }
                try append(l, [v], at: at)
            case 0x65:                                                // APPENDS
                let items = try popMark(at)
                guard case .list(let l) = try top(at).value else { throw unsupported("APPENDS on a non-list", at: at) }
                try append(l, items, at: at)
            case 0x8F: stack.append(Slot(.list(PickleList())))        // EMPTY_SET (modelled as a list)
            case 0x90:                                                // ADDITEMS
                let items = try popMark(at)
                guard case .list(let l) = try top(at).value else { throw unsupported("ADDITEMS on a non-set", at: at) }
                try append(l, items, at: at)
            case 0x91: stack.append(try list(try popMark(at), at: at))  // FROZENSET
            default:
                throw unsupported(String(format: "opcode 0x%02x", op), at: at)
            }
        }
    }

    private func check(_ module: String, _ name: String, at: Int) throws {
        if let allowsGlobal, !allowsGlobal(module, name) { throw unsupported("global \(module).\(name) is not allowed here", at: at) }
    }

    /// Interprets the callables that rebuild state dicts; anything else becomes `.opaque`.
    private func reduce(_ callable: PickleValue, _ args: [PickleValue], at: Int) throws -> PickleValue {
        guard case .global(let module, let name) = callable else {
            return .opaque(callable: "<non-global callable>")
        }
        switch (module, name) {
        case _ where module == "__torch__" || module.hasPrefix("__torch__."):
            // A TorchScript object: NEWOBJ with no arguments, then BUILD with its attributes.
            let object = PickleDict()
            object.className = "\(module).\(name)"
            return .dict(object)
        case ("collections", "OrderedDict"), ("builtins", "dict"), ("__builtin__", "dict"):
            let d = PickleDict()
            if let pairs = args.first?.tuple {
                for p in pairs { if let kv = p.tuple, kv.count == 2 { d.items.append((kv[0], kv[1])) } }
            }
            return .dict(d)
        case ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"):
            guard args.count >= 4, case .storage(let s) = args[0], let offset = args[1].int,
                  let size = args[2].tuple?.compactMap(\.int), let stride = args[3].tuple?.compactMap(\.int),
                  size.count == args[2].tuple!.count, stride.count == size.count
            else { throw unsupported("malformed \(name) arguments", at: at) }
            return .tensor(TensorRef(storage: s, offset: offset, shape: size, strides: stride))
        case ("torch._tensor", "_rebuild_from_type_v2"):
            // (func, subclass type, func's args, state): tensors with Python attributes or subclasses.
            guard args.count >= 3, case .global = args[0], let inner = args[2].tuple else {
                throw unsupported("malformed _rebuild_from_type_v2 arguments", at: at)
            }
            return try reduce(args[0], inner, at: at)
        case ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"):
            guard let data = args.first, case .tensor = data else { throw unsupported("\(name) without a tensor", at: at) }
            return data
        default:
            return .opaque(callable: "\(module).\(name)")
        }
    }
}
