import BottleneckTestSupport
import Foundation
import XCTest

/// Helpers shared by the checkpoint reader tests: fixture paths, temp files, and a minimal
/// `torch.save`-compatible zip writer used to build large synthetic checkpoints at test time.
enum CheckpointTestSupport {
    static func fixture(_ name: String) throws -> URL {
        guard let dir = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            throw XCTSkip("Fixtures bundle missing")
        }
        return dir.appendingPathComponent("weights").appendingPathComponent(name)
    }

    static func tempDir() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bottleneck-weights-tests-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// Repository root (the directory holding Package.swift).
    static var packageRoot: URL {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while url.path != "/" {
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
            url.deleteLastPathComponent()
        }
        return url
    }

    static func crc32(_ bytes: [UInt8]) -> UInt32 { HostileCheckpoints.crc32(bytes) }

    static func statePickle(_ tensors: [(name: String, shape: [Int])]) -> [UInt8] { HostileCheckpoints.statePickle(tensors) }

    /// Writes a torch zip checkpoint; tensor `i` element `j` has value `value(i, j)`.
    /// Data records are produced one tensor at a time so the writer itself stays small in memory.
    /// With `zip64`, the central directory stores sizes/offsets in ZIP64 extra fields and the archive
    /// ends with ZIP64 end records (what writers emit for archives over 4 GiB), at small scale.
    static func writeTorchZip(to url: URL, tensors: [(name: String, shape: [Int])], zip64: Bool = false,
                              value: (Int, Int) -> Float) throws {
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        let fh = try FileHandle(forWritingTo: url)
        defer { try? fh.close() }
        var offset = 0
        var central: [UInt8] = []
        var count = 0
        func le16(_ v: Int) -> [UInt8] { withUnsafeBytes(of: UInt16(v).littleEndian, Array.init) }
        func le32(_ v: Int) -> [UInt8] { withUnsafeBytes(of: UInt32(truncatingIfNeeded: v).littleEndian, Array.init) }
        func le64(_ v: Int) -> [UInt8] { withUnsafeBytes(of: UInt64(v).littleEndian, Array.init) }
        func add(_ name: String, _ data: [UInt8], crc: UInt32) throws {
            let n = Array(name.utf8)
            var h: [UInt8] = le32(0x0403_4B50) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0)
            h += le32(Int(crc)) + le32(data.count) + le32(data.count) + le16(n.count) + le16(0) + n
            central += le32(0x0201_4B50) + le16(45) + le16(45) + le16(0) + le16(0) + le16(0) + le16(0)
            if zip64 {
                let extra = le16(1) + le16(24) + le64(data.count) + le64(data.count) + le64(offset)
                central += le32(Int(crc)) + le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) + le16(n.count) + le16(extra.count) + le16(0)
                central += le16(0) + le16(0) + le32(0) + le32(0xFFFF_FFFF) + n + extra
            } else {
                central += le32(Int(crc)) + le32(data.count) + le32(data.count) + le16(n.count) + le16(0) + le16(0)
                central += le16(0) + le16(0) + le32(0) + le32(offset) + n
            }
            try fh.write(contentsOf: h); try fh.write(contentsOf: data)
            offset += h.count + data.count
            count += 1
        }
        let pkl = statePickle(tensors)
        try add("archive/data.pkl", pkl, crc: crc32(pkl))
        try add("archive/byteorder", Array("little".utf8), crc: crc32(Array("little".utf8)))
        for (i, t) in tensors.enumerated() {
            let n = t.shape.reduce(1, *)
            let values = (0..<n).map { value(i, $0) }
            // The reader never checks CRCs of storage records (they are read by offset), so skip computing them.
            try add("archive/data/\(i)", values.withUnsafeBytes(Array.init), crc: 0)
        }
        var tail: [UInt8] = []
        if zip64 {
            let z64 = offset + central.count
            tail += le32(0x0606_4B50) + le64(44) + le16(45) + le16(45) + le32(0) + le32(0)
            tail += le64(count) + le64(count) + le64(central.count) + le64(offset)
            tail += le32(0x0706_4B50) + le32(0) + le64(z64) + le32(1)
            tail += le32(0x0605_4B50) + le16(0) + le16(0) + le16(0xFFFF) + le16(0xFFFF) + le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF) + le16(0)
        } else {
            tail += le32(0x0605_4B50) + le16(0) + le16(0) + le16(count) + le16(count)
            tail += le32(central.count) + le32(offset) + le16(0)
        }
        try fh.write(contentsOf: central + tail)
    }

    /// Resident-set high-water mark in bytes after resetting it, via /proc (Linux only).
    static func resetPeakRSS() -> Bool {
        guard let fh = FileHandle(forWritingAtPath: "/proc/self/clear_refs") else { return false }
        defer { try? fh.close() }
        return (try? fh.write(contentsOf: Data("5".utf8))) != nil
    }

    static func statusField(_ name: String) -> Int? {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in s.split(separator: "\n") where line.hasPrefix(name + ":") {
            let kb = line.split(separator: " ").compactMap { Int($0) }.first
            return kb.map { $0 * 1024 }
        }
        return nil
    }
}
