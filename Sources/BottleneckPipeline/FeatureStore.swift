import Foundation
import BottleneckCore

/// One line of `index.csv`: an image and what happened to it.
public struct IndexRecord: Sendable, Equatable {
    /// Row in `features.npy`, or nil when the image failed.
    public var row: Int?
    /// Path relative to the dataset root.
    public var path: String
    /// Split name or empty.
    public var split: String
    /// Class name or empty.
    public var label: String
    /// nil when extracted; otherwise the failure reason (written as `error: <reason>`).
    public var failure: String?

    /// Creates a record.
    public init(row: Int?, path: String, split: String, label: String, failure: String?) {
        self.row = row; self.path = path; self.split = split; self.label = label; self.failure = failure
    }
}

/// The rows of one split (or of the whole store) as dense matrices.
public struct FeatureSplit: Sendable {
    /// Split name; empty for "all rows".
    public var name: String
    /// Row-major `count x dimension` float32 features.
    public var features: [Float]
    /// Feature length D.
    public var dimension: Int
    /// Class index per row into the store's `classes`, -1 when unlabeled.
    public var labels: [Int]
    /// Relative image path per row.
    public var paths: [String]
    /// Number of rows.
    public var count: Int { labels.count }
}

/// A feature store directory as written by ``FeatureExtractor`` or ``ShardMerger``.
///
/// Layout (stable; other tools read it):
/// - `features.npy`: float32 `N_ok x D`, NumPy format 1.0.
/// - `index.csv`: header `row,path,split,label,status`; one line per image in byte-wise path
///   order; `row` empty for failures; status `ok` or `error: <reason>`.
/// - `classes.json`: sorted class names; `labels.npy`: int64 per features row (-1 unlabeled).
/// - `features_<split>.npy`, `labels_<split>.npy` per split when the dataset has splits.
/// - `meta.json`: model identity, preset, counts, fingerprints and `wall_seconds` (the only
///   field that differs between otherwise identical runs). Written last: its presence with a
///   matching fingerprint means the store is complete.
public struct FeatureStore: Sendable {
    /// Store directory.
    public var url: URL
    /// Feature length D.
    public var dimension: Int
    /// All extracted rows (`features.npy`), row-major N x D.
    public var features: [Float]
    /// `labels.npy`.
    public var labels: [Int]
    /// `classes.json`.
    public var classes: [String]
    /// Every line of `index.csv`, failures included.
    public var records: [IndexRecord]
    /// Scalar `meta.json` fields as strings (numbers in their JSON spelling, null as empty).
    public var meta: [String: String]

    /// Splits present among extracted rows, sorted; empty for unsplit datasets.
    public var splitNames: [String] {
        Set(records.filter { $0.row != nil }.map(\.split)).subtracting([""]).sorted(by: TextFormat.byteLess)
    }

    /// All rows as one split named "".
    public var all: FeatureSplit {
        FeatureSplit(name: "", features: features, dimension: dimension, labels: labels,
                     paths: records.filter { $0.row != nil }.map(\.path))
    }

    /// The rows of split `name`, in store order; nil when the split has no rows.
    public func split(_ name: String) -> FeatureSplit? {
        var f: [Float] = [], l: [Int] = [], p: [String] = []
        for r in records where r.split == name {
            guard let row = r.row else { continue }
            f.append(contentsOf: features[row * dimension..<(row + 1) * dimension])
            l.append(labels[row]); p.append(r.path)
        }
        return l.isEmpty ? nil : FeatureSplit(name: name, features: f, dimension: dimension, labels: l, paths: p)
    }

    /// Reads a complete store and checks that its files agree with each other.
    ///
    /// Checked, with errors naming the file, the `index.csv` line or `labels.npy` row, and the
    /// problem: `features.npy` is a 2-D float32 array with at least one column; `labels.npy` is a
    /// 1-D integer array with one label per feature row, each -1 (unlabeled) or a class index;
    /// `classes.json` lists distinct names; every `index.csv` line has a valid status, extracted
    /// lines have a row number inside `features.npy`, no row number or path appears twice, every
    /// feature row is listed, and each line's class agrees with `labels.npy`; `meta.json`'s format,
    /// dimension and counts match. `.npy` files are parsed through ``NumpyHeader`` (bounded,
    /// overflow-checked). Cost: O(file sizes); the features are held in memory.
    /// - Throws: ``PipelineError/malformedStore(path:reason:)`` when a file is missing or inconsistent.
    public static func load(from url: URL) throws -> FeatureStore {
        func file(_ n: String) -> URL { url.appendingPathComponent(n) }
        guard FileManager.default.fileExists(atPath: file("meta.json").path) else {
            throw PipelineError.malformedStore(path: url.path, reason: "no meta.json: not a finished feature store (run extract, or extract --resume)")
        }
        let meta = try readMeta(file("meta.json"))
        let fm = try readArray(file("features.npy"))
        guard fm.dtype == .float32, fm.shape.count == 2, fm.shape[1] >= 1 else {
            throw PipelineError.malformedStore(path: file("features.npy").path, reason: "expected a 2-D float32 array with at least one column, found \(fm.dtype.rawValue) \(fm.shape)")
        }
        let rowCount = fm.shape[0], dimension = fm.shape[1]
        let lab = try readArray(file("labels.npy"))
        guard [.int64, .int32, .uint8].contains(lab.dtype) else {
            throw PipelineError.malformedStore(path: file("labels.npy").path, reason: "labels are \(lab.dtype.rawValue) (floating point); expected integer class indices (<i8)")
        }
        guard lab.shape == [rowCount] else {
            throw PipelineError.malformedStore(path: file("labels.npy").path, reason: "shape \(lab.shape) does not match the \(rowCount) rows of features.npy")
        }
        let classes = try readClasses(file("classes.json"))
        let indexURL = file("index.csv")
        let indexBytes: [UInt8]
        do { indexBytes = [UInt8](try Data(contentsOf: indexURL)) } catch {
            throw PipelineError.malformedStore(path: indexURL.path, reason: "missing or unreadable")
        }
        let lines = try parseIndexLines(indexBytes, path: indexURL.path)
        let labels = lab.ints
        try checkConsistency(lines: lines, labels: labels, classes: classes, rowCount: rowCount,
                             indexPath: indexURL.path, labelsPath: file("labels.npy").path)
        try checkMeta(meta, path: file("meta.json").path, dimension: dimension, rowCount: rowCount, imageCount: lines.count)
        return FeatureStore(url: url, dimension: dimension, features: fm.floats, labels: labels,
                            classes: classes, records: lines.map(\.record), meta: meta)
    }

    /// A `.npy` file of the store, with parse errors mapped to ``PipelineError/malformedStore(path:reason:)``.
    static func readArray(_ url: URL) throws -> NumpyArray {
        do { return try NumpyArray(contentsOf: url) }
        catch let e as MalformedBytes { throw PipelineError.malformedStore(path: url.path, reason: "at byte \(e.offset): \(e.reason)") }
        catch let e as CoreIOError {
            if case .io(_, let reason) = e { throw PipelineError.malformedStore(path: url.path, reason: reason) }
            throw PipelineError.malformedStore(path: url.path, reason: "\(e)")
        }
    }

    /// `classes.json`: a JSON array of distinct strings.
    static func readClasses(_ url: URL) throws -> [String] {
        let data = (try? Data(contentsOf: url)) ?? Data()
        guard let classes = (try? JSONSerialization.jsonObject(with: data)) as? [String] else {
            throw PipelineError.malformedStore(path: url.path, reason: "missing or not a JSON array of strings")
        }
        var seen = Set<String>()
        for c in classes where !seen.insert(c).inserted {
            throw PipelineError.malformedStore(path: url.path, reason: "class '\(c)' is listed twice")
        }
        return classes
    }

    /// Checks `index.csv` lines against `labels.npy` and `classes.json` (see ``load(from:)``).
    static func checkConsistency(lines: [(record: IndexRecord, line: Int)], labels: [Int], classes: [String], rowCount: Int,
                                 indexPath: String, labelsPath: String) throws {
        for (row, label) in labels.enumerated() where label < -1 || label >= classes.count {
            throw PipelineError.malformedStore(path: labelsPath, reason: label < 0
                ? "row \(row) holds label \(label); labels are class indices (0 or more), or -1 for unlabeled"
                : "row \(row) holds label \(label) but classes.json lists only \(classes.count) classes")
        }
        let classIndex = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        var lineOfRow = [Int](repeating: 0, count: rowCount)
        var lineOfPath: [String: Int] = [:]
        for (r, line) in lines {
            func bad(_ reason: String) -> PipelineError { .malformedStore(path: indexPath, reason: "line \(line): \(reason)") }
            if let previous = lineOfPath.updateValue(line, forKey: r.path) { throw bad("path '\(r.path)' is already listed on line \(previous)") }
            let expected: Int
            if r.label.isEmpty { expected = -1 } else {
                guard let c = classIndex[r.label] else { throw bad("class '\(r.label)' is not in classes.json") }
                expected = c
            }
            guard let row = r.row else { continue }
            guard row < rowCount else { throw bad("row \(row) is past the end of features.npy (\(rowCount) rows)") }
            if lineOfRow[row] != 0 { throw bad("row \(row) is already listed on line \(lineOfRow[row])") }
            lineOfRow[row] = line
            guard labels[row] == expected else {
                let says = expected < 0 ? "is unlabeled" : "has label '\(r.label)' (class \(expected))"
                throw bad("\(says) but \(URL(fileURLWithPath: labelsPath).lastPathComponent) row \(row) holds \(labels[row])")
            }
        }
        if let missing = lineOfRow.firstIndex(of: 0) {
            throw PipelineError.malformedStore(path: indexPath, reason: "features.npy row \(missing) is listed on no line")
        }
    }

    /// Checks `meta.json`'s format, dimension and counts against the arrays.
    static func checkMeta(_ meta: [String: String], path: String, dimension: Int, rowCount: Int, imageCount: Int) throws {
        func check(_ key: String, _ actual: Int, _ what: String) throws {
            guard let text = meta[key] else { return }
            guard Int(text) == actual else { throw PipelineError.malformedStore(path: path, reason: "'\(key)' is \(text) but \(what) \(actual)") }
        }
        if let format = meta["format"], format != StoreDescription.format {
            throw PipelineError.malformedStore(path: path, reason: "format '\(format)' is not \(StoreDescription.format)")
        }
        try check("dimension", dimension, "features.npy has")
        try check("extracted", rowCount, "features.npy has rows:")
        try check("image_count", imageCount, "index.csv has lines:")
    }

    static func readMeta(_ url: URL) throws -> [String: String] {
        guard let d = try? Data(contentsOf: url), let obj = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else {
            throw PipelineError.malformedStore(path: url.path, reason: "unreadable or not a JSON object")
        }
        var out: [String: String] = [:]
        for (k, v) in obj {
            switch v {
            case let s as String: out[k] = s
            case let n as NSNumber: out[k] = n.stringValue
            case is NSNull: out[k] = ""
            default: continue
            }
        }
        return out
    }

    /// Parses `index.csv` (see ``parseIndexLines(_:path:)``).
    static func parseIndex(_ bytes: [UInt8], path: String) throws -> [IndexRecord] {
        try parseIndexLines(bytes, path: path).map(\.record)
    }

    /// Parses `index.csv` into records with their line numbers: header `row,path,split,label,status`,
    /// five fields per line, status `ok` (with a decimal row number) or `error: <reason>` (no row number).
    /// - Throws: ``PipelineError/malformedStore(path:reason:)`` naming the line (and byte offset for syntax errors).
    static func parseIndexLines(_ bytes: [UInt8], path: String) throws -> [(record: IndexRecord, line: Int)] {
        let rows: [TextFormat.CSVRecord]
        do { rows = try TextFormat.parseCSV(bytes: bytes, path: path) } catch let e as MalformedBytes {
            throw PipelineError.malformedStore(path: path, reason: "at byte \(e.offset): \(e.reason)")
        }
        guard let head = rows.first, head.fields == ["row", "path", "split", "label", "status"] else {
            throw PipelineError.malformedStore(path: path, reason: "header is not row,path,split,label,status")
        }
        var out: [(record: IndexRecord, line: Int)] = []
        out.reserveCapacity(rows.count - 1)
        for r in rows.dropFirst() {
            func bad(_ reason: String) -> PipelineError { .malformedStore(path: path, reason: "line \(r.line): \(reason)") }
            let f = r.fields
            guard f.count == 5 else { throw bad("has \(f.count) fields, expected 5") }
            let failure: String?
            if f[4] == "ok" { failure = nil }
            else if f[4].hasPrefix("error: ") { failure = String(f[4].dropFirst(7)) }
            else { throw bad("bad status '\(f[4])' (expected ok or error: <reason>)") }
            var row: Int? = nil
            if failure == nil {
                guard !f[0].isEmpty, f[0].utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(f[0]) else {
                    throw bad(f[0].isEmpty ? "status ok but no row number" : "row '\(f[0])' is not a row number")
                }
                row = n
            } else if !f[0].isEmpty {
                throw bad("a failed image has row number '\(f[0])'")
            }
            out.append((IndexRecord(row: row, path: f[1], split: f[2], label: f[3], failure: failure), r.line))
        }
        return out
    }
}

/// Everything `meta.json` records besides timing. Shared by extraction and merging so that a
/// merged store's metadata is byte-identical to a single run's.
struct StoreDescription {
    var identity: [String: String]
    var presetName: String
    var presetFingerprint: String
    var dimension: Int
    var decodeMode: String
    var layout: DatasetLayout
    var classes: [String]
    var skipped: [SkippedFile]
    var listFingerprint: String
    var shard: ShardSpec?
    var shardRange: Range<Int>?
    /// Images per network call (`meta.json` `batch`). Shard ranges are cut at batch boundaries, so
    /// `merge` refuses shards extracted with different batch sizes. Nil for stores written before it
    /// was recorded (not part of the fingerprint, so their partial runs still resume).
    var batchSize: Int? = nil

    static let format = "bottleneck-features-1"

    /// What must match for a partial run to be resumed or an output to count as current.
    var fingerprint: String {
        var h = SHA256()
        var s = "format=\(StoreDescription.format)\nlist=\(listFingerprint)\n"
        for k in identity.keys.sorted() { s += "identity.\(k)=\(identity[k]!)\n" }
        s += "preset=\(presetFingerprint)\ndimension=\(dimension)\ndecode=\(decodeMode)\n"
        s += "shard=\(shard.map { "\($0.index)/\($0.count)" } ?? "none")\n"
        if let r = shardRange, shard != nil { s += "shard_range=\(r.lowerBound)..<\(r.upperBound)\n" }
        h.update(Data(s.utf8))
        return h.finalize()
    }

    func metaJSON(records: [IndexRecord], wallSeconds: Double) -> String {
        var lines: [String] = []
        func add(_ k: String, _ v: String) { lines.append("  \(TextFormat.jsonString(k)): \(v)") }
        add("format", TextFormat.jsonString(StoreDescription.format))
        add("tool_version", TextFormat.jsonString(FeatureExtractor.toolVersion))
        for k in identity.keys.sorted() { add(k, TextFormat.jsonString(identity[k]!)) }
        add("preset", TextFormat.jsonString(presetName))
        add("dimension", "\(dimension)")
        add("decode", TextFormat.jsonString(decodeMode))
        add("layout", TextFormat.jsonString(layout.rawValue))
        if let batchSize { add("batch", "\(batchSize)") }
        let ok = records.filter { $0.row != nil }
        add("image_count", "\(records.count)")
        add("extracted", "\(ok.count)")
        add("failures", "\(records.count - ok.count)")
        add("classes", "\(classes.count)")
        var splitCounts: [String: Int] = [:]
        for r in ok where !r.split.isEmpty { splitCounts[r.split, default: 0] += 1 }
        add("splits", "{" + splitCounts.keys.sorted(by: TextFormat.byteLess)
            .map { "\(TextFormat.jsonString($0)): \(splitCounts[$0]!)" }.joined(separator: ", ") + "}")
        add("skipped", "\(skipped.count)")
        add("skipped_files", skipped.isEmpty ? "[]" : "[\n" + skipped.map {
            "    {\"path\": \(TextFormat.jsonString($0.path)), \"reason\": \(TextFormat.jsonString($0.reason))}"
        }.joined(separator: ",\n") + "\n  ]")
        if let s = shard, let r = shardRange {
            add("shard", "{\"index\": \(s.index), \"count\": \(s.count), \"start\": \(r.lowerBound), \"end\": \(r.upperBound)}")
        } else { add("shard", "null") }
        add("list_fingerprint", TextFormat.jsonString(listFingerprint))
        add("preset_fingerprint", TextFormat.jsonString(presetFingerprint))
        add("fingerprint", TextFormat.jsonString(fingerprint))
        add("wall_seconds", String(format: "%.3f", wallSeconds))
        return "{\n" + lines.joined(separator: ",\n") + "\n}\n"
    }

    /// Writes every store file from `records` (in order) and `rows` (one per ok record, in order),
    /// `meta.json` last. Memory: O(records) plus a 1 MiB row buffer.
    func writeStore(to out: URL, records inRecords: [IndexRecord], rows: RowSource, wallSeconds: Double) throws -> [IndexRecord] {
        var records = inRecords
        var next = 0
        for i in records.indices where records[i].failure == nil { records[i].row = next; next += 1 }
        for i in records.indices where records[i].failure != nil { records[i].row = nil }
        guard next == rows.rowCount else {
            throw PipelineError.malformedStore(path: out.path, reason: "\(next) images extracted but \(rows.rowCount) feature rows found")
        }
        let metaURL = out.appendingPathComponent("meta.json")
        unlink(metaURL.path)  // the store is incomplete until meta.json is rewritten
        let D = dimension
        let chunkRows = max(1, (1 << 20) / max(1, D * 4))
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * D)
        defer { buf.deallocate() }

        func writeMatrix(_ name: String, rowIndices: [Int]) throws {
            let w = try AtomicStreamWriter(out.appendingPathComponent(name))
            try w.append(NumpyArray.header(shape: [rowIndices.count, D], dtype: .float32))
            var i = 0
            while i < rowIndices.count {
                // Gather runs of consecutive rows so the common (contiguous) case is one pread per chunk.
                var j = i + 1
                while j < rowIndices.count && j - i < chunkRows && rowIndices[j] == rowIndices[j - 1] + 1 { j += 1 }
                try rows.read(first: rowIndices[i], count: j - i, into: buf)
                try w.append(UnsafeRawBufferPointer(start: buf, count: (j - i) * D * 4))
                i = j
            }
            try w.commit()
        }
        func writeLabels(_ name: String, _ values: [Int]) throws {
            try NumpyArray(int64: values, shape: [values.count]).write(to: out.appendingPathComponent(name))
        }
        let okRecords = records.filter { $0.row != nil }
        let labelIndex = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        func labelOf(_ r: IndexRecord) -> Int { r.label.isEmpty ? -1 : (labelIndex[r.label] ?? -1) }

        try writeMatrix("features.npy", rowIndices: Array(0..<next))
        try writeLabels("labels.npy", okRecords.map(labelOf))
        let splits = Set(okRecords.map(\.split)).subtracting([""]).sorted(by: TextFormat.byteLess)
        for s in splits {
            let sel = okRecords.filter { $0.split == s }
            try writeMatrix("features_\(s).npy", rowIndices: sel.map { $0.row! })
            try writeLabels("labels_\(s).npy", sel.map(labelOf))
        }
        try AtomicFile.write(TextFormat.jsonStringArray(classes) + "\n", to: out.appendingPathComponent("classes.json"))
        var csv = "row,path,split,label,status\n"
        for r in records {
            csv += (r.row.map(String.init) ?? "") + "," + TextFormat.csvField(r.path) + "," + TextFormat.csvField(r.split) + ","
                + TextFormat.csvField(r.label) + "," + TextFormat.csvField(r.failure.map { "error: " + $0 } ?? "ok") + "\n"
        }
        try AtomicFile.write(csv, to: out.appendingPathComponent("index.csv"))
        try AtomicFile.write(metaJSON(records: records, wallSeconds: wallSeconds), to: metaURL)
        return records
    }
}
