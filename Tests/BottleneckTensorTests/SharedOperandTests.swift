import Foundation
import XCTest
@testable import BottleneckTensor

/// When `PackedGEMM.run` splits a small product by columns as well as rows (few rows: batch-1 late
/// layers), it gathers the patches, or copies rows 4 KiB multiples apart, once for all column groups
/// (`sharesGatheredOperand`) instead of once per group. The results must be exactly those of the
/// per-group path (same products, same order: tolerance 0), with and without a residual.
final class SharedOperandTests: XCTestCase {
    func testSharedOperandMatchesPerGroupGathers() {
        let cases: [(cin: Int, hw: Int, cout: Int, k: Int, stride: Int)] = [
            (64, 14, 128, 3, 2),     // gathered 3x3 patches, stride 2: 49 rows, 8 column groups
            (20, 7, 40, 3, 1),       // gathered 3x3 patches, k = 180 (not a multiple of 16), 16/16/8 panels
            (128, 14, 256, 1, 2),    // 1x1 stride-2 downsample (gathered)
            (1024, 7, 64, 1, 1),     // 1x1 with rows 4 KiB apart (copied)
        ]
        let (perGroup, shared) = EngineOptions.offAndOn(\.sharedOperand, threads: 2)
        for (i, c) in cases.enumerated() {
            let name = "shared.\(i)"
            let layer = SyntheticConvolution(name: name, batch: 1, height: c.hw, width: c.hw, inChannels: c.cin,
                                             outChannels: c.cout, kernel: c.k, stride: c.stride,
                                             padding: .symmetric(c.k / 2), activation: .relu, algorithm: .direct)
            // The case must take the shared path: an operand the per-group path gathers or copies, and
            // fewer row blocks than workers want (so `run` splits the columns too).
            // (The operand is only classified here, never read through.)
            let (operand, pixels) = layer.input.withUnsafeBufferPointer {
                layer.conv.directOperand(input: $0.baseAddress!, height: c.hw, width: c.hw)
            }
            XCTAssertNotNil(PackedGEMM.sharedOperandStride(operand, k: layer.conv.weights.k, windowReads: shared.windowReads),
                            "\(name): no shared copy")
            XCTAssertLessThan(pixels, 4 * PackedGEMM.mBlock, "\(name): too many rows for a column split")
            layer.assertSameOutputs(perGroup, shared, name, "shared operand")
        }
    }
}
