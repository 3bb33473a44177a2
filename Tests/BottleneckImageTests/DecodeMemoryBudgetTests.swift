import BottleneckCore
import BottleneckImage
import BottleneckTestSupport
import Foundation
import XCTest

/// Issue 27 finding 7: decoder memory is bounded as a whole by a budget shared across threads.
final class DecodeMemoryBudgetTests: XCTestCase {
    /// Samples the process's resident set size from /proc/self/statm every 500 µs on its own
    /// thread and keeps the largest value. Buffers of 32 MiB and more are mmapped by glibc and
    /// unmapped when freed, so for such buffers RSS follows live memory.
    final class PeakRSSSampler: @unchecked Sendable {
        private let lock = NSLock()
        private var peak = 0
        private var running = true
        private let done = DispatchSemaphore(value: 0)

        static func currentRSS() -> Int {
            guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
            let fields = text.split(separator: " ")
            return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
        }

        init() {
            peak = Self.currentRSS()
            Thread.detachNewThread { [self] in
                while true {
                    let rss = Self.currentRSS()
                    lock.lock()
                    peak = max(peak, rss)
                    let go = running
                    lock.unlock()
                    if !go { break }
                    usleep(500)
                }
                done.signal()
            }
        }

        /// Stops sampling and returns the peak RSS in bytes.
        func stop() -> Int {
            lock.lock(); running = false; lock.unlock()
            done.wait()
            lock.lock(); defer { lock.unlock() }
            return peak
        }
    }

    /// Writes `count` black 4000x4000 RGB PNGs (each ~300 KB, 96 MB to decode) into `dir`.
    func hugePNGs(_ count: Int, in dir: URL) throws -> [URL] {
        let png = Data(HostileImages.blackPNG(width: 4000, height: 4000))
        XCTAssertLessThan(png.count, 400_000)
        return try (0..<count).map { i in
            let url = dir.appendingPathComponent("huge-\(i).png")
            try png.write(to: url)
            return url
        }
    }

    /// Decodes every file on `threads` threads the way the extraction pipeline does (decode, use,
    /// drop, memory held until the image is released); returns the peak RSS growth and failures.
    func decodeConcurrently(_ files: [URL], threads: Int, budget: DecodeMemoryBudget) -> (grown: Int, failures: [String]) {
        let options = DecodeOptions(memoryBudget: budget).holdingMemoryUntilImageReleased
        let failures = Failures()
        let before = PeakRSSSampler.currentRSS()
        let sampler = PeakRSSSampler()
        // Real threads (concurrentPerform would run no more at once than there are cores).
        let group = DispatchGroup()
        for worker in 0..<threads {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                for i in stride(from: worker, to: files.count, by: threads) {
                    do {
                        let image = try ImageDecoder.decode(contentsOf: files[i], options: options)
                        if image.width != 4000 || image.pixels.first != 0 || image.pixels.last != 0 {
                            failures.add("\(files[i].lastPathComponent): wrong pixels")
                        }
                        usleep(20_000)  // the image is in use (preprocessing) for a while
                    } catch {
                        failures.add("\(error)")
                    }
                }
            }
        }
        group.wait()
        return (sampler.stop() - before, failures.items)
    }

    /// Eight PNGs of 16 megapixels each (96 MB per decode) on four threads with a 220 MiB budget:
    /// at most two decode at once, the budget's high-water mark stays within it, and so does the
    /// process's measured peak memory; the same work with an unlimited budget needs far more.
    func testConcurrentDecodesStayWithinSharedBudget() throws {
        let dir = try Mutations.scratchDirectory("budget")
        defer { try? FileManager.default.removeItem(at: dir) }
        let files = try hugePNGs(8, in: dir)
        let capacity = 220 << 20
        let budget = DecodeMemoryBudget(capacity: capacity)
        let limited = decodeConcurrently(files, threads: 4, budget: budget)
        XCTAssertEqual(limited.failures, [])
        XCTAssertLessThanOrEqual(budget.highWaterMark, capacity)
        XCTAssertGreaterThan(budget.highWaterMark, 96_000_000, "every decode reserves at least its output and libpng's buffer")
        XCTAssertGreaterThan(budget.waits, 0, "four threads never had to wait for each other")
        XCTAssertEqual(budget.reserved, 0, "every reservation was returned")
        XCTAssertLessThan(limited.grown, capacity + (32 << 20), "peak RSS grew by \(limited.grown >> 20) MiB with a \(capacity >> 20) MiB budget")

        // Control: without a binding budget the same work peaks well above it, so the bound above
        // is the budget's doing.
        let unlimited = DecodeMemoryBudget(capacity: Int.max)
        let free = decodeConcurrently(files, threads: 4, budget: unlimited)
        XCTAssertEqual(free.failures, [])
        XCTAssertGreaterThan(unlimited.highWaterMark, capacity)
        XCTAssertGreaterThan(free.grown, capacity + (32 << 20), "the workload does not need more than the budget")
        print("decode budget: peak RSS growth \(limited.grown >> 20) MiB with \(capacity >> 20) MiB budget, "
              + "\(free.grown >> 20) MiB unlimited (high-water \(unlimited.highWaterMark >> 20) MiB)")
    }

    /// The reservation (the decoder's memory estimate) covers what a decode really allocates, for
    /// each decoder path: a progressive JPEG (whole-image coefficient buffer), a CMYK JPEG (4-byte
    /// output plus RGB conversion), an EXIF-rotated JPEG (orientation copy), a PNG and a PPM.
    /// Sizes make every large buffer at least 32 MiB so that RSS follows live memory.
    func testReservationCoversMeasuredPeak() throws {
        func jpeg(_ file: String, _ w: Int, _ h: Int) throws -> Data {
            let bytes = [UInt8](try Data(contentsOf: try Fixture.url("decode", file)))
            return Data(HostileImages.settingJPEGFrameSize(bytes, width: w, height: h))
        }
        let cases: [(String, Data, pixels: Int)] = [
            ("progressive.jpg", try jpeg("jpeg_progressive.jpg", 4000, 3000), 4000 * 3000),
            ("cmyk.jpg", try jpeg("jpeg_cmyk.jpg", 3000, 3000), 3000 * 3000),
            ("orient6.jpg", try jpeg("jpeg_orient6.jpg", 4000, 3000), 4000 * 3000),
            ("black.png", Data(HostileImages.blackPNG(width: 4000, height: 3000)), 4000 * 3000),
            ("black.ppm", Data("P6\n4000 3000\n255\n".utf8) + Data(count: 4000 * 3000 * 3), 4000 * 3000),
        ]
        var report: [String] = []
        for (name, data, pixels) in cases {
            let budget = DecodeMemoryBudget(capacity: 1 << 30)
            let before = PeakRSSSampler.currentRSS()
            let sampler = PeakRSSSampler()
            var image: RGBImage? = try ImageDecoder.decode(data: data, name: name, options: DecodeOptions(memoryBudget: budget))
            let grown = sampler.stop() - before
            XCTAssertEqual(image?.pixels.count, pixels * 3, name)
            image = nil
            let reserved = budget.highWaterMark
            XCTAssertLessThanOrEqual(grown, reserved, "\(name): decoding grew RSS by \(grown >> 20) MiB, reserved \(reserved >> 20) MiB")
            report.append("\(name) \(grown >> 20)/\(reserved >> 20) MiB")
        }
        print("decode memory measured/reserved: \(report.joined(separator: ", "))")
    }

    /// An image that needs more than the whole budget is refused at once with a clear error.
    func testImageLargerThanWholeBudgetIsRefused() throws {
        let budget = DecodeMemoryBudget(capacity: 8 << 20)
        let png = Data(HostileImages.blackPNG(width: 2000, height: 1000))  // 6 MB output + 6 MB libpng rows
        XCTAssertThrowsError(try ImageDecoder.decode(data: png, name: "big.png", options: DecodeOptions(memoryBudget: budget))) {
            guard case .exceedsMemoryBudget(let path, let needed, let cap)? = $0 as? ImageDecodingError else { return XCTFail("\($0)") }
            XCTAssertEqual(path, "big.png")
            XCTAssertEqual(cap, 8 << 20)
            XCTAssertGreaterThan(needed, 12_000_000)
            XCTAssertTrue("\($0)".hasPrefix("big.png: decoding needs about "), "\($0)")
            XCTAssertTrue("\($0)".contains("more than the whole decode memory budget of 8 MiB"), "\($0)")
        }
        XCTAssertEqual(budget.reserved, 0)
        budget.capacity = 64 << 20
        XCTAssertEqual(try ImageDecoder.decode(data: png, name: "big.png", options: DecodeOptions(memoryBudget: budget)).width, 2000)
        XCTAssertEqual(budget.reserved, 0, "the default hold returns the memory when decode returns")
    }

    /// The image keeps its reservation under `untilImageReleased` and returns it with its last copy.
    func testReservationFollowsImageLifetime() throws {
        let budget = DecodeMemoryBudget(capacity: 64 << 20)
        let png = Data(HostileImages.blackPNG(width: 500, height: 400))
        let options = DecodeOptions(memoryBudget: budget).holdingMemoryUntilImageReleased
        var image: RGBImage? = try ImageDecoder.decode(data: png, name: "a.png", options: options)
        XCTAssertGreaterThan(budget.reserved, 500 * 400 * 3)
        var copy = image
        image = nil
        XCTAssertGreaterThan(budget.reserved, 0, "a copy still holds the memory")
        XCTAssertEqual(copy?.width, 500)
        copy = nil
        XCTAssertEqual(budget.reserved, 0)
    }

    /// Waiting reservations are granted in arrival order (a large one is not starved by small
    /// ones), a reservation larger than the capacity fails at once, and release is idempotent.
    func testBudgetIsFairAndRefusesOversize() throws {
        let budget = DecodeMemoryBudget(capacity: 100)
        XCTAssertThrowsError(try budget.reserve(101, for: "x")) {
            XCTAssertEqual($0 as? ImageDecodingError, .exceedsMemoryBudget(path: "x", needed: 101, budget: 100))
        }
        // first (50) is held; large (60) must wait; small (50) would fit next to first but arrived later.
        let first = try budget.reserve(50, for: "first")
        let order = Failures()
        let large = Thread { if let r = try? budget.reserve(60, for: "large") { order.add("large"); r.release() } }
        large.start()
        while budget.waits < 1 { usleep(1000) }
        let small = Thread { if let r = try? budget.reserve(50, for: "small") { order.add("small"); r.release() } }
        small.start()
        while budget.waits < 2 { usleep(1000) }
        usleep(50_000)
        XCTAssertEqual(order.items, [], "the small request overtook the waiting large one, or the large one did not wait")
        first.release()
        first.release()
        while order.items.count < 2 { usleep(1000) }
        // small (50) fits only once large (60) is released, which large does after recording itself.
        XCTAssertEqual(order.items, ["large", "small"])
        XCTAssertEqual(budget.reserved, 0)
        XCTAssertEqual(budget.highWaterMark, 60, "never more than one of first, large, small at once")
    }
}

/// Messages gathered from concurrent workers.
private final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var list: [String] = []
    func add(_ s: String) { lock.lock(); list.append(s); lock.unlock() }
    var items: [String] { lock.lock(); defer { lock.unlock() }; return list }
}
