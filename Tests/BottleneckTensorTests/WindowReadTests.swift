import Foundation
import XCTest
@testable import BottleneckTensor

/// The GEMM's in-place window reads for few-channel convolutions (`PackedGEMM.windowBlock`, the
/// stem layers) must give exactly the gathered path's results (tolerance 0: same products, same
/// order). The torch fixtures `conv7x7_s2_p3` and `conv3x3_residual_relu` in `KernelParityTests`
/// also run through it; these shapes add maps large enough for interior micro-tiles next to padded
/// ones, 16/8 column panels, SAME padding, stride 2, residual, bias and both activations.
final class WindowReadTests: XCTestCase {
    func testWindowReadsMatchGatheredPatches() {
        let cases: [(n: Int, cin: Int, h: Int, w: Int, cout: Int, k: Int, stride: Int, padding: Padding,
                     activation: Activation, residual: Bool)] = [
            (2, 3, 23, 19, 24, 3, 2, .same, .relu6, true),          // Lite stem
            (1, 3, 30, 33, 64, 7, 2, .symmetric(3), .relu, false),  // ResNet stem
            (1, 4, 11, 13, 40, 3, 1, .symmetric(1), .none, true),   // VGG conv1_1-like, 16/16/8 panels
            (3, 2, 9, 7, 8, 5, 1, .symmetric(0), .relu, false),     // no padding at all
        ]
        for (i, c) in cases.enumerated() {
            let layer = SyntheticConvolution(name: "window.\(i)", batch: c.n, height: c.h, width: c.w, inChannels: c.cin,
                                             outChannels: c.cout, kernel: c.k, stride: c.stride, padding: c.padding,
                                             activation: c.activation)
            let outputs = [false, true].map { windowReads in
                var options = EngineOptions.default
                options.windowReads = windowReads
                return layer.forward(addsResidual: c.residual, options: options)
            }
            XCTAssertFalse(outputs[1].contains { $0.isNaN }, "case \(i): unwritten outputs")
            let mismatch = outputs[0].indices.first { outputs[0][$0] != outputs[1][$0] }
            XCTAssertNil(mismatch, "case \(i): window reads differ from gathered patches at element \(mismatch ?? -1)")
        }
    }
}
