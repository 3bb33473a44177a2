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

    /// The elements converted to `Int` (truncating floats).
    public var ints: [Int] {
        switch dtype {
        case .int64: return bytes.withUnsafeBytes { $0.bindMemory(to: Int64.self).prefix(count).map { Int($0) } }
        case .int32: return bytes.withUnsafeBytes { $0.bindMemory(to: Int32.self).prefix(count).map { Int($0) } }
        default: return doubles.map { Int($0) }
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
    /// - Throws: ``CoreIOError`` naming the file when it is unreadable or not a supported `.npy`.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw CoreIOError.io(path: url.path, reason: "cannot read: \(error.localizedDescription)")
        }
        try self.init(npyData: data, name: url.path)
    }

    /// Parses `.npy` bytes; `name` is used in error messages.
    public init(npyData data: Data, name: String = "<memory>") throws {
        let b = [UInt8](data)
        func fail(_ r: String) -> CoreIOError { .malformed(path: name, reason: "not a valid .npy file: \(r)") }
        guard b.count >= 10, b[0] == 0x93, b[1] == 0x4E, b[2] == 0x55, b[3] == 0x4D, b[4] == 0x50, b[5] == 0x59 else {
            throw fail("bad magic")
        }
        let major = b[6]
        let headerLen: Int
        let start: Int
        if major == 1 {
            headerLen = Int(b[8]) | Int(b[9]) << 8; start = 10
        } else {
            guard b.count >= 12 else { throw fail("truncated header") }
            headerLen = Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24; start = 12
        }
        guard b.count >= start + headerLen else { throw fail("truncated header") }
        guard let header = String(bytes: b[start..<start + headerLen], encoding: .utf8) else { throw fail("header is not text") }
        func value(after key: String) -> Substring? {
            guard let r = header.range(of: "'\(key)':") else { return nil }
            return header[r.upperBound...].drop(while: { $0 == " " })
        }
        guard let descrPart = value(after: "descr"), let q1 = descrPart.firstIndex(of: "'"),
              let q2 = descrPart[descrPart.index(after: q1)...].firstIndex(of: "'") else { throw fail("no descr") }
        var descr = String(descrPart[descrPart.index(after: q1)..<q2])
        if descr == "<u1" || descr == "u1" { descr = "|u1" }
        guard let dtype = NumpyDType(rawValue: descr) else { throw fail("unsupported dtype \(descr)") }
        if let fo = value(after: "fortran_order"), fo.hasPrefix("True") { throw fail("Fortran order is not supported") }
        guard let shapePart = value(after: "shape"), let open = shapePart.firstIndex(of: "("),
              let close = shapePart.firstIndex(of: ")") else { throw fail("no shape") }
        let dims = shapePart[shapePart.index(after: open)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var shape: [Int] = []
        for d in dims { guard let v = Int(d), v >= 0 else { throw fail("bad shape") }; shape.append(v) }
        let n = shape.reduce(1, *) * dtype.size
        let dataStart = start + headerLen
        guard b.count - dataStart >= n else { throw fail("truncated data: expected \(n) bytes, found \(b.count - dataStart)") }
        self.shape = shape
        self.dtype = dtype
        self.bytes = Array(b[dataStart..<dataStart + n])
    }
}
