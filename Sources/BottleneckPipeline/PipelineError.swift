import Foundation
import BottleneckCore

/// Errors raised by dataset scanning, feature extraction, the feature store and shard merging.
/// Each case names the file or directory involved and says what to do where that is not obvious.
public enum PipelineError: Error, CustomStringConvertible, Equatable {
    /// A file or directory could not be read or written; `reason` is the system's message.
    case io(path: String, reason: String)
    /// The dataset directory is missing, empty or unusable.
    case invalidDataset(path: String, reason: String)
    /// The requested output location is not acceptable (for example inside the dataset).
    case invalidOutput(path: String, reason: String)
    /// A feature store on disk is incomplete or not in the expected format.
    case malformedStore(path: String, reason: String)
    /// A partial run cannot be resumed with the current inputs or options.
    case cannotResume(path: String, reason: String)
    /// Shard stores given to merge do not belong together.
    case incompatibleShards(path: String, reason: String)
    /// The feature backbone failed on a batch.
    case backbone(reason: String)
    /// An argument is out of range or malformed.
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .io(let p, let r), .invalidDataset(let p, let r), .invalidOutput(let p, let r),
             .malformedStore(let p, let r), .cannotResume(let p, let r), .incompatibleShards(let p, let r):
            return "\(p): \(r)"
        case .backbone(let r): return "feature backbone failed: \(r)"
        case .invalidArgument(let r): return r
        }
    }
}

/// Small text encoders shared by the store writer and the journal. Hand-written rather than
/// JSONSerialization so the bytes are identical across runs and platforms (key order, escaping).
enum TextFormat {
    /// A JSON string literal with RFC 8259 escaping.
    static func jsonString(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }

    /// A JSON array of strings on one line.
    static func jsonStringArray(_ a: [String]) -> String { "[" + a.map(jsonString).joined(separator: ", ") + "]" }

    /// One CSV field, quoted only when it contains a comma, quote or line break (RFC 4180).
    static func csvField(_ s: String) -> String {
        guard s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return s }
        return "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// One record of a CSV file: its fields, the 1-based line it starts on and its file offset.
    struct CSVRecord: Equatable {
        var fields: [String]
        var line: Int
        var offset: Int
    }

    /// Parses RFC 4180 CSV bytes (quoted fields may hold commas, quotes and line breaks; `\r` outside
    /// quotes is ignored). A final line without a line break still counts.
    /// - Throws: ``MalformedBytes`` naming `path` and the byte offset of an unterminated quote, a
    ///   stray byte after a closing quote, or a field that is not valid UTF-8.
    static func parseCSV(bytes: [UInt8], path: String) throws -> [CSVRecord] {
        var reader = ByteReader(bytes, path: path)
        var records: [CSVRecord] = []
        var fields: [String] = []
        var field: [UInt8] = []
        var fieldStart = 0, recordStart = 0, recordLine = 1, line = 1
        var inQuotes = false, afterQuote = false, started = false
        func finishField() throws {
            guard let text = String(validating: field, as: UTF8.self) else {
                throw reader.error("line \(recordLine): field is not valid UTF-8", at: fieldStart)
            }
            fields.append(text)
            field.removeAll(keepingCapacity: true)
            afterQuote = false
        }
        func finishRecord() {
            records.append(CSVRecord(fields: fields, line: recordLine, offset: recordStart))
            fields.removeAll(keepingCapacity: true)
            started = false
        }
        var quoteAt = 0
        while !reader.isAtEnd {
            let at = reader.position
            let c = try reader.u8()
            if !started { started = true; recordStart = at; recordLine = line; fieldStart = at }
            if inQuotes {
                if c == 0x22 {
                    if reader.peek() == 0x22 { field.append(0x22); _ = try reader.u8() } else { inQuotes = false; afterQuote = true }
                } else {
                    if c == 0x0A { line += 1 }
                    field.append(c)
                }
                continue
            }
            switch c {
            case 0x2C:
                try finishField(); fieldStart = reader.position
            case 0x0D:
                continue
            case 0x0A:
                try finishField(); finishRecord(); line += 1
            case 0x22 where field.isEmpty && !afterQuote:
                inQuotes = true; quoteAt = at
            default:
                guard !afterQuote else { throw reader.error("line \(line): unexpected byte after a closing quote", at: at) }
                if c == 0x22 { throw reader.error("line \(line): quote inside an unquoted field", at: at) }
                field.append(c)
            }
        }
        if inQuotes { throw reader.error("line \(recordLine): quoted field is never closed", at: quoteAt, kind: .truncated) }
        if started { try finishField(); finishRecord() }
        return records
    }

    /// Parses RFC 4180 CSV text into rows of fields (see ``parseCSV(bytes:path:)``).
    static func parseCSV(_ text: String) throws -> [[String]] {
        try parseCSV(bytes: Array(text.utf8), path: "<text>").map(\.fields)
    }

    /// Byte-wise (UTF-8) ordering, independent of locale and Unicode normalisation.
    static func byteLess(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
}
