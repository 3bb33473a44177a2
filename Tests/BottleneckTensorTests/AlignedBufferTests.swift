import XCTest
@testable import BottleneckTensor

/// Alignment and usability of `AlignedBuffer`'s small (64-byte) and huge-page (2 MiB) allocations.
final class AlignedBufferTests: XCTestCase {
    func testSmallBuffersAre64ByteAligned() {
        let buffer = AlignedBuffer.allocate(1000)
        defer { AlignedBuffer.free(buffer) }
        XCTAssertEqual(Int(bitPattern: buffer.baseAddress!) % 64, 0)
        XCTAssertEqual(buffer.count, 1000)
    }

    func testLargeBuffersAreHugePageAlignedAndWritableToTheEnd() {
        let count = (AlignedBuffer.hugePageBytes / 4) * 3 + 5    // not a whole number of 2 MiB pages
        let buffer = AlignedBuffer.allocate(count)
        defer { AlignedBuffer.free(buffer) }
        XCTAssertEqual(buffer.count, count)
        XCTAssertEqual(Int(bitPattern: buffer.baseAddress!) % AlignedBuffer.hugePageBytes, 0)
        for i in stride(from: 0, to: count, by: 4096) { buffer[i] = Float(i) }
        buffer[count - 1] = -1
        XCTAssertEqual(buffer[4096], 4096)
        XCTAssertEqual(buffer[count - 1], -1)
    }
}
