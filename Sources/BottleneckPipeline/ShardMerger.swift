import Foundation
import BottleneckCore

/// Joins the stores written by `extract --shard i/n` (all n of them) into one store that is
/// byte-identical to a single-process run, except `meta.json`'s `wall_seconds` (the shards' sum).
///
/// Rows are streamed from the shards' `features.npy` files, so memory is O(index) plus a 1 MiB buffer.
public enum ShardMerger {
    /// Largest feature length accepted from a shard's `meta.json` (256 MiB per float32 row); the
    /// largest real backbone output (an unpooled early stage) is far below it.
    public static let maximumDimension = 1 << 26

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
            guard n >= 1, i >= 0, i < n, a >= 0, b >= a else {
                throw PipelineError.malformedStore(path: metaURL.path, reason: "shard \(i)/\(n) covering images \(a)..<\(b) is impossible (need 0 <= index < count, 0 <= start <= end)")
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
        guard parsed.count == n, parsed.map(\.index) == Array(0..<parsed.count), parsed.allSatisfy({ $0.count == n }) else {
            throw PipelineError.incompatibleShards(path: out.path, reason: "need exactly shards 0..\(n - 1) of \(n), got \(parsed.map { "\($0.index)/\($0.count)" }.joined(separator: ", "))")
        }
        for (a, b) in zip(parsed, parsed.dropFirst()) where a.end != b.start {
            throw PipelineError.incompatibleShards(path: b.url.path, reason: "starts at image \(b.start) but the previous shard ends at \(a.end)")
        }
        guard let dimension = Int(first.meta["dimension"] ?? ""), let layout = DatasetLayout(rawValue: first.meta["layout"] ?? "") else {
            throw PipelineError.malformedStore(path: first.url.path, reason: "meta.json lacks dimension or layout")
        }
        // A row buffer of `dimension` floats is allocated before any shard's data is read.
        guard (1...maximumDimension).contains(dimension) else {
            throw PipelineError.malformedStore(path: first.url.appendingPathComponent("meta.json").path,
                                               reason: "dimension \(dimension) is outside 1...\(maximumDimension)")
        }
        var records: [IndexRecord] = []
        var segments: [RowSource.Segment] = []
        var wall = 0.0
        for s in parsed {
            let indexURL = s.url.appendingPathComponent("index.csv")
            guard let csv = try? Data(contentsOf: indexURL) else {
                throw PipelineError.malformedStore(path: indexURL.path, reason: "missing or unreadable")
            }
            let recs = try FeatureStore.parseIndex([UInt8](csv), path: indexURL.path)
            guard recs.count == s.end - s.start else {
                throw PipelineError.malformedStore(path: indexURL.path, reason: "lists \(recs.count) images, meta.json says \(s.end - s.start)")
            }
            records += recs
            let npy = s.url.appendingPathComponent("features.npy")
            let header: NumpyHeader
            do { header = try NumpyHeader(contentsOf: npy) } catch let e as MalformedBytes {
                throw PipelineError.malformedStore(path: npy.path, reason: "at byte \(e.offset): \(e.reason)")
            } catch { throw PipelineError.malformedStore(path: npy.path, reason: "\(error)") }
            let okCount = recs.filter { $0.failure == nil }.count
            guard header.dtype == .float32, header.shape == [okCount, dimension] else {
                throw PipelineError.malformedStore(path: npy.path, reason: "\(header.dtype.rawValue) \(header.shape) does not match \(okCount) extracted float32 rows of \(dimension)")
            }
            segments.append(.init(path: npy.path, offset: header.dataOffset, rows: okCount))
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
                                  "preset_fingerprint", "fingerprint", "wall_seconds", "batch"]
        for (k, v) in first.raw where !known.contains(k) { if let s = v as? String { identity[k] = s } }
        let desc = StoreDescription(identity: identity, presetName: first.meta["preset"] ?? "",
                                    presetFingerprint: first.meta["preset_fingerprint"] ?? "", dimension: dimension,
                                    decodeMode: first.meta["decode"] ?? "", layout: layout, classes: classes, skipped: skipped,
                                    listFingerprint: first.meta["list_fingerprint"] ?? "", shard: nil, shardRange: nil,
                                    batchSize: first.meta["batch"].flatMap { Int($0) })
        try FeatureExtractor.validateOutputNotShard(out, shards: parsed.map(\.url))
        let rows = try RowSource(segments: segments, dimension: dimension)
        _ = try desc.writeStore(to: out, records: records, rows: rows, wallSeconds: wall)
        return records.count
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
