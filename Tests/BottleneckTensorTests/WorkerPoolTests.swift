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

    /// `TensorThreads.concurrentImages` runs each piece once, with kernels single-threaded inside
    /// (`EngineOptions.workers == 1`) and the full count outside.
    func testConcurrentImagesRunKernelsSerially() {
        let options = EngineOptions(threads: 2)
        let seen = Atomic(0), serial = Atomic(0)
        TensorThreads.concurrentImages(pieces: 6, threads: options.threads) { _ in
            seen.add()
            if options.workers == 1 { serial.add() }
        }
        XCTAssertEqual(seen.value, 6)
        XCTAssertEqual(serial.value, 6)
        XCTAssertEqual(options.workers, 2)
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
