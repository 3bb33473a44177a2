import Foundation
import XCTest
import BottleneckCore
@testable import BottleneckPipeline

/// Builds small synthetic datasets on disk for the pipeline tests.
enum TestData {
    /// A fresh empty temporary directory.
    static func tempDir(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("bn-pipeline-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Writes a binary PPM (P6) whose pixels come from `seed`, so every image has distinct content.
    static func writePPM(_ url: URL, width: Int = 40, height: Int = 32, seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        var data = Data("P6\n\(width) \(height)\n255\n".utf8)
        let base = (UInt8(truncatingIfNeeded: rng.next()), UInt8(truncatingIfNeeded: rng.next()), UInt8(truncatingIfNeeded: rng.next()))
        var px = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let i = (y * width + x) * 3
                let noise = UInt8(truncatingIfNeeded: rng.next() & 31)
                px[i] = base.0 &+ UInt8(truncatingIfNeeded: x * 3) &+ noise
                px[i + 1] = base.1 &+ UInt8(truncatingIfNeeded: y * 5)
                px[i + 2] = base.2 &+ UInt8(truncatingIfNeeded: (x ^ y) * 2)
            }
        }
        data.append(contentsOf: px)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url)
    }

    /// Writes `perClass` images for each class under `root/<prefix>/<class>/`.
    static func makeClassTree(_ root: URL, prefix: String = "", classes: [String], perClass: Int, seed: UInt64 = 1) throws {
        var s = seed
        for c in classes {
            for i in 0..<perClass {
                let dir = prefix.isEmpty ? root.appendingPathComponent(c) : root.appendingPathComponent(prefix).appendingPathComponent(c)
                try writePPM(dir.appendingPathComponent(String(format: "img_%03d.ppm", i)), width: 24 + Int(s % 17), height: 20 + Int(s % 13), seed: s)
                s &+= 7919
            }
        }
    }

    /// All regular files under `dir` (relative paths) except `meta.json`, with their bytes.
    static func storeFiles(_ dir: URL) throws -> [String: Data] {
        var out: [String: Data] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) where !name.hasPrefix(".") && name != "meta.json" {
            out[name] = try Data(contentsOf: dir.appendingPathComponent(name))
        }
        return out
    }

    /// `meta.json` text with the run-dependent `wall_seconds` line removed.
    static func metaWithoutTiming(_ dir: URL) throws -> String {
        try String(contentsOf: dir.appendingPathComponent("meta.json"), encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.contains("\"wall_seconds\"") }.joined(separator: "\n")
    }

    /// The package root (directory holding Package.swift), from this file's path.
    static var packageRoot: URL {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while url.path != "/" && !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            url.deleteLastPathComponent()
        }
        return url
    }
}
