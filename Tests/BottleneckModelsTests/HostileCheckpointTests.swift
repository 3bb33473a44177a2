import BottleneckModels
import BottleneckTestSupport
import Foundation
import XCTest

/// Crafted and damaged checkpoints (issue 27): every one is refused with an error naming the file
/// (and the byte offset where the parser stopped), or read correctly; none crashes, hangs or
/// allocates what it declares.
final class HostileCheckpointTests: XCTestCase {
    private var dir: URL!

    override func setUpWithError() throws { dir = try Mutations.scratchDirectory("hostile-checkpoints") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    private func write(_ bytes: [UInt8], _ name: String) throws -> URL {
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    /// Opens `url` expecting a `WeightsError` whose message names the file and contains `fragments`.
    private func assertRefused(_ url: URL, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try Checkpoint(contentsOf: url), file: file, line: line) { error in
            guard error is WeightsError else { return XCTFail("not a WeightsError: \(error)", file: file, line: line) }
            let message = "\(error)"
            XCTAssertTrue(message.hasPrefix(url.path), "message does not name the file: \(message)", file: file, line: line)
            for f in fragments { XCTAssertTrue(message.contains(f), "'\(f)' missing from: \(message)", file: file, line: line) }
        }
    }

    /// A zip checkpoint whose `data.pkl` is `pickle` (no storages).
    private func zipWithPickle(_ pickle: [UInt8]) -> [UInt8] {
        HostileCheckpoints.zip([.init(name: "archive/data.pkl", stored: pickle),
                                .init(name: "archive/byteorder", stored: Array("little".utf8))])
    }

    /// Runs `body` on a thread with a 512 KiB stack (a secondary thread's default on macOS), so
    /// unbounded recursion would crash here rather than pass on the main thread's 8 MiB.
    private func onSmallStack(_ body: @escaping @Sendable () -> Void) {
        let done = DispatchSemaphore(value: 0)
        let thread = Thread { body(); done.signal() }
        thread.stackSize = 512 << 10
        thread.start()
        done.wait()
    }

    private static let tiny: [(name: String, shape: [Int], values: [Float])] = [
        ("a.weight", [2, 3], [1, 2, 3, 4, 5, 6]), ("a.bias", [2], [-1, 0.5]), ("b.running_var", [3], [0.25, 1, 4]),
    ]

    // MARK: finding 2: crashes on crafted files

    /// BINUNICODE8/BINBYTES8 lengths near 2^63 and 2^64 (SIGILL/SIGABRT before): refused at the
    /// length field (byte 3 of a legacy file, byte 3 of `data.pkl` in a zip).
    func testHugePickleLengthsAreRefused() throws {
        for opcode: UInt8 in [0x8D, 0x8E] {
            for length: UInt64 in [1 << 62, (1 << 63) - 1, 1 << 63, UInt64.max, UInt64.max - 7, 1 << 40, 100] {
                let pickle = HostileCheckpoints.hugeLengthPickle(opcode: opcode, length: length)
                let legacy = try write(pickle, "huge-\(opcode)-\(length).pth")
                assertRefused(legacy, ["at byte 3", "\(length)"])
                let zipped = try write(zipWithPickle(pickle), "huge-\(opcode)-\(length)-zip.pth")
                assertRefused(zipped, ["archive/data.pkl at byte 3", "\(length)"])
            }
        }
    }

    /// 50,000-deep lists, dicts and tuples (SIGSEGV before, in the unpickler and the state-dict
    /// walk): the nesting limit stops them being built at all, on a 512 KiB stack; a nesting
    /// the limit allows is read (and found to hold no tensors).
    func testDeepNestingIsRefusedBeforeItIsBuilt() throws {
        let limit = "nested deeper than \(CheckpointLimits.maxNestingDepth) levels"
        let cases: [(String, [UInt8])] = [
            ("lists", HostileCheckpoints.nestedListsPickle(depth: 50_000)),
            ("dicts", HostileCheckpoints.nestedDictsPickle(depth: 50_000)),
            ("tuples", HostileCheckpoints.nestedTuplesPickle(depth: 50_000)),
        ]
        var urls: [(URL, [String])] = []
        for (name, pickle) in cases {
            urls.append((try write(pickle, "deep-\(name).pth"), [limit]))
            urls.append((try write(zipWithPickle(pickle), "deep-\(name)-zip.pth"), ["archive/data.pkl", limit]))
        }
        // The same depth built through the memo, one level per step after each parent is nested.
        urls.append((try write(HostileCheckpoints.memoNestedListsPickle(depth: 50_000), "deep-memo.pth"),
                     ["already inside another container"]))
        urls.append((try write(HostileCheckpoints.selfContainingListPickle(), "cycle.pth"), ["list contains itself"]))
        let allowed = try write(zipWithPickle(HostileCheckpoints.nestedDictsPickle(depth: CheckpointLimits.maxNestingDepth)), "deep-ok.pth")
        let allowedPath = allowed.path
        let refusals = urls
        let box = ResultBox()
        onSmallStack {
            for (url, fragments) in refusals {
                do { _ = try Checkpoint(contentsOf: url); box.add("\(url.lastPathComponent): opened") } catch {
                    let m = "\(error)"
                    if !(error is WeightsError) || !m.hasPrefix(url.path) || !fragments.allSatisfy(m.contains) {
                        box.add("\(url.lastPathComponent): unexpected error \(m)")
                    }
                }
            }
            do { _ = try Checkpoint(contentsOf: URL(fileURLWithPath: allowedPath)); box.add("allowed depth: opened") } catch {
                if case .notACheckpoint? = error as? WeightsError {} else { box.add("allowed depth: \(error)") }
            }
        }
        XCTAssertEqual(box.messages, [])
    }

    /// A pickle sharing one dict between two keys at each of 150 levels has 2^150 paths: the
    /// state-dict walk visits each dict once and finishes at once.
    func testSharedDictionariesAreWalkedOnce() throws {
        let url = try write(zipWithPickle(HostileCheckpoints.sharedDictLadderPickle(levels: 150)), "ladder.pth")
        let start = Date()
        assertRefused(url, ["no dictionary of tensors"])
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
    }

    /// A ZIP64 extra field declaring more bytes than the directory holds (read past the buffer and
    /// an 8.6e16-byte allocation before), or fewer than the saturated fields need.
    func testZip64ExtraFieldOverrunIsRefused() throws {
        let pkl = HostileCheckpoints.statePickle([])
        for (name, extra) in [("overrun", HostileCheckpoints.le16(1) + HostileCheckpoints.le16(0xFFF0) + HostileCheckpoints.le64(5)),
                              ("short", HostileCheckpoints.le16(1) + HostileCheckpoints.le16(8) + HostileCheckpoints.le64(5))] {
            let bytes = HostileCheckpoints.zip([.init(name: "archive/byteorder", stored: Array("little".utf8)),
                                                .init(name: "archive/data.pkl", stored: pkl, zip64: true, centralExtra: extra)])
            assertRefused(try write(bytes, "zip64-\(name).pth"), ["at byte", "archive/data.pkl"])
        }
    }

    /// A ZIP64 uncompressed size of 2^62 (went straight into `reserveCapacity`) or 2^64 - 1 for
    /// `data.pkl`: refused before any allocation, naming the member and the limit.
    func testZip64HugeDeclaredSizeIsRefused() throws {
        let pkl = HostileCheckpoints.statePickle([])
        let big = try write(HostileCheckpoints.zip([.init(name: "archive/data.pkl", stored: pkl, uncompressedSize: 1 << 62)]), "z62.pth")
        assertRefused(big, ["archive/data.pkl", "declares \(1 << 62) bytes"])
        let extra = HostileCheckpoints.le16(1) + HostileCheckpoints.le16(24) + HostileCheckpoints.le64(UInt64.max)
            + HostileCheckpoints.le64(pkl.count) + HostileCheckpoints.le64(0)
        let huge = try write(HostileCheckpoints.zip([.init(name: "archive/data.pkl", stored: pkl, zip64: true, centralExtra: extra)]), "z64max.pth")
        assertRefused(huge, ["ZIP64 uncompressed size of archive/data.pkl", "\(UInt64.max)"])
    }

    // MARK: finding 3: safetensors header lengths with low byte 0x80

    /// A header length whose low byte is 0x80 makes the file start like a pickle (0x80 then a
    /// protocol byte for lengths 0x280...0x580): it was refused as "unsupported pickle content";
    /// it must read exactly.
    func testSafetensorsHeaderLengthWithLowByte0x80IsRead() throws {
        for length in [0x180, 0x280, 0x380, 0x480, 0x580, 0x1080, 0x10280] {
            let url = try write(HostileCheckpoints.safetensors(Self.tiny, headerLength: length), "h\(length).safetensors")
            let ck = try Checkpoint(contentsOf: url)
            XCTAssertEqual(ck.format, .safetensors, "header length \(length)")
            for t in Self.tiny {
                XCTAssertEqual(ck.shape(of: t.name), t.shape)
                XCTAssertEqual(try ck.load(t.name), t.values, "header length \(length) \(t.name)")
            }
            // The file name plays no part in detection.
            let renamed = dir.appendingPathComponent("h\(length).bin")
            try FileManager.default.moveItem(at: url, to: renamed)
            XCTAssertEqual(try Checkpoint(contentsOf: renamed).format, .safetensors)
        }
    }

    // MARK: finding 4: deflate bombs

    /// The test's deflate generators are valid: a deflated `data.pkl` reads, and a 10,000-byte zero
    /// bomb with its true size and CRC (under the ratio allowance) reaches the pickle parser.
    func testDeflatedMembersRead() throws {
        let url = try write(HostileCheckpoints.torchZip(Self.tiny, deflatePickle: true), "deflated.pth")
        let ck = try Checkpoint(contentsOf: url)
        XCTAssertEqual(ck.keys, Self.tiny.map(\.name))
        XCTAssertEqual(try ck.load("a.weight"), Self.tiny[0].values)
        let zeros = [UInt8](repeating: 0, count: 10_000)
        let bomb = HostileCheckpoints.ZipMember(name: "archive/data.pkl", stored: HostileCheckpoints.deflateZeros(count: zeros.count),
                                                method: 8, crc: HostileCheckpoints.crc32(zeros), uncompressedSize: zeros.count)
        XCTAssertLessThan(bomb.stored.count, 100)
        // Inflated correctly, the zeros are opcode 0x00, which no pickle protocol defines.
        assertRefused(try write(HostileCheckpoints.zip([bomb]), "small-bomb.pth"), ["opcode 0x00", "at byte 0"])
    }

    /// A 3 MB `data.pkl` inflating to 3 GiB (3.2 GB peak before): refused from its declared size
    /// before inflating; the same stream declared as 100 bytes (inflated to 4.2 GB before) stops
    /// past the declared size; declared as 200 MiB (under the in-memory limit), the ratio limit
    /// stops it after a few MiB.
    func testDeflateBombsAreStopped() throws {
        let threeGiB = 3 << 30
        let stream = HostileCheckpoints.deflateZeros(count: threeGiB)
        XCTAssertLessThan(stream.count, 3_500_000)
        func bomb(declaring size: Int) -> [UInt8] {
            HostileCheckpoints.zip([.init(name: "archive/data.pkl", stored: stream, method: 8, crc: 0, uncompressedSize: size)])
        }
        let start = Date()
        assertRefused(try write(bomb(declaring: threeGiB), "bomb-3g.pth"),
                      ["archive/data.pkl declares \(threeGiB) bytes", "at most \(CheckpointLimits.maxInMemoryBytes)"])
        assertRefused(try write(bomb(declaring: 100), "bomb-100.pth"), ["archive/data.pkl inflates past its declared 100 bytes"])
        assertRefused(try write(bomb(declaring: 200 << 20), "bomb-200m.pth"),
                      ["archive/data.pkl inflates", "over \(CheckpointLimits.maxInflationRatio):1"])
        XCTAssertLessThan(Date().timeIntervalSince(start), 5, "a bomb was inflated instead of stopped")
    }

    // MARK: finding 9: silent garbage

    /// Overlapping safetensors data ranges, and ranges beyond the data section, are refused naming
    /// the tensors.
    func testSafetensorsOverlapsAndOutOfRangeOffsetsAreRefused() throws {
        let overlap = try write(HostileCheckpoints.safetensors(Self.tiny, offsets: ["a.bias": (20, 28)]), "overlap.safetensors")
        assertRefused(overlap, ["'a.weight' and 'a.bias' overlap"])
        let beyond = try write(HostileCheckpoints.safetensors(Self.tiny, offsets: ["b.running_var": (36, 48)]), "beyond.safetensors")
        assertRefused(beyond, ["'b.running_var'", "data section"])
        let negative = try write(HostileCheckpoints.safetensors(Self.tiny, offsets: ["a.bias": (-8, 0)]), "negative.safetensors")
        assertRefused(negative, ["'a.bias'"])
    }

    /// EfficientNet-Lite0 with one NaN weight, an infinite bias or a negative BatchNorm variance
    /// (all-NaN features with exit 0 before): the network refuses to load, naming the tensor.
    func testNonFiniteWeightsAndNegativeVarianceAreRefusedAtLoad() throws {
        let arch = try ModelZoo.architecture("efficientnet-lite0")
        let synthetic = SyntheticWeights(architecture: arch)
        let params = arch.parameters
        let weight = try XCTUnwrap(params.first { $0.name.hasSuffix(".weight") && $0.shape.count == 4 }).name
        let variance = try XCTUnwrap(params.first { $0.name.hasSuffix(".running_var") }).name
        let bias = try XCTUnwrap(params.first { $0.name.hasSuffix(".bias") }).name
        let tensors = try params.map { (name: $0.name, shape: $0.shape, values: try synthetic.load($0.name)) }
        // Only the first two stages are built, which hold the tensors edited below.
        let cut = StageSelection.cut(arch.stages.count - 2)
        func checkpoint(_ name: String, editing key: String?, index: Int, value: Float) throws -> Checkpoint {
            var edited = tensors
            if let key, let i = edited.firstIndex(where: { $0.name == key }) { edited[i].values[index] = value }
            return try Checkpoint(contentsOf: try write(HostileCheckpoints.safetensors(edited), name))
        }
        XCTAssertNoThrow(try Network(architecture: arch, weights: try checkpoint("intact.safetensors", editing: nil, index: 0, value: 0), cut: cut))
        let cases: [(String, Int, Float, String)] = [(weight, 7, .nan, "nan at element 7"), (bias, 1, .infinity, "inf at element 1"),
                                                      (variance, 3, -0.5, "negative value -0.5 at element 3")]
        for (key, index, value, fragment) in cases {
            let ck = try checkpoint("\(key).safetensors", editing: key, index: index, value: value)
            XCTAssertThrowsError(try Network(architecture: arch, weights: ck, cut: cut, sourceName: ck.url.path)) { error in
                guard case let ModelLoadingError.invalidValues(found, _, source)? = error as? ModelLoadingError else {
                    return XCTFail("\(key): \(error)")
                }
                XCTAssertEqual(found, key)
                XCTAssertEqual(source, ck.url.path)
                XCTAssertTrue("\(error)".contains(fragment), "\(error)")
            }
        }
    }

    // MARK: random damage

    /// 1,500 seeded truncations and byte flips each of a zip `.pth`, a legacy `.pth` and a
    /// safetensors file, 600 of a zip with a deflated `data.pkl`, and 1,500 zips whose `data.pkl`
    /// is damaged under a correct CRC (so the damage reaches the unpickler): every case opens or
    /// throws a `WeightsError` naming the file, and for every case that opens, loading each tensor
    /// returns or throws. A crash, trap or hang fails the run.
    func testRandomDamageNeverCrashes() throws {
        let fixture = { (name: String) in Array(try Data(contentsOf: try CheckpointTestSupport.fixture(name))) }
        let pickle = HostileCheckpoints.statePickle(Self.tiny.map { ($0.name, $0.shape) })
        let storages = Self.tiny.enumerated().map { i, t in
            HostileCheckpoints.ZipMember(name: "archive/data/\(i)", stored: t.values.withUnsafeBytes(Array.init))
        }
        let inputs: [(name: String, original: [UInt8], count: Int, wrap: ([UInt8]) -> [UInt8])] = [
            ("tiny_zip.pth", try fixture("tiny_zip.pth"), 1500, { $0 }),
            ("tiny_legacy.pth", try fixture("tiny_legacy.pth"), 1500, { $0 }),
            ("tiny.safetensors", try fixture("tiny.safetensors"), 1500, { $0 }),
            ("deflated.pth", HostileCheckpoints.torchZip(Self.tiny, deflatePickle: true), 600, { $0 }),
            ("pickle-in-zip.pth", pickle, 1500, { HostileCheckpoints.zip([.init(name: "archive/data.pkl", stored: $0)] + storages) }),
        ]
        let start = Date()
        for (seed, input) in inputs.enumerated() {
            let file = try RewritableFile(dir.appendingPathComponent("damaged-" + input.name))
            var opened = 0, refused = 0, loadErrors = 0
            for c in Mutations.cases(of: input.original, count: input.count, seed: UInt64(27_000 + seed)) {
                try file.write(input.wrap(c.bytes))
                do {
                    let ck = try Checkpoint(contentsOf: file.url)
                    opened += 1
                    for key in ck.keys {
                        do { _ = try ck.load(key) } catch { loadErrors += 1 }
                    }
                } catch {
                    refused += 1
                    if !(error is WeightsError) || !"\(error)".hasPrefix(file.url.path) {
                        XCTFail("\(input.name) \(c.label): error does not name the file: \(error)")
                    }
                }
            }
            print("\(input.name): \(input.count) damaged copies, \(opened) opened (\(loadErrors) tensor load errors), \(refused) refused")
            XCTAssertGreaterThan(refused, input.count / 4, input.name)
        }
        print("random damage: \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
    }
}

/// Messages collected on another thread.
private final class ResultBox: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ m: String) { lock.lock(); list.append(m); lock.unlock() }
    var messages: [String] { lock.lock(); defer { lock.unlock() }; return list }
}
