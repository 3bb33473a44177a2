import BottleneckCore
import BottleneckTraining
import XCTest

final class AugmentationTests: XCTestCase {
    static func image(seed: UInt64, width: Int, height: Int) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        return (0..<(width * height * 3)).map { _ in UInt8(rng.next() >> 56) }
    }

    /// Raw 0...255 output (mean 0, std 1/255 undo the normalisation exactly enough for comparisons).
    static func resize(_ px: [UInt8], _ w: Int, _ h: Int, _ box: CropBox, _ size: Int, flip: Bool) -> [Float] {
        var out = [Float](repeating: 0, count: 3 * size * size)
        px.withUnsafeBufferPointer { p in
            out.withUnsafeMutableBufferPointer { o in
                Augment.resizedCrop(pixels: p, width: w, height: h, box: box, size: size, flip: flip,
                                    mean: [0, 0, 0], std: [1 / 255, 1 / 255, 1 / 255], into: o.baseAddress!)
            }
        }
        return out
    }

    /// Pillow BILINEAR resize of a box (Tests/Reference/training/make_augment.py). Tolerance 1.0 grey level:
    /// Pillow rounds to uint8 between its horizontal and vertical passes and at the end; this resampler does not.
    func testResizedCropMatchesPillow() throws {
        let px = Self.image(seed: 301, width: 41, height: 29)
        for (name, box, size) in [("augment_down", CropBox(top: 3, left: 5, height: 23, width: 31), 16),
                                  ("augment_up", CropBox(top: 4, left: 2, height: 7, width: 9), 20)] {
            let ref = try TrainingFixtures.load(name)  // HWC
            let chw = Self.resize(px, 41, 29, box, size, flip: false)
            var worst: Float = 0
            for y in 0..<size { for x in 0..<size { for c in 0..<3 {
                let d = abs(chw[c * size * size + y * size + x] - ref[(y * size + x) * 3 + c]); worst = d.isNaN ? .infinity : max(worst, d)
            } } }
            XCTAssertLessThanOrEqual(worst, 1.0, "\(name): max grey-level difference \(worst)")
        }
    }

    func testFlipMirrorsAndIdentityCopies() {
        let px = Self.image(seed: 7, width: 6, height: 5)
        let box = CropBox(top: 0, left: 0, height: 5, width: 6)
        // Same size in both directions: the filter is the identity, so the copy must be exact.
        let square = Self.image(seed: 7, width: 6, height: 6)
        let same = Self.resize(square, 6, 6, CropBox(top: 0, left: 0, height: 6, width: 6), 6, flip: false)
        for y in 0..<6 { for x in 0..<6 { for c in 0..<3 {
            XCTAssertEqual(same[c * 36 + y * 6 + x], Float(square[(y * 6 + x) * 3 + c]), accuracy: 1e-3)
        } } }
        let a = Self.resize(px, 6, 5, box, 4, flip: false)
        var b = Self.resize(px, 6, 5, box, 4, flip: true)
        b.withUnsafeMutableBufferPointer { Augment.flipHorizontally($0.baseAddress!, channels: 3, height: 4, width: 4) }
        for i in 0..<a.count { XCTAssertEqual(a[i], b[i], accuracy: 1e-4) }
    }

    func testRandomResizedCropBoxDistribution() {
        var rng = SplitMix64(seed: 11)
        var areas: [Double] = []
        for _ in 0..<2000 {
            let b = Augment.randomResizedCropBox(width: 500, height: 375, rng: &rng)
            XCTAssert(b.top >= 0 && b.left >= 0 && b.top + b.height <= 375 && b.left + b.width <= 500, "\(b)")
            let r = Double(b.width) / Double(b.height)
            XCTAssert(r > 0.7 && r < 1.4, "ratio \(r)")
            areas.append(Double(b.width * b.height) / (500 * 375))
        }
        XCTAssertGreaterThanOrEqual(areas.min()!, 0.07)
        // Mean area fraction of U(0.08, 1) ≈ 0.54, lowered a little by rejected large tries.
        let mean = areas.reduce(0, +) / Double(areas.count)
        XCTAssert(mean > 0.4 && mean < 0.6, "mean area fraction \(mean)")
        // Same seed, same boxes.
        var r1 = SplitMix64(seed: 3), r2 = SplitMix64(seed: 3)
        XCTAssertEqual(Augment.randomResizedCropBox(width: 50, height: 40, rng: &r1),
                       Augment.randomResizedCropBox(width: 50, height: 40, rng: &r2))
        // A 1000×10 strip never fits a ratio ≤ 4/3 crop of large area, so the fallback centred crop appears.
        var r3 = SplitMix64(seed: 5)
        let strip = Augment.randomResizedCropBox(width: 1000, height: 10, rng: &r3)
        XCTAssert(strip.width <= 1000 && strip.height <= 10)
    }

    func testParsing() throws {
        XCTAssertEqual(try AugmentationSet(parsing: "flip,crop"), [.flip, .crop])
        XCTAssertEqual(try AugmentationSet(parsing: "none"), [])
        XCTAssertThrowsError(try AugmentationSet(parsing: "rotate"))
    }
}
