import Foundation
import XCTest
@testable import BottleneckTensor

/// `Conv2D.forward` may write its output over its residual (`Network` does so for a residual block's
/// last convolution): every path must then give exactly the results of a separate output buffer. The
/// 1x1 layers' tile-major order (`PackedGEMM.tileMajorBlock`, the default) must give exactly the
/// panel-major order's results, with and without a residual. Tolerance 0 throughout (same products,
/// same order). Paths: the 1x1 GEMM with one `k` slice and with several (the later slices accumulate
/// on the partial sums in the output, after the residual was consumed), the gathered 3x3 direct path
/// with 16- and 8-wide panels, the column-split GEMM of a batch-1 late layer, and Winograd's output
/// transform.
final class ResidualInPlaceTests: XCTestCase {
    func testOutputOverResidualMatchesSeparateBuffer() {
        let cases: [(n: Int, cin: Int, hw: Int, cout: Int, k: Int, algorithm: ConvolutionAlgorithm)] = [
            (2, 64, 9, 256, 1, .direct),     // ResNet-50's expanding 1x1, one k slice
            (1, 520, 5, 72, 1, .direct),     // three k slices (panel-major: k > 512), 16/16/16/16/8 panels
            (3, 264, 5, 40, 1, .direct),     // tile-major with a 16/16/8 panel split and a 3-row last tile
            (1, 512, 7, 2048, 1, .direct),   // batch-1 layer4: rows few, columns split over threads
            (2, 24, 10, 40, 3, .direct),     // gathered 3x3 patches, 16/16/8 panels
            (2, 16, 11, 32, 3, .winograd),   // ResNet-18's basic block: Winograd output transform
        ]
        for (i, c) in cases.enumerated() {
            let name = "inplace.\(i)"
            let layer = SyntheticConvolution(name: name, batch: c.n, height: c.hw, width: c.hw, inChannels: c.cin,
                                             outChannels: c.cout, kernel: c.k, padding: .symmetric(c.k / 2),
                                             activation: .relu, algorithm: c.algorithm)
            var panelMajor = EngineOptions.default
            panelMajor.tileMajor = false
            let separate = layer.forward(addsResidual: true, options: panelMajor)
            let plain = layer.forward(addsResidual: false, options: panelMajor)
            XCTAssertFalse(separate.contains { $0.isNaN } || plain.contains { $0.isNaN }, "\(name): output not fully written")
            for tileMajor in [true, false] {
                var options = EngineOptions.default
                options.tileMajor = tileMajor
                XCTAssertEqual(layer.forward(addsResidual: false, options: options), plain,
                               "\(name) (tile-major \(tileMajor)): differs from panel-major without a residual")
                XCTAssertEqual(layer.forwardOverResidual(options: options), separate,
                               "\(name) (tile-major \(tileMajor)): output over the residual differs from a separate buffer")
            }
        }
    }
}
