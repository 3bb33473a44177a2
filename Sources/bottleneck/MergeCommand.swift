import ArgumentParser
import Foundation
import BottleneckPipeline

/// `bottleneck merge`: joins shard stores into one.
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Join the stores written by `extract --shard i/n` into one store identical to a single run.")

    @Argument(help: "Shard store directories (all n shards, any order).")
    var shards: [String]

    @Option(help: "Directory for the merged store.")
    var out: String

    @Flag(help: "Print nothing on success.")
    var quiet = false

    func validate() throws {
        guard !shards.isEmpty else { throw ValidationError("give the shard directories to merge") }
    }

    func run() throws {
        let n = try ShardMerger.merge(shards.map { URL(fileURLWithPath: $0) }, into: URL(fileURLWithPath: out))
        if !quiet { pipelineLog("merged \(shards.count) shards (\(n) images) -> \(out)") }
    }
}
