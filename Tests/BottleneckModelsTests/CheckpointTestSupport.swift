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

    /// CRC-32 (IEEE), bytewise; only used for the small pickle record.
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c >> 1) ^ (0xEDB8_8320 & (0 &- (c & 1))) }
        }
        return ~c
    }

    /// Protocol-2 pickle of an OrderedDict of float32 tensors, written as torch.save does
    /// (storages as persistent ids, tensors via torch._utils._rebuild_tensor_v2).
    static func statePickle(_ tensors: [(name: String, shape: [Int])]) -> [UInt8] {
        var p: [UInt8] = [0x80, 0x02]
        func str(_ s: String) { p.append(0x58); let u = Array(s.utf8); p += withUnsafeBytes(of: UInt32(u.count).littleEndian, Array.init); p += u }
        func int(_ v: Int) { p.append(0x4A); p += withUnsafeBytes(of: Int32(v).littleEndian, Array.init) }
        func global(_ m: String, _ n: String) { p.append(0x63); p += Array("\(m)\n\(n)\n".utf8) }
        global("collections", "OrderedDict"); p += [0x29, 0x52]  // OrderedDict()
        p.append(0x28)  // MARK for SETITEMS
        for (i, t) in tensors.enumerated() {
            str(t.name)
            global("torch._utils", "_rebuild_tensor_v2")
            p.append(0x28)  // MARK args
            p.append(0x28); str("storage"); global("torch", "FloatStorage"); str("\(i)"); str("cpu"); int(t.shape.reduce(1, *)); p.append(0x74); p.append(0x51)
            int(0)
            p.append(0x28); t.shape.forEach { int($0) }; p.append(0x74)
            var strides = [Int](repeating: 1, count: t.shape.count)
            for d in stride(from: t.shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * t.shape[d + 1] }
            p.append(0x28); strides.forEach { int($0) }; p.append(0x74)
            p.append(0x89)
            global("collections", "OrderedDict"); p += [0x29, 0x52]
            p.append(0x74); p.append(0x52)  // TUPLE, REDUCE
        }
        p += [0x75, 0x2E]  // SETITEMS, STOP
        return p
    }

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
