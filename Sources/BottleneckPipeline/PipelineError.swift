import Foundation

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

    /// Parses RFC 4180 CSV text into rows of fields.
    static func parseCSV(_ text: String) -> [[String]] {
        var rows: [[String]] = []
        var row: [String] = []
        var field = ""
        var inQuotes = false
        var it = Array(text.unicodeScalars)[...]
        var fieldStarted = false
        while let c = it.popFirst() {
            if inQuotes {
                if c == "\"" {
                    if it.first == "\"" { field.unicodeScalars.append("\""); it.removeFirst() } else { inQuotes = false }
                } else { field.unicodeScalars.append(c) }
                continue
            }
            switch c {
            case "\"": inQuotes = true; fieldStarted = true
            case ",": row.append(field); field = ""; fieldStarted = false
            case "\r": continue
            case "\n": row.append(field); rows.append(row); row = []; field = ""; fieldStarted = false
            default: field.unicodeScalars.append(c); fieldStarted = true
            }
        }
        if fieldStarted || !row.isEmpty { row.append(field); rows.append(row) }
        return rows
    }

    /// Byte-wise (UTF-8) ordering, independent of locale and Unicode normalisation.
    static func byteLess(_ a: String, _ b: String) -> Bool { a.utf8.lexicographicallyPrecedes(b.utf8) }
}
