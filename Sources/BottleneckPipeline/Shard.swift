import Foundation

/// Which part of the sorted image list a process extracts: shard `index` of `count`
/// (0-based, so `$SLURM_ARRAY_TASK_ID` with `--array=0-(n-1)` or Kubernetes'
/// `$JOB_COMPLETION_INDEX` can be passed directly).
///
/// Shards are contiguous blocks of the byte-wise sorted list, cut at batch boundaries (see
/// ``range(total:batchSize:)``), so concatenating shards in index order reproduces the single-process order.
public struct ShardSpec: Sendable, Equatable, CustomStringConvertible {
    /// 0-based shard number, `0 <= index < count`.
    public var index: Int
    /// Number of shards, at least 1.
    public var count: Int

    /// Creates a shard spec. - Throws: ``PipelineError/invalidArgument(_:)`` when out of range.
    public init(index: Int, count: Int) throws {
        guard count >= 1, index >= 0, index < count else {
            throw PipelineError.invalidArgument("shard \(index)/\(count) is out of range: use i/n with 0 <= i < n (0-based)")
        }
        self.index = index; self.count = count
    }

    /// Parses `"i/n"`. - Throws: ``PipelineError/invalidArgument(_:)`` for anything else.
    public init(parsing text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]) else {
            throw PipelineError.invalidArgument("shard '\(text)' is not of the form i/n (e.g. 0/4)")
        }
        try self.init(index: i, count: n)
    }

    /// The block of a `total`-element list this shard covers when work is done in batches of
    /// `batchSize`: whole batches `[index*nb/count, (index+1)*nb/count)` of the `nb = ceil(total/batchSize)`
    /// batches, so every batch a shard runs is exactly a batch of the single-process run and merged
    /// shards are byte-identical to it even when a network's results depend on batch composition.
    /// With `batchSize` 1 this is the plain item partition.
    public func range(total: Int, batchSize: Int = 1) -> Range<Int> {
        let b = max(1, batchSize)
        let batches = (total + b - 1) / b
        let lo = min(total, index * batches / count * b)
        let hi = min(total, (index + 1) * batches / count * b)
        return lo..<hi
    }

    /// `"i/n"`.
    public var description: String { "\(index)/\(count)" }
}
