import Foundation
import XCTest
@testable import BottleneckTensor

/// `TaperedPieces` (how `PackedGEMM.run` splits a product over threads when
/// `EngineOptions.taperedPieces` is on): every unit in exactly one piece, pieces shrinking toward the
/// caller's share's end, no piece across a segment boundary; and products split that way equal the
/// equal-piece split exactly (tolerance 0: the same sums in the same order).
final class TaperedPiecesTests: XCTestCase {
    func testPiecesShrinkTowardTheSharesMeeting() {
        let pieces = TaperedPieces(units: 72, threads: 2, largest: 9, segment: 72)
        XCTAssertEqual((0..<pieces.count).map { pieces.range($0).count }, [9, 9, 9, 5, 2, 1, 1, 1, 1, 2, 5, 9, 9, 9])
        // Three row blocks of 10 panels: pieces are cut where a block ends.
        let cut = TaperedPieces(units: 30, threads: 2, largest: 4, segment: 10)
        XCTAssertEqual(cut.bounds, [0, 4, 8, 10, 12, 14, 15, 16, 18, 20, 22, 26, 30])
    }

    func testPiecesCoverEveryUnitOnce() {
        for units in 1...90 {
            for threads in 1...4 {
                for largest in [1, 3, 8, 100] {
                    for segment in [1, 7, units] {
                        let p = TaperedPieces(units: units, threads: threads, largest: largest, segment: segment)
                        let where_ = "units \(units) threads \(threads) largest \(largest) segment \(segment)"
                        XCTAssertEqual(p.bounds.first, 0, where_)
                        XCTAssertEqual(p.bounds.last, units, where_)
                        for i in 0..<p.count {
                            let r = p.range(i)
                            XCTAssertFalse(r.isEmpty, where_)
                            XCTAssertLessThanOrEqual(r.count, largest, where_)
                            XCTAssertEqual(r.lowerBound / segment, (r.upperBound - 1) / segment, "\(where_): piece \(i) spans a segment")
                        }
                    }
                }
            }
        }
    }

    func testTaperedSplitMatchesEqualPieces() {
        // 1x1 at 7x7 (49 rows: columns only), 14x14 (196 rows: row blocks and column groups), 28x28
        // (784 rows: rows only), and a gathered 3x3 product.
        // Winograd: 56x56 (tile blocks only) and 14x14 (column groups) 3x3 layers. Weights of at least
        // half of L2 on more columns than rows take the group-order split: 1x1 1024->256 at 14x14.
        let cases: [(cin: Int, hw: Int, cout: Int, k: Int, algorithm: ConvolutionAlgorithm)] = [
            (192, 7, 1152, 1, .direct), (112, 14, 672, 1, .direct), (40, 28, 240, 1, .direct), (64, 14, 72, 3, .direct),
            (64, 56, 64, 3, .winograd), (256, 14, 256, 3, .winograd), (1024, 14, 256, 1, .direct),
            (3, 14, 5, 3, .direct),   // narrower than one panel: only the tail columns
        ]
        let (equal, tapered) = EngineOptions.offAndOn(\.taperedPieces, threads: 2)
        for (i, c) in cases.enumerated() {
            let name = "tapered.\(i)"
            let layer = SyntheticConvolution(name: name, batch: 1, height: c.hw, width: c.hw, inChannels: c.cin,
                                             outChannels: c.cout, kernel: c.k, stride: 1,
                                             padding: .symmetric(c.k / 2), activation: .relu6, algorithm: c.algorithm)
            layer.assertSameOutputs(equal, tapered, name, "tapered pieces")
        }
        // Narrow products in half-height row blocks (`narrowRowBlocks`): 1x1 to 112 and 64 columns at
        // 14x14 and 56x56, and a gathered 3x3 product to 128.
        let (wide, narrow) = EngineOptions.offAndOn(\.narrowRowBlocks, threads: 2)
        let narrowCases: [(cin: Int, hw: Int, cout: Int, k: Int)] = [(672, 14, 112, 1), (256, 56, 64, 1), (64, 28, 128, 3)]
        for (i, c) in narrowCases.enumerated() {
            let name = "narrow.\(i)"
            let layer = SyntheticConvolution(name: name, batch: 1, height: c.hw, width: c.hw, inChannels: c.cin,
                                             outChannels: c.cout, kernel: c.k, stride: 1,
                                             padding: .symmetric(c.k / 2), activation: .relu6, algorithm: .direct)
            layer.assertSameOutputs(wide, narrow, name, "narrow row blocks")
        }
    }
}
