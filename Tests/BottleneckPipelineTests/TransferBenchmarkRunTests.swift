import BottleneckModels
import BottleneckTensor
import BottleneckTraining
import Foundation
import XCTest
@testable import BottleneckPipeline

/// The whole frozen-vs-fine-tuned benchmark as the library runs it (what `bottleneck benchmark` calls):
/// EfficientNet-Lite0 with synthetic weights on a tiny generated dataset (8 images: a debug build runs
/// the network slowly), both halves, and the report.
final class TransferBenchmarkRunTests: XCTestCase {
    /// EfficientNet-Lite0 with synthetic weights for both halves, on one thread.
    private func syntheticNetwork() throws -> BenchmarkNetwork {
        let arch = try ModelZoo.architecture("efficientnet-lite0")
        let weights = SyntheticWeights(architecture: arch)
        let engine = EngineOptions(threads: 1)
        return BenchmarkNetwork(
            name: arch.name, architecture: arch,
            frozenBackbone: { cut in
                let network = try Network(architecture: arch, weights: weights, cut: .cut(cut), pool: .avg,
                                          sourceName: "synthetic weights", options: engine)
                return try NetworkBackbone(network: network, selection: .cut(cut), weightsSHA256: "synthetic")
            },
            fineTuneWeights: { (weights, "synthetic weights") })
    }

    private func options() -> TransferBenchmarkOptions {
        var o = TransferBenchmarkOptions()
        o.heads = [.logreg]
        o.seeds = 1
        o.Cs = [1]
        o.extraction.batchSize = 4
        o.extraction.decoderThreads = 1
        return o
    }

    func testBothHalvesGiveConsistentRowsAndAReport() throws {
        let root = try TestData.tempDir("bench-run")
        defer { try? FileManager.default.removeItem(at: root) }
        let data = root.appendingPathComponent("data"), out = root.appendingPathComponent("report")
        try TestData.makeClassTree(data, prefix: "train", classes: ["a", "b"], perClass: 2)
        try TestData.makeClassTree(data, prefix: "val", classes: ["a", "b"], perClass: 2, seed: 5)
        let bench = TransferBenchmark(dataset: data, reportDirectory: out, options: options())
        var fineTune = FineTuneBenchmarkOptions()
        fineTune.depths = [0]
        fineTune.epochs = 1
        // Synthetic weights give large activations; a small rate keeps SGD finite on them.
        fineTune.learningRate = 0.001
        fineTune.engine = EngineOptions(threads: 1)

        let rows = try bench.run(network: syntheticNetwork(), cuts: [1], fineTune: fineTune)
        XCTAssertEqual(rows.map(\.setting), [.rawPixels, .frozen, .finetune])
        XCTAssertEqual(rows.map(\.label), ["raw-pixels logreg", "frozen cut 1 logreg", "finetune K=0"])
        XCTAssertEqual(bench.split?.testPaths.count, 4)

        let tuned = rows[2]
        XCTAssertEqual(tuned.head, "linear")
        XCTAssertEqual(tuned.unfrozen, 0)
        XCTAssertEqual(tuned.featureDimension, 1280, "K=0 trains the head on EfficientNet-Lite0's pooled 1280 features")
        XCTAssertEqual(tuned.accuracies.count, 1, "one fine-tuning run per seed")
        XCTAssertEqual(tuned.trainSeconds.count, 1)
        for a in tuned.accuracies { XCTAssertEqual((a * 4).rounded(), a * 4, accuracy: 1e-9, "accuracy over 4 test images") }
        // Seed 0's confusion matrix comes from a separate prediction pass over the test images; it must
        // count every test image once by its true class and agree with the accuracy training reported.
        XCTAssertEqual(tuned.confusion.map { $0.reduce(0, +) }, [2, 2])
        XCTAssertEqual(Double(tuned.confusion[0][0] + tuned.confusion[1][1]) / 4, tuned.accuracies[0], accuracy: 1e-12)
        XCTAssertGreaterThan(tuned.inferenceImagesPerSecond, 0)
        XCTAssertEqual(tuned.note, "frozen prefix: \(PrefixPath.recomputed.rawValue)", "flip + crop recomputes the prefix")

        let report = BenchmarkReport(rows: rows, classes: bench.classes, split: bench.split!, facts: [], notes: [fineTune.note])
        try report.write(to: out)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("report.json"))) as! [String: Any]
        let jsonRows = try XCTUnwrap(json["rows"] as? [[String: Any]])
        XCTAssertEqual(jsonRows.map { $0["setting"] as? String }, ["raw-pixels", "frozen", "finetune"])
        XCTAssertTrue(try String(contentsOf: out.appendingPathComponent("report.md"), encoding: .utf8)
            .contains("Fine-tuning recipe: SGD momentum 0.9, weight decay 1e-4, lr 0.001 cosine, batch 16, 1 epochs"))
    }

    func testFineTuningBeforeAnySplitIsRefused() throws {
        let root = try TestData.tempDir("bench-nosplit")
        defer { try? FileManager.default.removeItem(at: root) }
        try TestData.makeClassTree(root, classes: ["a", "b"], perClass: 2)
        let bench = TransferBenchmark(dataset: root, reportDirectory: root.appendingPathComponent("../bench-nosplit-out"), options: options())
        var fineTune = FineTuneBenchmarkOptions()
        fineTune.depths = [0]
        XCTAssertThrowsError(try bench.evaluateFineTuning(network: syntheticNetwork(), options: fineTune)) { error in
            guard case PipelineError.invalidDataset = error else { return XCTFail("\(error)") }
        }
    }

    func testArgmaxConfusionAndAutomaticDepths() throws {
        XCTAssertEqual(argmax([0.1, 3, -2, 3]), 1, "first maximum on ties")
        XCTAssertEqual(argmax([-5, -7]), 0)
        XCTAssertEqual(confusionMatrix(predicted: [0, 1, 1, 2], labels: [0, 0, 1, 2], classCount: 3),
                       [[1, 1, 0], [0, 1, 0], [0, 0, 1]])
        XCTAssertEqual(FineTuneBenchmarkOptions.automaticDepths(for: try ModelZoo.architecture("efficientnet-lite0").family), [0, 1, 2])
        XCTAssertEqual(FineTuneBenchmarkOptions.automaticDepths(for: try ModelZoo.architecture("resnet18").family), [0, 1, 2])
        XCTAssertEqual(FineTuneBenchmarkOptions.automaticDepths(for: try ModelZoo.architecture("vgg16").family), [0, 1, 2])
        XCTAssertEqual(FineTuneBenchmarkOptions().note.hasPrefix("Fine-tuning: not run"), true)
    }
}
