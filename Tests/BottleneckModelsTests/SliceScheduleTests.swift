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
}
