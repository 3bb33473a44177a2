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

final class PickleList { var items: [PickleValue] = [] }
final class PickleDict {
    var items: [(PickleValue, PickleValue)] = []
    /// Attributes set by BUILD (e.g. an OrderedDict's `_metadata`, a TorchScript module's state).
    var attributes: [(PickleValue, PickleValue)] = []
    /// The `__torch__.*` class of a TorchScript object made by NEWOBJ (its BUILD state lands in
    /// `attributes`); nil for dictionaries.
    var className: String?
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
struct PickleMachine {
    let path: String
    let bytes: [UInt8]
    /// Position of the next opcode; after `run()`, one past the STOP opcode.
    var pos: Int
    /// Resolves a BINPERSID/PERSID id (the tuple torch writes for each storage).
    let persistentLoad: (PickleValue) throws -> PickleValue
    /// When set, GLOBAL/STACK_GLOBAL of a `(module, name)` it rejects fails with `.unsupportedPickle`.
    var allowsGlobal: ((_ module: String, _ name: String) -> Bool)?

    init(path: String, bytes: [UInt8], start: Int = 0, persistentLoad: @escaping (PickleValue) throws -> PickleValue) {
        self.path = path
        self.bytes = bytes
        self.pos = start
        self.persistentLoad = persistentLoad
    }

    private func truncated() -> WeightsError {
        .truncated(path: path, reason: "pickle stream ends at byte \(bytes.count) before its STOP opcode")
    }
    private func unsupported(_ r: String, at o: Int) -> WeightsError { .unsupportedPickle(path: path, reason: r, offset: o) }

    private mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, pos + n <= bytes.count else { throw truncated() }
        defer { pos += n }
        return bytes[pos..<(pos + n)]
    }
    private mutating func u8() throws -> Int { Int(try take(1).first!) }
    private mutating func le(_ n: Int) throws -> UInt64 {
        let s = try take(n)
        var v: UInt64 = 0
        for (i, b) in s.enumerated() { v |= UInt64(b) << (8 * i) }
        return v
    }
    private mutating func line() throws -> String {
        guard let nl = bytes[pos...].firstIndex(of: 0x0A) else { throw truncated() }
        defer { pos = nl + 1 }
        return String(decoding: bytes[pos..<nl], as: UTF8.self)
    }
    private mutating func utf8(_ n: Int) throws -> String { String(decoding: try take(n), as: UTF8.self) }

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

    /// Runs until STOP and returns the pickled object.
    mutating func run() throws -> PickleValue {
        var stack: [PickleValue] = []
        var marks: [Int] = []
        var memo: [Int: PickleValue] = [:]

        func pop(_ at: Int) throws -> PickleValue {
            guard let v = stack.popLast() else { throw unsupported("stack underflow", at: at) }
            return v
        }
        func popMark(_ at: Int) throws -> [PickleValue] {
            guard let m = marks.popLast(), m <= stack.count else { throw unsupported("MARK missing", at: at) }
            let items = Array(stack[m...])
            stack.removeSubrange(m...)
            return items
        }
        func top(_ at: Int) throws -> PickleValue {
            guard let v = stack.last else { throw unsupported("stack underflow", at: at) }
            return v
        }

        while true {
            let at = pos
            let op = try u8()
            switch op {
            case 0x80: _ = try u8()                                   // PROTO
            case 0x95: _ = try take(8)                                // FRAME (framing is irrelevant in memory)
            case 0x2E:                                                // STOP
                return try pop(at)
            case 0x28: marks.append(stack.count)                      // MARK
            case 0x7D: stack.append(.dict(PickleDict()))              // EMPTY_DICT
            case 0x5D: stack.append(.list(PickleList()))              // EMPTY_LIST
            case 0x29: stack.append(.tuple([]))                       // EMPTY_TUPLE
            case 0x74: stack.append(.tuple(try popMark(at)))          // TUPLE
            case 0x85: stack.append(.tuple([try pop(at)]))            // TUPLE1
            case 0x86: let b = try pop(at), a = try pop(at); stack.append(.tuple([a, b]))  // TUPLE2
            case 0x87: let c = try pop(at), b = try pop(at), a = try pop(at); stack.append(.tuple([a, b, c]))  // TUPLE3
            case 0x6C: let l = PickleList(); l.items = try popMark(at); stack.append(.list(l))  // LIST
            case 0x64:                                                // DICT
                let items = try popMark(at)
                let d = PickleDict()
                var i = 0
                while i + 1 < items.count { d.items.append((items[i], items[i + 1])); i += 2 }
                stack.append(.dict(d))
            case 0x4E: stack.append(.none)                            // NONE
            case 0x88: stack.append(.bool(true))                      // NEWTRUE
            case 0x89: stack.append(.bool(false))                     // NEWFALSE
            case 0x4A: stack.append(.int(Int(Int32(bitPattern: UInt32(try le(4))))))  // BININT
            case 0x4B: stack.append(.int(try u8()))                   // BININT1
            case 0x4D: stack.append(.int(Int(try le(2))))             // BININT2
            case 0x8A: let n = try u8(); stack.append(Self.long(try take(n)))  // LONG1
            case 0x8B: let n = Int(try le(4)); stack.append(Self.long(try take(n)))  // LONG4
            case 0x49:                                                // INT (text)
                let s = try line()
                if s == "01" { stack.append(.bool(true)) } else if s == "00" { stack.append(.bool(false)) }
                else if let v = Int(s) { stack.append(.int(v)) } else { throw unsupported("INT '\(s)'", at: at) }
            case 0x4C:                                                // LONG (text)
                var s = try line(); if s.hasSuffix("L") { s.removeLast() }
                guard let v = Int(s) else { throw unsupported("LONG '\(s)'", at: at) }
                stack.append(.int(v))
            case 0x47: stack.append(.float(Double(bitPattern: try le(8).byteSwapped)))  // BINFLOAT (big-endian on disk)
            case 0x58: let n = Int(try le(4)); stack.append(.string(try utf8(n)))  // BINUNICODE
            case 0x8C: let n = try u8(); stack.append(.string(try utf8(n)))        // SHORT_BINUNICODE
            case 0x8D: let n = Int(try le(8)); stack.append(.string(try utf8(n)))  // BINUNICODE8
            case 0x54: let n = Int(try le(4)); stack.append(.string(try utf8(n)))  // BINSTRING (py2 str)
            case 0x55: let n = try u8(); stack.append(.string(try utf8(n)))        // SHORT_BINSTRING
            case 0x42: let n = Int(try le(4)); stack.append(.bytes(Array(try take(n))))  // BINBYTES
            case 0x43: let n = try u8(); stack.append(.bytes(Array(try take(n))))        // SHORT_BINBYTES
            case 0x8E: let n = Int(try le(8)); stack.append(.bytes(Array(try take(n))))  // BINBYTES8
            case 0x63:                                                // GLOBAL "module\nname\n"
                let module = try line(), name = try line()
                try check(module, name, at: at)
                stack.append(.global(module: module, name: name))
            case 0x93:                                                // STACK_GLOBAL
                let name = try pop(at), module = try pop(at)
                guard let m = module.string, let n = name.string else { throw unsupported("STACK_GLOBAL needs two strings", at: at) }
                try check(m, n, at: at)
                stack.append(.global(module: m, name: n))
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
            case 0x51: stack.append(try persistentLoad(try pop(at)))  // BINPERSID
            case 0x50: stack.append(try persistentLoad(.string(try line())))  // PERSID
            case 0x52:                                                // REDUCE
                let args = try pop(at), callable = try pop(at)
                stack.append(try reduce(callable, args.tuple ?? [], at: at))
            case 0x81:                                                // NEWOBJ
                let args = try pop(at), cls = try pop(at)
                stack.append(try reduce(cls, args.tuple ?? [], at: at))
            case 0x62:                                                // BUILD
                let state = try pop(at)
                if case .dict(let d) = try top(at), case .dict(let s) = state { d.attributes += s.items }
            case 0x73:                                                // SETITEM
                let v = try pop(at), k = try pop(at)
                guard case .dict(let d) = try top(at) else { throw unsupported("SETITEM on a non-dict", at: at) }
                d.items.append((k, v))
            case 0x75:                                                // SETITEMS
                let items = try popMark(at)
                guard case .dict(let d) = try top(at) else { throw unsupported("SETITEMS on a non-dict", at: at) }
                var i = 0
                while i + 1 < items.count { d.items.append((items[i], items[i + 1])); i += 2 }
            case 0x61:                                                // APPEND
                let v = try pop(at)
                guard case .list(let l) = try top(at) else { throw unsupported("APPEND on a non-list", at: at) }
                l.items.append(v)
            case 0x65:                                                // APPENDS
                let items = try popMark(at)
                guard case .list(let l) = try top(at) else { throw unsupported("APPENDS on a non-list", at: at) }
                l.items += items
            case 0x8F: stack.append(.list(PickleList()))              // EMPTY_SET (modelled as a list)
            case 0x90:                                                // ADDITEMS
                let items = try popMark(at)
                if case .list(let l) = try top(at) { l.items += items }
            case 0x91: let l = PickleList(); l.items = try popMark(at); stack.append(.list(l))  // FROZENSET
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
