import XCTest
@testable import BottleneckTensor

/// `Layout`'s conversions against the index formulas, for the three-channel path every network
/// input takes and for the general one.
final class LayoutTests: XCTestCase {
    func testNCHWToNHWCAndBack() {
        for (n, c, h, w) in [(2, 3, 5, 7), (1, 3, 1, 1), (2, 5, 3, 4), (1, 1, 2, 3)] {
            let count = n * c * h * w
            let nchw = (0..<count).map { Float($0) * 0.5 - 3 }
            var nhwc = [Float](repeating: .nan, count: count), back = [Float](repeating: .nan, count: count)
            nchw.withUnsafeBufferPointer { s in nhwc.withUnsafeMutableBufferPointer { d in
                Layout.nchwToNhwc(s.baseAddress!, batch: n, channels: c, height: h, width: w, into: d.baseAddress!) } }
            for i in 0..<n { for ch in 0..<c { for y in 0..<h { for x in 0..<w {
                XCTAssertEqual(nhwc[((i * h + y) * w + x) * c + ch], nchw[((i * c + ch) * h + y) * w + x],
                               "n \(n) c \(c) h \(h) w \(w): element (\(i), \(ch), \(y), \(x))")
            } } } }
            nhwc.withUnsafeBufferPointer { s in back.withUnsafeMutableBufferPointer { d in
                Layout.nhwcToNchw(s.baseAddress!, batch: n, height: h, width: w, channels: c, into: d.baseAddress!) } }
            XCTAssertEqual(back, nchw, "n \(n) c \(c) h \(h) w \(w): round trip")
        }
    }
}
