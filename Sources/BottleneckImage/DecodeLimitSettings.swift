import Foundation

/// The decode limits a user can set: names of the environment variables, parsing of their
/// values, and applying them to the process-wide defaults (``DecodeOptions/defaultMaxFileBytes``,
/// ``DecodeOptions/defaultMaxJPEGScans``, the capacity of ``DecodeMemoryBudget/shared``).
/// The command line calls ``apply(environment:)`` once at startup.
public enum DecodeLimitSettings {
    /// Largest image file decoded, as a size (default 256M).
    public static let maxImageBytesVariable = "BOTTLENECK_MAX_IMAGE_BYTES"
    /// Memory all decoder threads together may use, as a size (default 2G).
    public static let decodeMemoryVariable = "BOTTLENECK_DECODE_MEMORY"
    /// Most scans a JPEG may have (default 100).
    public static let maxJPEGScansVariable = "BOTTLENECK_MAX_JPEG_SCANS"

    /// A setting with an unusable value; `description` names the setting and says what is expected.
    public struct InvalidSetting: Error, CustomStringConvertible, Equatable {
        public let name: String
        public let value: String
        public let expected: String
        public var description: String { "\(name)=\(value): expected \(expected)" }
    }

    static let sizeExpectation = "a positive size in bytes, optionally with a K, M or G suffix (powers of 1024), e.g. 512M or 2G"

    /// Bytes in `text`: digits with an optional binary suffix K/M/G/T (also KB/KiB..., any case).
    /// Nil when malformed, zero or above `Int.max`.
    public static func parseByteSize(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).uppercased()
        let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
        var unit = String(trimmed.dropFirst(digits.count)).trimmingCharacters(in: .whitespaces)
        if unit.hasSuffix("IB") { unit.removeLast(2) } else if unit.hasSuffix("B") { unit.removeLast() }
        let shifts: [String: Int] = ["": 0, "K": 10, "M": 20, "G": 30, "T": 40]
        guard !digits.isEmpty, let shift = shifts[unit], let n = Int(digits), n > 0 else { return nil }
        guard n <= Int.max >> shift else { return nil }
        return n << shift
    }

    /// Applies every variable of this enum found in `environment`; absent ones leave the defaults.
    /// - Throws: ``InvalidSetting`` for a malformed value (nothing is changed then).
    public static func apply(environment: [String: String]) throws {
        var maxBytes: Int? = nil, memory: Int? = nil, scans: Int? = nil
        if let v = environment[maxImageBytesVariable] {
            guard let n = parseByteSize(v) else { throw InvalidSetting(name: maxImageBytesVariable, value: v, expected: sizeExpectation) }
            maxBytes = n
        }
        if let v = environment[decodeMemoryVariable] {
            guard let n = parseByteSize(v) else { throw InvalidSetting(name: decodeMemoryVariable, value: v, expected: sizeExpectation) }
            memory = n
        }
        if let v = environment[maxJPEGScansVariable] {
            guard let n = Int(v.trimmingCharacters(in: .whitespaces)), n >= 1 else {
                throw InvalidSetting(name: maxJPEGScansVariable, value: v, expected: "a whole number of scans, at least 1")
            }
            scans = n
        }
        if let n = maxBytes { DecodeOptions.defaultMaxFileBytes = n }
        if let n = memory { DecodeMemoryBudget.shared.capacity = n }
        if let n = scans { DecodeOptions.defaultMaxJPEGScans = n }
    }
}
