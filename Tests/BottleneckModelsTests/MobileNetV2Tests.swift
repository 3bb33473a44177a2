import BottleneckModels
import BottleneckTensor
import XCTest

/// MobileNetV2's structure against torchvision's (stage names, cut points, state-dict keys) and the
/// claim that its inverted residuals run on the fused MBConv kernel. Numerical parity at every cut is
/// ParityTests.testMobileNetV2Parity; real weights are in ClassifyTests.
final class MobileNetV2Tests: XCTestCase {
    func testStagesAndCutsFollowTorchvision() throws {
        let arch = try ModelZoo.architecture("mobilenet_v2")
        XCTAssertEqual(arch.presetName, "imagenet")
        XCTAssertEqual(arch.inputSize, 224)
        XCTAssertEqual(arch.stageNames, (0...18).map { "features.\($0)" } + ["avgpool", "classifier"])
        let shapes = arch.stageShapes(height: 224, width: 224)
        XCTAssertEqual(arch.stages[try arch.stageIndex(for: .cut(0))].name, "classifier")
        XCTAssertEqual(shapes[try arch.stageIndex(for: .cut(0))], .vector(1000))
        XCTAssertEqual(shapes[try arch.stageIndex(for: .cut(1))], .vector(1280))
        XCTAssertEqual(shapes[try arch.stageIndex(for: .cut(2))], .map(channels: 1280, height: 7, width: 7))
        XCTAssertEqual(shapes[try arch.stageIndex(for: .layer("features.0"))], .map(channels: 32, height: 112, width: 112))
        XCTAssertEqual(shapes[try arch.stageIndex(for: .layer("features.1"))], .map(channels: 16, height: 112, width: 112))
        XCTAssertEqual(shapes[try arch.stageIndex(for: .layer("features.13"))], .map(channels: 96, height: 14, width: 14))
        XCTAssertEqual(shapes[try arch.stageIndex(for: .layer("features.17"))], .map(channels: 320, height: 7, width: 7))
        // torchvision: 3,504,872 parameters; 300.8 M multiply-adds at 224 (convolutions and the classifier).
        XCTAssertEqual(arch.parameterCount, 3_504_872)
        XCTAssertEqual(Double(arch.flops(height: 224, width: 224)) / 2e6, 300.8, accuracy: 0.5)
    }

    /// State-dict keys as torchvision names them: expansion-1 block without an expand conv, the BN of
    /// a block's projection at `conv.3` (or `conv.2`), the last conv at `features.18`, `classifier.1`.
    func testStateDictKeys() throws {
        let params = try ModelZoo.architecture("mobilenet_v2").parameters
        let names = Set(params.map(\.name))
        // torchvision's state dict has 314 entries, 52 of them `num_batches_tracked` (one per BN).
        XCTAssertEqual(params.count, 314 - 52)
        for key in ["features.0.0.weight", "features.0.1.running_var", "features.1.conv.0.0.weight", "features.1.conv.0.1.bias",
                    "features.1.conv.1.weight", "features.1.conv.2.running_mean", "features.2.conv.0.0.weight",
                    "features.2.conv.1.0.weight", "features.2.conv.1.1.weight", "features.2.conv.2.weight",
                    "features.17.conv.3.running_var", "features.18.0.weight", "features.18.1.weight",
                    "classifier.1.weight", "classifier.1.bias"] {
            XCTAssertTrue(names.contains(key), key)
        }
        let shape = Dictionary(uniqueKeysWithValues: params.map { ($0.name, $0.shape) })
        XCTAssertEqual(shape["features.2.conv.1.0.weight"], [96, 1, 3, 3])
        XCTAssertEqual(shape["features.17.conv.2.weight"], [320, 960, 1, 1])
        XCTAssertEqual(shape["classifier.1.weight"], [1000, 1280])
        // The projection BN of a block with a skip connection gets the residual synthetic fill.
        XCTAssertEqual(params.first { $0.name == "features.3.conv.3.weight" }?.kind, .bnWeightResidual)
        XCTAssertEqual(params.first { $0.name == "features.2.conv.3.weight" }?.kind, .bnWeight)
    }

    /// The early blocks (with and without skip, stride 1 and 2, expansion 1 and 6) run as fused
    /// `InvertedResidual`s; layer times account for every multiply-add; and fused results equal the
    /// layer-by-layer ones.
    func testInvertedResidualsRunFused() throws {
        let net = try Network(syntheticModel: "mobilenet_v2", cut: .cut(1))
        let input = SyntheticFill.input(name: "mobilenet-fused", shape: [2, 3, 112, 112])
        net.recordStageTimes = true
        let fused = net.forward(input, batch: 2, height: 112, width: 112)
        let rows = Set(net.layerTimes.map(\.layer))
        // The stem runs fused into features.1 (no expansion), named after both.
        for row in ["conv 3x3/2 3->32 + mbconv 32->32->16 3x3/1 @112x112", "mbconv 16->96->24 3x3/2 @56x56", "mbconv 24->144->24 3x3/1 @28x28"] {
            XCTAssertTrue(rows.contains(row), "\(row) not among \(rows.sorted())")
        }
        XCTAssertEqual(net.layerTimes.reduce(0) { $0 + $1.flops }, 2 * net.flops(height: 112, width: 112))  // batch 2
        var layered = EngineOptions.default
        layered.fusedBlocks = false
        let unfused = try Network(syntheticModel: "mobilenet_v2", cut: .cut(1), options: layered)
            .forward(input, batch: 2, height: 112, width: 112)
        XCTAssertEqual(fused.count, 2 * 1280)
        let maxDiff = zip(fused, unfused).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThanOrEqual(maxDiff, 1e-5)
    }

    /// With fused blocks, the slice budget sees the stem's 112x112x32 output as the largest tensor,
    /// not features.2's 112x112x96 expansion, which the fused kernel never materialises.
    func testFusedBlocksLeaveExpandedTensorsOutOfTheBudget() throws {
        let arch = try ModelZoo.architecture("mobilenet_v2")
        XCTAssertEqual(arch.largestActivations(height: 224, width: 224).max(), 112 * 112 * 96)
        XCTAssertEqual(arch.largestActivations(height: 224, width: 224, fusedBlocks: true).max(), 112 * 112 * 32)
    }
}
