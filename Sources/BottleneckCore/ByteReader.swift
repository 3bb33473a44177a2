import Foundation

/// Why a parser refused untrusted bytes: the file, the byte offset in that file, and the reason.
///
/// Every parser of user-supplied files (pickle, zip, safetensors, TorchScript, `.npy`, CSV stores,
/// PNG/JPEG headers, EXIF) reads through ``ByteReader`` and reports this error, or maps it into
/// its module's own error type keeping the path and offset.
public struct MalformedBytes: Error, CustomStringConvertible, Equatable, Sendable {
    /// What went wrong.
    public enum Kind: String, Sendable {
        /// A length or offset reaches past the bytes that exist.
        case truncated
        /// A value is impossible for the format (bad magic, overflow, negative size, too deep).
        case invalid
    }
    public let kind: Kind
    /// The file (or other source) the bytes came from.
    public let path: String
    /// Offset in the file of the byte where the problem was found.
    public let offset: Int
    public let reason: String

    public init(_ kind: Kind, path: String, offset: Int, reason: String) {
        self.kind = kind
        self.path = path
        self.offset = offset
        self.reason = reason
    }

    public var description: String {
        "\(path): \(kind == .truncated ? "truncated" : "malformed") at byte \(offset): \(reason)"
    }
}

/// A bounds-checked cursor over untrusted bytes.
///
/// Every read validates its length against what remains before touching memory and throws
/// ``MalformedBytes`` instead; lengths read from the input are checked for overflow and sign.
/// Correctness therefore never depends on the compiler's bounds checks (parsers of untrusted
/// input must stay safe under `-Ounchecked` too). Reads are O(n) in the bytes they return.
public struct ByteReader: Sendable {
    /// The bytes being parsed.
    public let bytes: [UInt8]
    /// The file the bytes came from, for errors.
    public let path: String
    /// File offset of `bytes[0]` (non-zero when a parser reads a window of a larger file).
    public let baseOffset: Int
    /// Index of the next unread byte in `bytes`.
    public private(set) var position: Int

    /// Creates a reader at `start` (an index into `bytes`; clamped to `0...bytes.count`).
    public init(_ bytes: [UInt8], path: String, baseOffset: Int = 0, start: Int = 0) {
        self.bytes = bytes
        self.path = path
        self.baseOffset = baseOffset
        self.position = min(max(start, 0), bytes.count)
    }

    /// Bytes left after `position`.
    public var remaining: Int { bytes.count - position }
    /// Whether every byte has been read.
    public var isAtEnd: Bool { position >= bytes.count }
    /// File offset of the next unread byte.
    public var fileOffset: Int { baseOffset + position }

    /// An error at the current position (or at `index` into `bytes`).
    public func error(_ reason: String, at index: Int? = nil, kind: MalformedBytes.Kind = .invalid) -> MalformedBytes {
        MalformedBytes(kind, path: path, offset: baseOffset + (index ?? position), reason: reason)
    }

    /// Throws unless `count` bytes remain; `what` names the structure in the error.
    public func require(_ count: Int, for what: String) throws {
        guard count >= 0 else { throw error("\(what): negative length \(count)") }
        guard count <= remaining else {
            throw error("\(what) needs \(count) bytes, \(remaining) remain", kind: .truncated)
        }
    }

    /// Moves to `index` (0...bytes.count).
    public mutating func seek(to index: Int) throws {
        guard index >= 0, index <= bytes.count else {
            throw error("offset \(baseOffset &+ index) lies outside the \(bytes.count) bytes read", kind: .truncated)
        }
        position = index
    }

    /// Skips `count` bytes.
    public mutating func skip(_ count: Int, _ what: String = "field") throws {
        try require(count, for: what)
        position += count
    }

    /// The next `count` bytes.
    public mutating func take(_ count: Int, _ what: String = "field") throws -> ArraySlice<UInt8> {
        try require(count, for: what)
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    /// The next byte.
    public mutating func u8(_ what: String = "byte") throws -> UInt8 {
        try require(1, for: what)
        defer { position += 1 }
        return bytes[position]
    }

    /// The byte `ahead` positions on, without moving; nil past the end.
    public func peek(_ ahead: Int = 0) -> UInt8? {
        let i = position + ahead
        return ahead >= 0 && i < bytes.count ? bytes[i] : nil
    }

    /// A little-endian unsigned integer of `T`'s width.
    public mutating func le<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, _ what: String = "integer") throws -> T {
        let size = MemoryLayout<T>.size
        try require(size, for: what)
        var v: T = 0
        for i in 0..<size { v |= T(bytes[position + i]) << (8 * i) }
        position += size
        return v
    }

    /// A big-endian unsigned integer of `T`'s width.
    public mutating func be<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, _ what: String = "integer") throws -> T {
        let size = MemoryLayout<T>.size
        try require(size, for: what)
        var v: T = 0
        for i in 0..<size { v = (v << 8) | T(bytes[position + i]) }
        position += size
        return v
    }

    /// A little-endian length of `T`'s width as an `Int`, refused when it exceeds `limit` or the
    /// bytes that remain (when `inline` is true, i.e. the length counts bytes that follow here).
    public mutating func length<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, _ what: String,
                                                                       limit: Int = Int.max, inline: Bool = true) throws -> Int {
        let at = position
        let raw = try le(type, what)
        guard let n = Int(exactly: raw), n <= limit else {
            throw error("\(what) declares \(raw) bytes (limit \(limit))", at: at)
        }
        if inline, n > remaining {
            throw error("\(what) declares \(n) bytes, \(remaining) remain", at: at, kind: .truncated)
        }
        return n
    }

    /// Bytes up to (not including) the next `terminator`, which is consumed; at most `maxLength` bytes.
    public mutating func line(terminator: UInt8 = 0x0A, maxLength: Int = 1 << 16, _ what: String = "line") throws -> ArraySlice<UInt8> {
        let end = min(bytes.count, position &+ maxLength &+ 1)
        var i = position
        while i < end, bytes[i] != terminator { i += 1 }
        guard i < end else {
            if end == bytes.count { throw error("\(what) has no terminator before the end", kind: .truncated) }
            throw error("\(what) longer than \(maxLength) bytes")
        }
        defer { position = i + 1 }
        return bytes[position..<i]
    }
}

/// Overflow-checked size arithmetic for lengths and shapes read from untrusted input.
public enum CheckedSize {
    /// The product of `dims`, or nil when a dimension is negative or the product overflows `Int`.
    public static func product<S: Sequence>(_ dims: S) -> Int? where S.Element == Int {
        var p = 1
        for d in dims {
            guard d >= 0 else { return nil }
            let (r, o) = p.multipliedReportingOverflow(by: d)
            if o { return nil }
            p = r
        }
        return p
    }

    /// `a * b`, or nil on overflow or a negative operand.
    public static func multiply(_ a: Int, _ b: Int) -> Int? {
        guard a >= 0, b >= 0 else { return nil }
        let (r, o) = a.multipliedReportingOverflow(by: b)
        return o ? nil : r
    }

    /// `a + b`, or nil on overflow or a negative operand.
    public static func add(_ a: Int, _ b: Int) -> Int? {
        guard a >= 0, b >= 0 else { return nil }
        let (r, o) = a.addingReportingOverflow(b)
        return o ? nil : r
    }

    /// Whether `offset..<offset+count` lies inside `0..<size` (no overflow, no negatives).
    public static func fits(offset: Int, count: Int, in size: Int) -> Bool {
        guard let end = add(offset, count) else { return false }
        return end <= size
    }
}
