import BottleneckCore
import Foundation

/// Seeded damage to valid inputs, for the robustness tests every parser must survive.
///
/// Each case is the original bytes cut short at a random length, or with a few random bytes
/// replaced; the same seed always yields the same cases, so a failing case can be replayed by its
/// index. The parser under test must return or throw for every case: a crash, a trap or a hang is
/// the failure these tests look for.
public enum Mutations {
    /// One damaged copy of an input and how it was made (for the failure message).
    public struct Case: Sendable {
        public let bytes: [UInt8]
        public let label: String
    }

    /// `count` damaged copies of `original`: even indices truncate, odd indices flip 1-8 bytes
    /// (biased towards the first 512 bytes, where headers and lengths live).
    public static func cases(of original: [UInt8], count: Int, seed: UInt64) -> [Case] {
        var rng = SplitMix64(seed: seed)
        var out: [Case] = []
        out.reserveCapacity(count)
        guard !original.isEmpty else { return [Case(bytes: [], label: "empty")] }
        for i in 0..<count {
            if i % 2 == 0 {
                let cut = Int(rng.next() % UInt64(original.count))
                out.append(Case(bytes: Array(original[0..<cut]), label: "case \(i): truncated to \(cut) bytes"))
            } else {
                var b = original
                let flips = 1 + Int(rng.next() % 8)
                var at: [Int] = []
                for _ in 0..<flips {
                    let range = rng.next() % 4 == 0 ? original.count : min(original.count, 512)
                    let pos = Int(rng.next() % UInt64(range))
                    b[pos] = UInt8(truncatingIfNeeded: rng.next())
                    at.append(pos)
                }
                out.append(Case(bytes: b, label: "case \(i): bytes changed at \(at)"))
            }
        }
        return out
    }

    /// A fresh empty directory under the system's temporary directory (removed by the caller).
    public static func scratchDirectory(_ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory
            .appendingPathComponent("bottleneck-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}
