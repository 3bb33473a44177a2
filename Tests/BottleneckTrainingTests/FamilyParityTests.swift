import BottleneckCore
import BottleneckModels
import BottleneckTensor
import BottleneckTraining
import Foundation
import XCTest

/// Fine-tuning the trainable top of one network per family (ResNet-18, VGG-11, EfficientNet-Lite0) against
/// PyTorch autograd (fixtures `family_<model>.*` from Tests/Reference/training/make_family_grads.py, described
/// in FAMILY_FIXTURES.md there): the loss, the input gradient, every trainable parameter's gradient, and the
/// losses and parameters over three SGD steps.
///
/// The top is built as the product builds it (`TrainableTop`): `Architecture.fineTuningSplit(unfreeze:)` picks
/// the stages, `TrainingGraph` compiles them from the architecture's `LayerSpec`s with `SyntheticWeights` and
/// appends the head `head`; BatchNorm frozen (running statistics, affine terms trained), as `FineTuner` runs it
/// with `updateBatchNorm` off. Two things differ from a `TrainableTop`, both set by the fixture's definition:
/// the input side is the smallest one giving the fixture's prefix output (the graph is compiled for it instead
/// of the native resolution), and the head holds the synthetic fill of `head.weight`/`head.bias` instead of zeros.
///
/// Tolerance: per array `max|Δ| ≤ 1e-4 · max|ref|` (the 1e-4 relative criterion, as in
/// `GradientParityTests`); every gradient array's scale is ≥ 3e-3, so a gradient off by 0.1 % fails.
/// Large tensors are compared on the fixture's sampled indices (`SyntheticFill.sampleIndices`).
final class FamilyParityTests: XCTestCase {
    /// The fixture's index (`family_<model>.json`).
    struct Index: Decodable {
        struct SGDSettings: Decodable {
            let lr: Float, momentum: Float, weight_decay: Float
            let nesterov: Bool, same_batch_every_step: Bool
            let steps: Int
        }

        /// One parameter's slice of the concatenated `grads` / `after3` arrays.
        struct Entry: Decodable {
            let key: String, shape: [Int], offset: Int, count: Int
        }

        let model: String, prefix_stage: String
        /// The stages the script trains; the last entry is the new head.
        let trainable_stages: [String]
        let input_shape: [Int]
        let classes: Int, features: Int, sample: Int, total: Int
        let sgd: SGDSettings
        let parameters: [Entry]
    }

    /// Runs the family's fixture: `unfreeze` = the K whose split is the fixture's top, `side` = the square
    /// input resolution at which the prefix outputs the fixture's input shape.
    func check(model: String, unfreeze: Int, side: Int) throws {
        let name = "family_" + model
        let index = try JSONDecoder().decode(Index.self, from: Data(contentsOf: TrainingFixtures.url(name, extension: "json")))
        XCTAssertEqual(index.model, model)
        let arch = try ModelZoo.architecture(model)

        // The product's split must be the fixture's top.
        let split = try arch.fineTuningSplit(unfreeze: unfreeze)
        XCTAssertEqual(arch.stageNames[split.prefixStage], index.prefix_stage, "\(model): prefix stage")
        XCTAssertEqual(split.trainableStages.map { arch.stageNames[$0] }, Array(index.trainable_stages.dropLast()),
                       "\(model): trainable stages")
        let batch = index.input_shape[0]
        XCTAssertEqual([batch] + arch.stageShapes(height: side, width: side)[split.prefixStage].dimensions, index.input_shape,
                       "\(model): prefix output at \(side)x\(side)")

        let graph = try TrainingGraph(architecture: arch,
                                      stages: split.trainableStages.lowerBound...(split.trainableStages.upperBound - 1),
                                      weights: SyntheticWeights(architecture: arch), sourceName: "synthetic",
                                      head: ("head", index.classes), inputSize: side)
        XCTAssertEqual(graph.featureShape, .vector(index.features), "\(model): features")
        let head = try XCTUnwrap(graph.headParameters)
        head.weight.value = SyntheticFill.values(name: head.weight.name, kind: .weight, shape: head.weight.shape)
        head.bias.value = SyntheticFill.values(name: head.bias.name, kind: .bias, shape: head.bias.shape)
        graph.parametersDidChange()
        graph.training = true
        graph.updatesBatchStatistics = false
        graph.computesInputGradient = true

        // Every trainable parameter has a reference, and nothing else trains (BN running statistics stay buffers).
        let byName = Dictionary(uniqueKeysWithValues: graph.trainableParameters.map { ($0.name, $0) })
        XCTAssertEqual(Set(byName.keys), Set(index.parameters.map(\.key)), "\(model): trainable parameters")
        let references = try index.parameters.map { entry -> (Index.Entry, Parameter, [Int]) in
            let p = try XCTUnwrap(byName[entry.key], "\(model): no parameter \(entry.key)")
            XCTAssertEqual(p.shape, entry.shape, "\(model): \(entry.key) shape")
            let samples = SyntheticFill.sampleIndices(name: entry.key, count: p.value.count, k: index.sample)
            XCTAssertEqual(samples.count, entry.count, "\(model): \(entry.key) sample count")
            return (entry, p, samples)
        }
        /// Compares the sampled `values` of every parameter with the concatenated reference `ref`.
        func compare(_ ref: [Float], _ values: (Parameter) -> [Float], _ what: String) {
            XCTAssertEqual(ref.count, index.total, "\(model) \(what): reference length")
            for (entry, p, samples) in references where entry.offset + entry.count <= ref.count {
                let all = values(p)
                TrainingFixtures.assertClose(samples.map { all[$0] }, Array(ref[entry.offset..<(entry.offset + entry.count)]),
                                             tol: 1e-4, floor: 1e-6, "\(model) \(what) \(entry.key)")
            }
        }

        let input = try TrainingFixtures.load(name + ".input")
        let labels = try TrainingFixtures.load(name + ".labels").map { Int($0) }
        let sgd = index.sgd
        XCTAssertTrue(sgd.same_batch_every_step && !sgd.nesterov)
        let optimizer = SGD(parameters: graph.trainableParameters, learningRate: sgd.lr, momentum: sgd.momentum,
                            weightDecay: sgd.weight_decay, nesterov: sgd.nesterov)
        var losses: [Float] = []
        for step in 0..<sgd.steps {
            optimizer.zeroGrad()
            let logits = graph.forward(input, batch: batch)
            let (loss, dlogits) = try SoftmaxCrossEntropy.lossAndGradient(logits: logits, classes: index.classes, labels: labels)
            let dinput = try XCTUnwrap(graph.backward(dlogits))
            losses.append(Float(loss))
            if step == 0 {
                TrainingFixtures.assertClose([Float(loss)], try TrainingFixtures.load(name + ".loss"), tol: 1e-4, "\(model) loss")
                TrainingFixtures.assertClose(dinput, try TrainingFixtures.load(name + ".dinput"), tol: 1e-4, floor: 1e-6,
                                             "\(model) input gradient")
                compare(try TrainingFixtures.load(name + ".grads"), \.grad, "gradient")
            }
            optimizer.step()
            graph.parametersDidChange()
        }
        TrainingFixtures.assertClose(losses, try TrainingFixtures.load(name + ".losses"), tol: 1e-4, "\(model) losses of the SGD steps")
        compare(try TrainingFixtures.load(name + ".after3"), \.value, "after \(sgd.steps) SGD steps")
    }

    /// layer3 + layer4 (basic blocks, downsample shortcuts, residual-closing BN) + average pool + head.
    func testResNet18() throws { try check(model: "resnet18", unfreeze: 2, side: 48) }

    /// conv5_1, conv5_2 (biased convolutions), pool5, fc6 (adaptive pool 2x2 -> 7x7, NCHW flatten), fc7 + head.
    func testVGG11() throws { try check(model: "vgg11", unfreeze: 4, side: 64) }

    /// blocks.14 (MBConv with skip), blocks.15, head (1x1 + BN + ReLU6), average pool + head; TF-SAME padding.
    func testEfficientNetLite0() throws { try check(model: "efficientnet-lite0", unfreeze: 2, side: 128) }
}
