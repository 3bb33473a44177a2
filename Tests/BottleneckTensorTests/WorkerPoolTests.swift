import Foundation
import XCTest
@testable import BottleneckTensor

/// The kernels' fork-join pool: every piece runs exactly once, back-to-back jobs never mix, and jobs
/// posted from a second thread or from inside a job run inline instead of deadlocking.
final class WorkerPoolTests: XCTestCase {
    func testEveryPieceRunsOnceAcrossManyJobs() {
        let pool = WorkerPool(extraThreads: 3)
        defer { pool.shutDown() }
        for job in 0..<2000 { assertEveryPieceRunsOnce(pool, job: job, pieces: 1 + job % 37, patient: false) }
    }

    /// Runs one job of `pieces` and checks that each piece ran exactly once before `run` returned.
    func assertEveryPieceRunsOnce(_ pool: WorkerPool, job: Int, pieces: Int, patient: Bool,
                                  file: StaticString = #filePath, line: UInt = #line) {
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: pieces)
        counts.initialize(repeating: 0, count: pieces)
        defer { counts.deallocate() }
        let countsAddress = UInt(bitPattern: counts)
        pool.run(pieces: pieces, patient: patient) { i in
            if patient && i % 3 == 1 { usleep(200) }   // workers finish after the caller runs out of pieces
            // Distinct pieces write distinct slots; a repeated piece would count 2.
            UnsafeMutablePointer<Int>(bitPattern: countsAddress)![i] += 1
        }
        for i in 0..<pieces where counts[i] != 1 {
            XCTFail("job \(job): piece \(i) ran \(counts[i]) times", file: file, line: line); break
        }
    }

    /// Patient jobs (the caller sleeps instead of spinning) mixed with ordinary ones: every piece
    /// still runs once, and the caller never returns before the workers' pieces are done.
    func testPatientJobsCompleteEveryPiece() {
        let pool = WorkerPool(extraThreads: 2)
        defer { pool.shutDown() }
        for job in 0..<500 { assertEveryPieceRunsOnce(pool, job: job, pieces: 1 + job % 9, patient: job % 2 == 0) }
    }

    /// `TensorThreads.concurrentImages` runs every item once, in ranges of the unit it is given, with
    /// kernels single-threaded inside (`EngineOptions.workers == 1`) and the full count outside.
    func testConcurrentImagesRunKernelsSerially() {
        let options = EngineOptions(threads: 2)
        let seen = Atomic(0), serial = Atomic(0), ranges = Atomic(0)
        TensorThreads.concurrentImages(count: 6, threads: options.threads, unit: { _ in 1 }) { range in
            ranges.add()
            for _ in range { seen.add() }
            if options.workers == 1 { serial.add() }
        }
        XCTAssertEqual(seen.value, 6)
        XCTAssertEqual(ranges.value, 6)
        XCTAssertEqual(serial.value, 6)
        XCTAssertEqual(options.workers, 2)
    }

    /// Ranges claimed by racing threads cover every item exactly once, each `unit(remaining)` long
    /// (clamped to what is left, at least 1), so a shrinking unit ends the job in single items.
    func testRangeClaimsCoverEveryItemOnceWithShrinkingUnits() {
        for count in [1, 2, 7, 32, 97] {
            let claims = RangeClaims(count: count, unit: { remaining in remaining / 4 })
            let collected = Collected()
            DispatchQueue.concurrentPerform(iterations: 4) { _ in
                while let range = claims.next() { collected.append(range) }
            }
            let claimed = collected.ranges.sorted { $0.lowerBound < $1.lowerBound }
            XCTAssertEqual(claimed.first?.lowerBound, 0, "count \(count)")
            XCTAssertEqual(claimed.last?.upperBound, count, "count \(count)")
            for (a, b) in zip(claimed, claimed.dropFirst()) { XCTAssertEqual(a.upperBound, b.lowerBound, "count \(count)") }
            for range in claimed {
                XCTAssertEqual(range.count, min(count - range.lowerBound, max(1, (count - range.lowerBound) / 4)), "count \(count)")
            }
            XCTAssertEqual(claimed.last?.count, 1, "count \(count): the job ends in a single item")
            XCTAssertNil(claims.next())
        }
    }

    /// Ranges appended from several threads.
    final class Collected: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: [Range<Int>] = []
        func append(_ range: Range<Int>) { lock.lock(); stored.append(range); lock.unlock() }
        var ranges: [Range<Int>] { lock.lock(); defer { lock.unlock() }; return stored }
    }

    /// Inside a pass (`beginPass`), an idle worker keeps spinning through gaps between jobs far
    /// longer than the idle spin instead of parking (giving its core away mid-pass); after the pass
    /// it parks. A pass that begins wakes parked workers.
    func testWorkersSpinThroughAPassAndParkAfterIt() {
        let pool = WorkerPool(extraThreads: 1)
        defer { pool.shutDown() }
        func waitFor(parked: Int, seconds: Double) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if pool.parkedWorkers == parked { return true }
                usleep(1000)
            }
            return pool.parkedWorkers == parked
        }
        XCTAssertTrue(waitFor(parked: 1, seconds: 5), "an idle worker parks after its short spin")
        pool.beginPass(spinSeconds: 10)
        XCTAssertTrue(waitFor(parked: 0, seconds: 5), "a pass wakes parked workers")
        for _ in 0..<5 {
            pool.run(pieces: 4) { _ in }
            usleep(20_000)   // 40x the idle spin
            XCTAssertEqual(pool.parkedWorkers, 0, "a worker parked within a pass")
        }
        pool.endPass()
        XCTAssertTrue(waitFor(parked: 1, seconds: 5), "the worker parks once the pass ends")
    }

    func testNestedAndConcurrentCallersRunInline() {
        let pool = WorkerPool(extraThreads: 1)
        defer { pool.shutDown() }
        let total = Atomic(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<200 {
                pool.run(pieces: 4) { _ in
                    pool.run(pieces: 3) { _ in total.add() }
                }
            }
        }
        XCTAssertEqual(total.value, 4 * 200 * 4 * 3)
    }

    /// A minimal lock-protected counter (the test only needs correctness, not speed).
    final class Atomic: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: Int
        init(_ value: Int) { stored = value }
        func add() { lock.lock(); stored += 1; lock.unlock() }
        var value: Int { lock.lock(); defer { lock.unlock() }; return stored }
    }

    /// Task counts rounded up to a whole number per thread, within the limit.
    func testWholeRoundsOfTasks() {
        XCTAssertEqual(TensorThreads.wholeRounds(3, times: 3, limit: 42, threads: 2), 4)     // 9 tasks -> 12
        XCTAssertEqual(TensorThreads.wholeRounds(9, times: 1, limit: 131, threads: 2), 10)
        XCTAssertEqual(TensorThreads.wholeRounds(3, times: 2, limit: 42, threads: 2), 3)     // already even
        XCTAssertEqual(TensorThreads.wholeRounds(5, times: 1, limit: 42, threads: 4), 8)
        XCTAssertEqual(TensorThreads.wholeRounds(3, times: 3, limit: 3, threads: 2), 3)      // no room: unchanged
        XCTAssertEqual(TensorThreads.wholeRounds(3, times: 3, limit: 42, threads: 1), 3)
    }
}
