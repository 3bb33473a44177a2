import Foundation

/// Element types this package reads and writes in NumPy `.npy` files.
public enum NumpyDType: String, Sendable {
    /// Little-endian IEEE float32 (`<f4`).
    case float32 = "<f4"
    /// Little-endian IEEE float64 (`<f8`).
    case float64 = "<f8"
    /// Little-endian int64 (`<i8`).
    case int64 = "<i8"
    /// Little-endian int32 (`<i4`).
    case int32 = "<i4"
    /// Unsigned bytes (`|u1`).
    case uint8 = "|u1"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .float32, .int32: return 4
        case .float64, .int64: return 8
        case .uint8: return 1
        }
    }
}

/// A C-ordered array as stored in a NumPy `.npy` file (format version 1.0).
///
/// Values are kept as `Float` or `Double`-convertible storage; use ``floats`` for float32 data.
/// The header written is what `numpy.save` writes, so `numpy.load` reads these files directly.
public struct NumpyArray: Sendable {
    /// Dimensions, outermost first (C order).
    public var shape: [Int]
    /// Element type as stored on disk.
    public var dtype: NumpyDType
    /// Raw little-endian element bytes, `shape.product * dtype.size` long.
    public var bytes: [UInt8]

    /// Number of elements (product of `shape`; 1 for a scalar).
    public var count: Int { shape.reduce(1, *) }

    /// Creates a float32 array from values in C order. Precondition: `values.count == shape.product`.
    public init(float32 values: [Float], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "value count \(values.count) does not match shape \(shape)")
        self.shape = shape
        self.dtype = .float32
        self.bytes = values.withUnsafeBytes { Array($0) }
    }

    /// Creates an int64 array from values in C order.
    public init(int64 values: [Int], shape: [Int]) {
        precondition(values.count == shape.reduce(1, *), "value count \(values.count) does not match shape \(shape)")
        self.shape = shape
        self.dtype = .int64
        self.bytes = values.map { Int64($0) }.withUnsafeBytes { Array($0) }
    }

    /// Creates an array from raw bytes.
    public init(shape: [Int], dtype: NumpyDType, bytes: [UInt8]) {
        precondition(bytes.count == shape.reduce(1, *) * dtype.size)
        self.shape = shape
        self.dtype = dtype
        self.bytes = bytes
    }

    /// The elements converted to `Float` (exact for float32; rounded for float64 and large ints).
    public var floats: [Float] {
        let n = count
        return bytes.withUnsafeBytes { raw -> [Float] in
            switch dtype {
            case .float32: return Array(raw.bindMemory(to: Float.self).prefix(n))
            case .float64: return raw.bindMemory(to: Double.self).prefix(n).map { Float($0) }
            case .int64: return raw.bindMemory(to: Int64.self).prefix(n).map { Float($0) }
            case .int32: return raw.bindMemory(to: Int32.self).prefix(n).map { Float($0) }
            case .uint8: return raw.map { Float($0) }
            }
        }
    }

    /// The elements converted to `Double`.
    public var doubles: [Double] {
        let n = count
        return bytes.withUnsafeBytes { raw -> [Double] in
            switch dtype {
            case .float32: return raw.bindMemory(to: Float.self).prefix(n).map { Double($0) }
            case .float64: return Array(raw.bindMemory(to: Double.self).prefix(n))
            case .int64: return raw.bindMemory(to: Int64.self).prefix(n).map { Double($0) }
            case .int32: return raw.bindMemory(to: Int32.self).prefix(n).map { Double($0) }
            case .uint8: return raw.map { Double($0) }
            }
        }
    }

    /// The elements converted to `Int`: exact for integer dtypes; floats are truncated towards zero,
    /// with NaN read as 0 and values beyond `Int`'s range clamped (never a trap). Callers that need
    /// true integers (labels) check ``dtype`` first.
    public var ints: [Int] {
        switch dtype {
        case .int64: return bytes.withUnsafeBytes { $0.bindMemory(to: Int64.self).prefix(count).map { Int($0) } }
        case .int32: return bytes.withUnsafeBytes { $0.bindMemory(to: Int32.self).prefix(count).map { Int($0) } }
        case .uint8: return bytes.map { Int($0) }
        default:
            return doubles.map { d in
                if d.isNaN { return 0 }
                if d >= 0x1p63 { return Int.max }
                if d < -0x1p63 { return Int.min }
                return Int(d.rounded(.towardZero))
            }
        }
    }

    /// The `.npy` header (magic, version 1.0, padded dict) for `shape` and `dtype`.
    /// The total header length is a multiple of 64 bytes, as NumPy writes it.
    public static func header(shape: [Int], dtype: NumpyDType) -> [UInt8] {
        let shapeText: String
        switch shape.count {
        case 0: shapeText = "()"
        case 1: shapeText = "(\(shape[0]),)"
        default: shapeText = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        }
        var dict = "{'descr': '\(dtype.rawValue)', 'fortran_order': False, 'shape': \(shapeText), }"
        let unpadded = 10 + dict.utf8.count + 1
        let padding = (64 - unpadded % 64) % 64
        dict += String(repeating: " ", count: padding) + "\n"
        var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0]
        let len = UInt16(dict.utf8.count)
        out.append(UInt8(len & 0xFF)); out.append(UInt8(len >> 8))
        out.append(contentsOf: Array(dict.utf8))
        return out
    }

    /// The complete `.npy` file bytes.
    public func encoded() -> Data {
        var data = Data(NumpyArray.header(shape: shape, dtype: dtype))
        data.append(contentsOf: bytes)
        return data
    }

    /// Writes the array to `url` atomically.
    public func write(to url: URL) throws {
        try AtomicFile.write(encoded(), to: url)
    }

    /// Parses a `.npy` file (versions 1.0-3.0, little-endian, C order).
    ///
    /// Reads the header with a bounded read, checks that the file holds the whole data section the
    /// header declares (overflow-checked shape product times element size), then reads exactly that
    /// many bytes: memory is at most the data the file really holds. Bytes after the data are
    /// ignored, as `numpy.load` does.
    /// - Throws: ``CoreIOError/io(path:reason:)`` when the file cannot be read; ``MalformedBytes``
    ///   (file, byte offset, reason) when it is not a supported `.npy`.
    public init(contentsOf url: URL) throws {
        let file = try ReadOnlyFile(url)
        let head = try file.read(at: 0, count: min(file.size, NumpyHeader.maximumPrefix))
        let header = try NumpyHeader(head, path: url.path, fileSize: file.size)
        self.shape = header.shape
        self.dtype = header.dtype
        self.bytes = try file.read(at: header.dataOffset, count: header.dataLength)
    }

    /// Parses `.npy` bytes; `name` is used in error messages.
    /// - Throws: ``MalformedBytes`` naming `name`, the byte offset and the reason.
    public init(npyData data: Data, name: String = "<memory>") throws {
        let b = [UInt8](data)
        let header = try NumpyHeader(b, path: name, fileSize: b.count)
        self.shape = header.shape
        self.dtype = header.dtype
        self.bytes = Array(b[header.dataOffset..<(header.dataOffset + header.dataLength)])
    }
}

/// The header of a `.npy` file: element type, shape and where the data lies, validated against the
/// file's size. Shared by every reader of `.npy` files (whole arrays, and streaming readers that only
/// need the data offset).
public struct NumpyHeader: Sendable, Equatable {
    /// Dimensions, outermost first (C order).
    public var shape: [Int]
    /// Element type.
    public var dtype: NumpyDType
    /// File offset of the first element.
    public var dataOffset: Int
    /// Bytes of element data: shape product times element size (checked for overflow, and present in the file).
    public var dataLength: Int

    /// Largest header dictionary accepted. NumPy's own loader refuses headers over 10 000 bytes
    /// (`max_header_size`); 64 KiB leaves room and bounds the header read.
    public static let maximumHeaderLength = 1 << 16
    /// Bytes to read from the start of a file to be sure to hold the whole header.
    public static let maximumPrefix = 12 + maximumHeaderLength
    /// Most dimensions accepted (NumPy's `NPY_MAXDIMS` is 64).
    public static let maximumDimensions = 64

    /// Parses the header at the start of `prefix` (the file's first bytes) of a file of `fileSize` bytes.
    /// - Throws: ``MalformedBytes`` naming `path` and the byte offset of the problem.
    public init(_ prefix: [UInt8], path: String, fileSize: Int) throws {
        var r = ByteReader(prefix, path: path)
        let magic = try r.take(6, "magic")
        guard magic.elementsEqual([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) else {
            throw r.error("not a .npy file (bad magic; expected \\x93NUMPY)", at: 0)
        }
        let major = try r.u8("format version")
        _ = try r.u8("format minor version")
        guard (1...3).contains(major) else { throw r.error("unsupported .npy format version \(major)", at: 6) }
        let lengthAt = r.position
        let headerLength = major == 1 ? Int(try r.le(UInt16.self, "header length")) : Int(try r.le(UInt32.self, "header length"))
        guard headerLength <= NumpyHeader.maximumHeaderLength else {
            throw r.error("header declares \(headerLength) bytes (limit \(NumpyHeader.maximumHeaderLength))", at: lengthAt)
        }
        let dictStart = r.position
        let dict = try r.take(headerLength, "header dictionary")
        var fields = try NumpyHeader.parseDictionary(Array(dict), path: path, baseOffset: dictStart)
        func required(_ key: String) throws -> (Literal, Int) {
            guard let v = fields.removeValue(forKey: key) else { throw MalformedBytes(.invalid, path: path, offset: dictStart, reason: "header has no '\(key)'") }
            return v
        }
        let (descr, descrAt) = try required("descr")
        let (fortran, fortranAt) = try required("fortran_order")
        let (shapeValue, shapeAt) = try required("shape")
        if let extra = fields.keys.sorted().first {
            throw MalformedBytes(.invalid, path: path, offset: fields[extra]!.1, reason: "unexpected header key '\(extra)'")
        }
        guard case .string(var d) = descr else { throw MalformedBytes(.invalid, path: path, offset: descrAt, reason: "'descr' is not a simple type string (structured arrays are not supported)") }
        if d == "<u1" || d == "u1" || d == "|u1" { d = "|u1" }
        guard let dtype = NumpyDType(rawValue: d) else {
            throw MalformedBytes(.invalid, path: path, offset: descrAt, reason: "unsupported dtype '\(d)' (supported: <f4, <f8, <i8, <i4, |u1)")
        }
        guard case .bool(let isFortran) = fortran else { throw MalformedBytes(.invalid, path: path, offset: fortranAt, reason: "'fortran_order' is not True or False") }
        guard !isFortran else { throw MalformedBytes(.invalid, path: path, offset: fortranAt, reason: "Fortran order is not supported") }
        guard case .tuple(let dims) = shapeValue else { throw MalformedBytes(.invalid, path: path, offset: shapeAt, reason: "'shape' is not a tuple of integers") }
        guard dims.count <= NumpyHeader.maximumDimensions else {
            throw MalformedBytes(.invalid, path: path, offset: shapeAt, reason: "shape has \(dims.count) dimensions (limit \(NumpyHeader.maximumDimensions))")
        }
        guard let elements = CheckedSize.product(dims), let length = CheckedSize.multiply(elements, dtype.size) else {
            throw MalformedBytes(.invalid, path: path, offset: shapeAt, reason: "shape \(dims) holds more elements than can be addressed")
        }
        let dataOffset = dictStart + headerLength
        guard CheckedSize.fits(offset: dataOffset, count: length, in: fileSize) else {
            throw MalformedBytes(.truncated, path: path, offset: min(fileSize, dataOffset),
                                 reason: "shape \(dims) of \(dtype.rawValue) needs \(length) data bytes, the file holds \(max(0, fileSize - dataOffset))")
        }
        self.shape = dims
        self.dtype = dtype
        self.dataOffset = dataOffset
        self.dataLength = length
    }

    /// Reads and validates the header of the `.npy` file at `url` (one bounded read).
    public init(contentsOf url: URL) throws {
        let file = try ReadOnlyFile(url)
        try self.init(try file.read(at: 0, count: min(file.size, NumpyHeader.maximumPrefix)), path: url.path, fileSize: file.size)
    }

    /// A value in the header dictionary (the subset of Python literals `numpy.save` writes).
    enum Literal: Equatable { case string(String), bool(Bool), tuple([Int]) }

    /// Parses `{'key': value, ...}` where values are quoted strings, True/False or tuples of
    /// non-negative integers; returns each value with the file offset where it starts.
    static func parseDictionary(_ bytes: [UInt8], path: String, baseOffset: Int) throws -> [String: (Literal, Int)] {
        var r = ByteReader(bytes, path: path, baseOffset: baseOffset)
        func skipSpace() { while let c = r.peek(), c == 0x20 || c == 0x0A || c == 0x09 || c == 0x0D { _ = try? r.u8() } }
        func expect(_ c: UInt8, _ what: String) throws {
            skipSpace()
            guard try r.u8(what) == c else { throw r.error("expected \(what)", at: r.position - 1) }
        }
        func quoted() throws -> String {
            let q = try r.u8("quote")
            guard q == 0x27 || q == 0x22 else { throw r.error("expected a quoted string", at: r.position - 1) }
            let start = r.position
            while true {
                let c = try r.u8("closing quote")
                if c == q { break }
                guard c >= 0x20, c < 0x7F, c != 0x5C else { throw r.error("unexpected byte 0x\(String(c, radix: 16)) in a string", at: r.position - 1) }
            }
            return String(decoding: bytes[start..<(r.position - 1)], as: UTF8.self)
        }
        func integer() throws -> Int {
            let at = r.position
            var v = 0, digits = 0
            while let c = r.peek(), c >= 0x30, c <= 0x39 {
                _ = try r.u8()
                guard let next = CheckedSize.multiply(v, 10).flatMap({ CheckedSize.add($0, Int(c - 0x30)) }) else {
                    throw r.error("dimension too large", at: at)
                }
                v = next; digits += 1
            }
            guard digits > 0 else { throw r.error("expected a non-negative integer", at: at) }
            if r.peek() == UInt8(ascii: "L") { _ = try r.u8() }  // Python 2 long literal
            return v
        }
        try expect(UInt8(ascii: "{"), "'{'")
        var out: [String: (Literal, Int)] = [:]
        while true {
            skipSpace()
            if r.peek() == UInt8(ascii: "}") { _ = try r.u8(); break }
            let keyAt = r.position
            let key = try quoted()
            guard out[key] == nil else { throw r.error("duplicate key '\(key)'", at: keyAt) }
            try expect(UInt8(ascii: ":"), "':'")
            skipSpace()
            let at = r.fileOffset
            let value: Literal
            switch r.peek() {
            case UInt8(ascii: "'"), UInt8(ascii: "\""): value = .string(try quoted())
            case UInt8(ascii: "T"), UInt8(ascii: "F"):
                let word = r.peek() == UInt8(ascii: "T") ? "True" : "False"
                guard try r.take(word.utf8.count, "literal").elementsEqual(word.utf8) else { throw r.error("expected True or False", at: at - baseOffset) }
                value = .bool(word == "True")
            case UInt8(ascii: "("):
                _ = try r.u8()
                var dims: [Int] = []
                while true {
                    skipSpace()
                    if r.peek() == UInt8(ascii: ")") { _ = try r.u8(); break }
                    guard dims.count < NumpyHeader.maximumDimensions else { throw r.error("too many dimensions") }
                    dims.append(try integer())
                    skipSpace()
                    if r.peek() == UInt8(ascii: ",") { _ = try r.u8() } else { try expect(UInt8(ascii: ")"), "',' or ')'"); break }
                }
                value = .tuple(dims)
            default: throw r.error("unsupported value (expected a string, True/False or a tuple)")
            }
            out[key] = (value, at)
            skipSpace()
            if r.peek() == UInt8(ascii: ",") { _ = try r.u8(); continue }
            try expect(UInt8(ascii: "}"), "',' or '}'")
            break
        }
        skipSpace()
        guard r.isAtEnd else { throw r.error("unexpected bytes after the header dictionary") }
        return out
    }
}

/// A file opened for reading with `pread`: bounded reads at offsets, errors naming the file.
struct ReadOnlyFile: ~Copyable {
    let path: String
    let fd: Int32
    /// Size in bytes when opened.
    let size: Int

    init(_ url: URL) throws {
        path = url.path
        fd = open(url.path, O_RDONLY)
        guard fd >= 0 else { throw CoreIOError.io(path: url.path, reason: "cannot read: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let reason = String(cString: strerror(errno)); close(fd)
            throw CoreIOError.io(path: url.path, reason: "cannot stat: \(reason)")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw CoreIOError.io(path: url.path, reason: "not a regular file")
        }
        size = Int(st.st_size)
    }

    deinit { close(fd) }

    /// Exactly `count` bytes at `offset`. Precondition: the range lies within ``size`` (callers check first).
    func read(at offset: Int, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, count - got, off_t(offset + got)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let reason = n == 0 ? "file shrank while being read" : String(cString: strerror(errno))
                throw CoreIOError.io(path: path, reason: "read failed at byte \(offset + got): \(reason)")
            }
            got += n
        }
        return out
    }
}
