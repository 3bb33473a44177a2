import Foundation
import BottleneckCore

/// Joins the stores written by `extract --shard i/n` (all n of them) into one store that is
/// byte-identical to a single-process run, except `meta.json`'s `wall_seconds` (the shards' sum).
///
/// Rows are streamed from the shards' `features.npy` files, so memory is O(index) plus a 1 MiB buffer.
public enum ShardMerger {
    /// Merges the shard stores in `shards` (any order) into `out`; returns the merged store's record count.
    /// - Throws: ``PipelineError/incompatibleShards(path:reason:)`` when shards come from different
    ///   datasets, backbones or options, overlap, or leave a shard out; I/O errors otherwise.
    @discardableResult
    public static func merge(_ shards: [URL], into out: URL) throws -> Int {
        guard !shards.isEmpty else { throw PipelineError.invalidArgument("give at least one shard store to merge") }
        struct Shard { var url: URL; var meta: [String: String]; var raw: [String: Any]; var index: Int; var count: Int; var start: Int; var end: Int }
        var parsed: [Shard] = []
        for url in shards {
            let metaURL = url.appendingPathComponent("meta.json")
            guard let d = try? Data(contentsOf: metaURL), let raw = (try? JSONSerialization.jsonObject(with: d)) as? [String: Any] else {
                throw PipelineError.malformedStore(path: url.path, reason: "no readable meta.json: is this a finished shard store? (rerun that shard with --resume)")
            }
            guard let s = raw["shard"] as? [String: Any], let i = s["index"] as? Int, let n = s["count"] as? Int,
                  let a = s["start"] as? Int, let b = s["end"] as? Int else {
                throw PipelineError.incompatibleShards(path: url.path, reason: "not a shard store (meta.json has no shard); merge takes the outputs of extract --shard i/n")
            }
            parsed.append(Shard(url: url, meta: try FeatureStore.readMeta(metaURL), raw: raw, index: i, count: n, start: a, end: b))
        }
        parsed.sort { $0.index < $1.index }
        let first = parsed[0]
        // Everything except the shard block, counts and timing must agree.
        let perShard: Set<String> = ["shard", "fingerprint", "image_count", "extracted", "failures", "splits", "wall_seconds"]
        for s in parsed.dropFirst() {
            for key in Set(first.meta.keys).union(s.meta.keys) where !perShard.contains(key) && first.meta[key] != s.meta[key] {
                throw PipelineError.incompatibleShards(path: s.url.path, reason: "meta.json '\(key)' is \(s.meta[key] ?? "absent") but \(first.url.path) has \(first.meta[key] ?? "absent")")
            }
        }
        let n = first.count
        guard parsed.map(\.index) == Array(0..<n), parsed.allSatisfy({ $0.count == n }) else {
            throw PipelineError.incompatibleShards(path: out.path, reason: "need exactly shards 0..\(n - 1) of \(n), got \(parsed.map { "\($0.index)/\($0.count)" }.joined(separator: ", "))")
        }
        for (a, b) in zip(parsed, parsed.dropFirst()) where a.end != b.start {
            throw PipelineError.incompatibleShards(path: b.url.path, reason: "starts at image \(b.start) but the previous shard ends at \(a.end)")
        }
        guard let dimension = Int(first.meta["dimension"] ?? ""), let layout = DatasetLayout(rawValue: first.meta["layout"] ?? "") else {
            throw PipelineError.malformedStore(path: first.url.path, reason: "meta.json lacks dimension or layout")
        }
        var records: [IndexRecord] = []
        var segments: [RowSource.Segment] = []
        var wall = 0.0
        for s in parsed {
            let indexURL = s.url.appendingPathComponent("index.csv")
            guard let csv = try? String(contentsOf: indexURL, encoding: .utf8) else {
                throw PipelineError.malformedStore(path: indexURL.path, reason: "missing or unreadable")
            }
            let recs = try FeatureStore.parseIndex(csv, path: indexURL.path)
            guard recs.count == s.end - s.start else {
                throw PipelineError.malformedStore(path: indexURL.path, reason: "lists \(recs.count) images, meta.json says \(s.end - s.start)")
            }
            records += recs
            let npy = s.url.appendingPathComponent("features.npy")
            let (shape, offset) = try npyHeader(npy)
            let okCount = recs.filter { $0.failure == nil }.count
            guard shape == [okCount, dimension] else {
                throw PipelineError.malformedStore(path: npy.path, reason: "shape \(shape) does not match \(okCount) extracted rows of \(dimension)")
            }
            segments.append(.init(path: npy.path, offset: offset, rows: okCount))
            wall += Double(s.meta["wall_seconds"] ?? "") ?? 0
        }
        let classesURL = first.url.appendingPathComponent("classes.json")
        guard let cd = try? Data(contentsOf: classesURL), let classes = (try? JSONSerialization.jsonObject(with: cd)) as? [String] else {
            throw PipelineError.malformedStore(path: classesURL.path, reason: "missing or not a JSON array of strings")
        }
        let skipped = ((first.raw["skipped_files"] as? [[String: Any]]) ?? []).compactMap { d -> SkippedFile? in
            guard let p = d["path"] as? String, let r = d["reason"] as? String else { return nil }
            return SkippedFile(path: p, reason: r)
        }
        var identity: [String: String] = [:]
        let known: Set<String> = ["format", "tool_version", "preset", "dimension", "decode", "layout", "image_count", "extracted",
                                  "failures", "classes", "splits", "skipped", "skipped_files", "shard", "list_fingerprint",
                                  "preset_fingerprint", "fingerprint", "wall_seconds"]
        for (k, v) in first.raw where !known.contains(k) { if let s = v as? String { identity[k] = s } }
        let desc = StoreDescription(identity: identity, presetName: first.meta["preset"] ?? "",
                                    presetFingerprint: first.meta["preset_fingerprint"] ?? "", dimension: dimension,
                                    decodeMode: first.meta["decode"] ?? "", layout: layout, classes: classes, skipped: skipped,
                                    listFingerprint: first.meta["list_fingerprint"] ?? "", shard: nil, shardRange: nil)
        try FeatureExtractor.validateOutputNotShard(out, shards: parsed.map(\.url))
        let rows = try RowSource(segments: segments, dimension: dimension)
        _ = try desc.writeStore(to: out, records: records, rows: rows, wallSeconds: wall)
        return records.count
    }

    /// Shape and data offset of a little-endian float32 `.npy` file, read from its header only.
    static func npyHeader(_ url: URL) throws -> ([Int], Int) {
        guard let fh = FileHandle(forReadingAtPath: url.path) else {
            throw PipelineError.malformedStore(path: url.path, reason: "missing or unreadable")
        }
        defer { try? fh.close() }
        let pre = fh.readData(ofLength: 12)
        guard pre.count >= 10 else { throw PipelineError.malformedStore(path: url.path, reason: "too short for .npy") }
        let b = [UInt8](pre)
        let (len, start) = b[6] == 1 ? (Int(b[8]) | Int(b[9]) << 8, 10) : (Int(b[8]) | Int(b[9]) << 8 | Int(b[10]) << 16 | Int(b[11]) << 24, 12)
        try fh.seek(toOffset: 0)
        let head = fh.readData(ofLength: start + len)
        // Reuse the full parser on the header plus zero data bytes by asking for shape only.
        let text = String(decoding: head.suffix(from: start), as: UTF8.self)
        guard text.contains("'<f4'"), let o = text.range(of: "'shape': ("), let c = text[o.upperBound...].firstIndex(of: ")") else {
            throw PipelineError.malformedStore(path: url.path, reason: "not a float32 .npy file")
        }
        let shape = text[o.upperBound..<c].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        return (shape, start + len)
    }
}

extension FeatureExtractor {
    /// Refuses to merge into one of the shard directories being read.
    static func validateOutputNotShard(_ out: URL, shards: [URL]) throws {
        let o = canonicalPath(out)
        for s in shards where canonicalPath(s) == o {
            throw PipelineError.invalidOutput(path: out.path, reason: "is one of the shard stores being merged; choose a different --out")
        }
    }
}
