import BottleneckCore
import BottleneckTensor
import XCTest
@testable import BottleneckModels

/// Guided self-scheduling of image-parallel batches (`SliceSchedule.guidedUnit`).
final class SliceScheduleTests: XCTestCase {
    /// The units a batch is claimed in, one after another.
    func units(batch: Int, slice: Int, threads: Int, shares: Int) -> [Int] {
        var result: [Int] = [], remaining = batch
        while remaining > 0 {
            let unit = SliceSchedule.guidedUnit(remaining: remaining, slice: slice, threads: threads, shares: shares)
            XCTAssertTrue((1...slice).contains(unit))
            result.append(min(unit, remaining))
            remaining -= unit
        }
        return result
    }

    /// Units start as whole slices and shrink to single images at the end of the batch, so the
    /// last unit a slowed thread holds is one image (EfficientNet-Lite0 at 224 on two threads:
    /// slices of 5).
    func testUnitsShrinkToSingleImagesAtTheEnd() {
        XCTAssertEqual(units(batch: 32, slice: 5, threads: 2, shares: 2), [5, 5, 5, 5, 3, 3, 2, 1, 1, 1, 1])
        for (batch, slice, threads) in [(4, 1, 2), (8, 8, 2), (32, 5, 4), (100, 7, 3), (2, 9, 1)] {
            let sizes = units(batch: batch, slice: slice, threads: threads, shares: 2)
            XCTAssertEqual(sizes.reduce(0, +), batch)
            XCTAssertEqual(sizes, sizes.sorted(by: >), "units never grow")
            XCTAssertEqual(sizes.last, 1)
            XCTAssertLessThanOrEqual(sizes.max()!, slice)
        }
    }

    /// Outputs do not depend on how an image-parallel batch is cut into units: EfficientNet-Lite0 and
    /// MobileNetV2 (synthetic weights) at batch 13 on two threads, with units from whole slices down to
    /// single images, give the same bits as slices of one image each.
    func testUnitCompositionLeavesOutputsBitIdentical() throws {
        for model in ["efficientnet-lite0", "mobilenet_v2"] {
            let arch = try ModelZoo.architecture(model)
            let weights = SyntheticWeights(architecture: arch)
            var rng = SplitMix64(seed: 11)
            let side = 96, batch = 13
            let input = (0..<(batch * 3 * side * side)).map { _ in rng.nextSymmetric(scale: 2) }
            var outputs: [[Float]] = []
            for (shares, budget) in [(1, nil), (2, nil), (64, nil), (2, 1)] as [(Int, Int?)] {
                var options = EngineOptions(threads: 2)
                options.imageUnitShares = shares
                if let budget { options.sliceBudget = budget }   // slices of one image
                let net = try Network(architecture: arch, weights: weights, cut: .cut(1), options: options)
                XCTAssertTrue(net.runsImageParallel(batch: batch), "\(model): expected the image-parallel path")
                outputs.append(net.forward(input, batch: batch, height: side, width: side))
            }
            for (i, out) in outputs.enumerated().dropFirst() {
                XCTAssertEqual(out, outputs[0], "\(model): setting \(i) changed the output bits")
            }
        }
    }
}
