import CBLAS
import CCacheHints
import Foundation
import Synchronization

/// How kernels run on threads: `WorkerPool`s (one per thread count, created on first use and kept
/// for the process) run the GEMMs, depthwise, pooling and element-wise kernels of a call with
/// `EngineOptions.threads` threads. Kernels run one at a time (each returns before the next
/// starts), so a network on T threads never has more than T busy threads.
public enum TensorThreads {
    /// Whether pool workers take a job's pieces from its back while the caller takes them from the
    /// front (`WorkerPool`). Process-wide switch, read as each worker joins a job; false: every thread
    /// takes pieces from the front (the same results; `bottleneck-microbench network-ab` compares the two).
    package static let twoEndedPieces = Atomic<Bool>(true)

    /// Pools by thread count (a cache of running threads, not configuration).
    private static let pools = Mutex<[Int: WorkerPool]>([:])

    /// Whether kernels started on the calling thread run inline (inside `concurrentImages` or
    /// `withSingleThreadedKernels`): `EngineOptions.workers` is then 1.
    public static var isSingleThreadedHere: Bool { pthread_getspecific(serialKey) != nil }

    /// Per-thread mark "kernels run inline here" (set by `withSingleThreadedKernels`, which every
    /// `concurrentImages` piece runs inside).
    private static let serialKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    /// The smallest `n` in `count...max(count, limit)` for which `n * multiplier` tasks give every
    /// one of `threads` threads the same number (else `count`). Tasks are claimed as threads come
    /// free, so 9 tasks of the same size on 2 threads keep one thread waiting for the other's fifth.
    static func wholeRounds(_ count: Int, times multiplier: Int, limit: Int, threads: Int) -> Int {
        guard threads > 1 else { return count }
        var n = count
        while n < limit && (n * multiplier) % threads != 0 { n += 1 }
        return (n * multiplier) % threads == 0 ? n : count
    }

    /// Runs `body(i)` for every `i` in `0..<pieces` on `threads` threads (the caller included), or
    /// inline on the caller when `threads` is 1 (see `EngineOptions.workers`) or there is only one
    /// piece (no hand-off cost). Pieces are claimed dynamically, so uneven pieces balance out.
    public static func run(pieces: Int, threads: Int, _ body: @escaping (Int) -> Void) {
        if threads <= 1 || pieces <= 1 || isSingleThreadedHere {
            for i in 0..<pieces { body(i) }
        } else {
            pool(threads: threads).run(pieces: pieces, body)
        }
    }

    /// Runs `body` on consecutive ranges covering `0..<count`, on the kernel pool's threads (the
    /// caller included), each range with single-threaded kernels; returns when all are done.
    ///
    /// For work that splits into independent parts, such as the images of a batch: every thread
    /// runs whole ranges with no synchronisation between layers, instead of all threads meeting at
    /// the end of every layer. Ranges are claimed in order as threads come free, and the next
    /// range's length is `unit(remaining)` for the `remaining` items not yet claimed (clamped to
    /// `1...remaining`), so a schedule whose units shrink with `remaining` ends the job in small
    /// pieces: a thread that lost its core then holds the others back by at most one small unit.
    public static func concurrentImages(count: Int, threads: Int, unit: @escaping (_ remaining: Int) -> Int,
                                        _ body: @escaping (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let claims = RangeClaims(count: count, unit: unit)
        // One piece per thread, each running ranges until none are left; a thread that comes late
        // finds its piece with nothing to claim.
        pool(threads: threads).run(pieces: max(1, threads), patient: true) { _ in
            withSingleThreadedKernels {
                while let range = claims.next() { body(range) }
            }
        }
    }

    /// Runs `body` as one forward pass of kernels on `threads` threads: while it runs, idle kernel
    /// threads spin (with the CPU's pause hint) for up to `spinSeconds` between jobs instead of
    /// parking after the short idle spin, so that mid-pass a core is not handed to another
    /// (e.g. low-priority) process and then waited for. Parked workers are woken when the pass
    /// starts. Inline (no effect) where kernels run single-threaded. Nests.
    public static func duringPass<T>(threads: Int, spinSeconds: Double, _ body: () throws -> T) rethrows -> T {
        guard threads > 1, !isSingleThreadedHere, spinSeconds > 0 else { return try body() }
        let pool = pool(threads: threads)
        pool.beginPass(spinSeconds: spinSeconds)
        defer { pool.endPass() }
        return try body()
    }

    /// Runs `body` on the calling thread with `isSingleThreadedHere` true: every kernel it calls runs inline,
    /// without the pool. Other threads are unaffected.
    ///
    /// For callers that bring their own threads, such as an extraction pipeline whose threads each
    /// decode a batch and run the network on it: with one worker per core and kernels inline, no
    /// core is asked to run two threads. Nests.
    public static func withSingleThreadedKernels<T>(_ body: () throws -> T) rethrows -> T {
        let previous = pthread_getspecific(serialKey)
        pthread_setspecific(serialKey, UnsafeRawPointer(bitPattern: 1))
        defer { pthread_setspecific(serialKey, previous) }
        return try body()
    }

    /// Sets OpenBLAS's (process-wide) thread count, used by `Linear` and the classifier heads.
    public static func configureBLAS(threads: Int) {
        openblas_set_num_threads(Int32(max(1, threads)))
    }

    /// The pool running `threads` threads (created on first use).
    static func pool(threads: Int) -> WorkerPool {
        pools.withLock { pools in
            if let pool = pools[threads] { return pool }
            let pool = WorkerPool(extraThreads: threads - 1)
            pools[threads] = pool
            return pool
        }
    }

    /// The OpenBLAS core type chosen when the library loaded (e.g. "Haswell", "SkylakeX").
    public static var blasCoreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }
}

/// Block `b` of `blocks` over `0..<count`, in whole granules of `granule` items evened out over the
/// blocks (196 items in 4 blocks of 6-item granules: 48, 48, 48, 52, not 54, 54, 54, 34); only the
/// last block's last granule may be partial.
@inline(__always)
func evenBlock(_ b: Int, of blocks: Int, count: Int, granule: Int) -> Range<Int> {
    let granules = (count + granule - 1) / granule
    return min(count, b * granules / blocks * granule)..<min(count, (b + 1) * granules / blocks * granule)
}

/// Pieces of a job of `units` equal work units (a product's row tiles or weight panels) for a
/// `WorkerPool`, in which the caller takes pieces from the front and the workers from the back: the
/// pieces shrink toward the unit where the caller's share (`units / threads`) ends, so the thread
/// that finishes first waits for at most a small piece of the other's, while a job still starts in
/// pieces of `largest` units (few hand-offs). A piece never spans a multiple of `segment` units
/// (a row block's panels, when the units are row blocks times panels).
///
/// For example 72 panels on 2 threads, `largest` 9: 9 9 9 5 2 1 1 | 1 1 2 5 9 9 9.
/// - Complexity: O(pieces) to build, about `units / largest + 2 log2(largest)` pieces plus segment cuts.
package struct TaperedPieces {
    /// `count + 1` increasing unit indices from 0 to `units`: piece `i` is `bounds[i]..<bounds[i + 1]`.
    let bounds: [Int]

    /// - Precondition: `units >= 1`, `threads >= 1`, `largest >= 1`, `segment >= 1`.
    init(units: Int, threads: Int, largest: Int, segment: Int) {
        let meet = max(1, min(units, (units + threads / 2) / threads))
        // Lengths of the pieces covering `length` units: each half of what is left (at most `largest`,
        // at least 1), so they shrink toward the far end.
        func lengths(_ length: Int) -> [Int] {
            var out: [Int] = [], left = length
            while left > 0 {
                let piece = min(largest, max(1, (left + 1) / 2), left)
                out.append(piece); left -= piece
            }
            return out
        }
        var bounds = [0]
        for piece in lengths(meet) { bounds.append(bounds.last! + piece) }
        for piece in lengths(units - meet).reversed() { bounds.append(bounds.last! + piece) }
        // Cut pieces that straddle a segment boundary.
        var cut = [0]
        for b in bounds.dropFirst() {
            var next = (cut.last! / segment + 1) * segment
            while next < b { cut.append(next); next += segment }
            cut.append(b)
        }
        self.bounds = cut
    }

    /// Number of pieces.
    var count: Int { bounds.count - 1 }

    /// Units of piece `i`.
    @inline(__always)
    func range(_ i: Int) -> Range<Int> { bounds[i]..<bounds[i + 1] }
}

/// The tasks of a product of `rows` rows (in granules of `granule`: GEMM micro-tiles, or Winograd's
/// six-tile groups) by `panels` weight panels, split over `threads` threads: `blocks` row blocks
/// (`evenBlock`) by `groups` column groups, numbered in row order, or group by group with
/// `groupMajor`. With `tapered` (`TaperedPieces`), pieces shrink toward where the caller's share
/// (taken from the front) meets the workers' (taken from the back): granules of all panels when only
/// rows are split; panels of one row block in row order; row blocks of tapered column groups in group
/// order. Every row and panel is in exactly one task; a task's panels may be empty only when `panels`
/// is 0 (a product narrower than one panel).
struct ProductTasks {
    /// Number of tasks.
    let count: Int
    /// Rows and panels of task `i`.
    let range: (Int) -> (rows: Range<Int>, panels: Range<Int>)

    init(rows: Int, granule: Int, blocks: Int, groups: Int, panels: Int, groupMajor: Bool, threads: Int, tapered: Bool) {
        @inline(__always) func blockRows(_ b: Int) -> Range<Int> { evenBlock(b, of: blocks, count: rows, granule: granule) }
        guard tapered && threads > 1 && blocks * groups > 1 else {
            count = blocks * groups
            range = { task in
                let b = groupMajor ? task % blocks : task / groups
                let g = groupMajor ? task / blocks : task - b * groups
                return (blockRows(b), g * panels / groups..<(g + 1) * panels / groups)
            }
            return
        }
        let largestGroup = (panels + groups - 1) / groups
        if groups == 1 {
            let granules = (rows + granule - 1) / granule
            let pieces = TaperedPieces(units: granules, threads: threads, largest: (granules + blocks - 1) / blocks, segment: granules)
            count = pieces.count
            range = { i in let u = pieces.range(i); return (u.lowerBound * granule..<min(rows, u.upperBound * granule), 0..<panels) }
        } else if groupMajor {
            let columnGroups = TaperedPieces(units: panels, threads: threads, largest: largestGroup, segment: panels)
            count = columnGroups.count * blocks
            range = { i in (blockRows(i % blocks), columnGroups.range(i / blocks)) }
        } else {
            let pieces = TaperedPieces(units: blocks * panels, threads: threads, largest: largestGroup, segment: panels)
            count = pieces.count
            range = { i in
                let u = pieces.range(i), b = u.lowerBound / panels
                return (blockRows(b), (u.lowerBound - b * panels)..<(u.upperBound - b * panels))
            }
        }
    }
}

/// Splits `0..<count` into at most `threads * 4` contiguous ranges of at least `grain` items and
/// runs `body` on them in parallel; runs inline when one range suffices (no hand-off cost for small
/// layers).
@inline(__always)
func parallelRanges(_ count: Int, grain: Int = 1, threads: Int, _ body: @escaping (Range<Int>) -> Void) {
    if count <= 0 { return }
    let workers = min(threads, max(1, count / max(1, grain)))
    if workers <= 1 { body(0..<count); return }
    // More pieces than workers evens out imbalance between uneven rows.
    let pieces = min(count, workers * 4)
    TensorThreads.run(pieces: pieces, threads: threads) { i in
        let lo = i * count / pieces, hi = (i + 1) * count / pieces
        if lo < hi { body(lo..<hi) }
    }
}

/// Consecutive ranges of `0..<count` handed out to whichever thread asks first (one atomic cursor).
final class RangeClaims: @unchecked Sendable {
    let count: Int
    /// Length of the next range for the number of items not yet claimed.
    private let unit: (Int) -> Int
    private let cursor = Atomic<Int>(0)

    init(count: Int, unit: @escaping (Int) -> Int) {
        self.count = count
        self.unit = unit
    }

    /// The next unclaimed range, `unit(remaining)` long (clamped to `1...remaining`), or nil when
    /// every item has been claimed. Each item is in exactly one returned range.
    func next() -> Range<Int>? {
        var start = cursor.load(ordering: .relaxed)
        while start < count {
            let length = min(count - start, max(1, unit(count - start)))
            let (exchanged, current) = cursor.compareExchange(expected: start, desired: start + length,
                                                              ordering: .relaxed)
            if exchanged { return start..<(start + length) }
            start = current
        }
        return nil
    }
}

/// A fork-join pool for the kernels: `extraThreads` persistent workers plus the calling thread take
/// pieces of a job from one atomic counter.
///
/// A network's forward pass hands out hundreds of small jobs (one per layer, tens of microseconds
/// each at batch 1), so waking a sleeping thread per job (`DispatchQueue.concurrentPerform`) would
/// cost as much as the work. Idle workers therefore spin (with the CPU's pause hint) before
/// parking: outside a pass for `idleSpinSeconds`, so that between forward passes they leave the
/// cores to JPEG decoders; inside a pass (`beginPass`) for that pass's spin time, so that a core is
/// not given away to another process between two layers. Jobs from a second thread, or nested
/// inside a job, run inline on the caller.
final class WorkerPool: @unchecked Sendable {
    /// Threads besides the caller.
    let extraThreads: Int
    /// How long an idle worker spins for the next job outside a pass before parking: longer than
    /// the gap between two jobs of one caller, short enough to leave the core to decoders soon.
    static let idleSpinSeconds = 0.0005

    /// Open passes (`beginPass`/`endPass`, nesting) and the spin time of the latest one, in ns.
    private let openPasses = Atomic<Int>(0)
    private let passSpinNanoseconds = Atomic<UInt64>(0)
    /// Counts `beginPass` calls: a parked worker wakes when it changes, to spin through the pass.
    private let passEpoch = Atomic<UInt64>(0)

    /// The current job's generation (high 16 bits) and the pieces taken from its front (next 24
    /// bits) and from its back (low 24 bits); one word so a late worker can never take a piece of a
    /// newer job with an older job's body. Both counts at `closed` mark a job whose pieces are all done.
    ///
    /// The caller takes pieces from the front (0, 1, ...), the workers from the back (n - 1, ...),
    /// until they meet. Consecutive layers split the same way then leave each thread mostly the rows
    /// it wrote itself in the layer before, still in its own core's L2, while a thread that falls
    /// behind is still covered by the other taking more pieces. With `TensorThreads.twoEndedPieces`
    /// false, every thread takes pieces from the front.
    private let ticket = Atomic<UInt64>(0)
    private static let countBits: UInt64 = 24, countMask: UInt64 = (1 << 24) - 1
    private static let closed: UInt64 = countMask << countBits | countMask
    /// The generation in a ticket word.
    @inline(__always) private static func generation(of value: UInt64) -> UInt64 { value >> (2 * countBits) }
    private let finished = Atomic<Int>(0)
    /// Workers currently holding a reference to `job`; the caller clears `job` only when this is 0.
    private let readers = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let wake = NSCondition()
    /// Signalled when a worker finishes pieces of a patient job (see `run`).
    private let completion = NSCondition()
    // Written by the caller before the ticket is published, read by workers registered in `readers`.
    nonisolated(unsafe) private var job: Job?
    nonisolated(unsafe) private var pieces = 0
    nonisolated(unsafe) private var patient = false

    private final class Job {
        let body: (Int) -> Void
        init(_ body: @escaping (Int) -> Void) { self.body = body }
    }

    init(extraThreads: Int) {
        self.extraThreads = max(0, extraThreads)
        for i in 0..<self.extraThreads {
            let thread = Thread { self.workerLoop() }
            thread.name = "bottleneck-kernel-\(i + 1)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Starts a forward pass: until the matching `endPass`, idle workers spin up to `spinSeconds`
    /// between jobs before parking. Wakes parked workers.
    func beginPass(spinSeconds: Double) {
        passSpinNanoseconds.store(UInt64(max(0, spinSeconds) * 1e9), ordering: .relaxed)
        openPasses.add(1, ordering: .sequentiallyConsistent)
        passEpoch.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 { wake.lock(); wake.broadcast(); wake.unlock() }
    }

    /// Ends the pass `beginPass` started.
    func endPass() {
        openPasses.subtract(1, ordering: .sequentiallyConsistent)
    }

    /// Workers parked now (for tests).
    var parkedWorkers: Int { sleepers.load(ordering: .sequentiallyConsistent) }

    /// Whether a pass is open (see `beginPass`).
    private var inPass: Bool { openPasses.load(ordering: .relaxed) > 0 }

    /// How long an idle worker spins now before parking, in ns.
    private var spinNanoseconds: UInt64 {
        inPass ? max(passSpinNanoseconds.load(ordering: .relaxed), UInt64(Self.idleSpinSeconds * 1e9))
            : UInt64(Self.idleSpinSeconds * 1e9)
    }

    /// Asks the workers to exit (they finish the current job first).
    func shutDown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        wake.lock(); wake.broadcast(); wake.unlock()
    }

    /// Runs `body(i)` for every `i` in `0..<pieces`, spread over the workers and the caller; returns
    /// when all have finished. A caller left without pieces spins until the others finish, unless
    /// the job is `patient` (pieces of many milliseconds): then it sleeps, leaving its core to other
    /// threads (decoders) meanwhile.
    func run(pieces count: Int, patient: Bool = false, _ body: @escaping (Int) -> Void) {
        guard extraThreads > 0, count > 1, UInt64(count) < Self.countMask,
              busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for i in 0..<count { body(i) }
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        let current = Job(body)
        job = current
        pieces = count
        self.patient = patient
        finished.store(0, ordering: .relaxed)
        let generation = (Self.generation(of: ticket.load(ordering: .relaxed)) &+ 1) & 0xFFFF
        ticket.store(generation << (2 * Self.countBits), ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 { wake.lock(); wake.broadcast(); wake.unlock() }
        let done = takePieces(generation: generation, job: current, count: count, fromBack: false)
        if done < count {
            finished.add(done, ordering: .releasing)
            if patient {
                completion.lock()
                while finished.load(ordering: .acquiring) < count { completion.wait() }
                completion.unlock()
            } else {
                waitUntil { self.finished.load(ordering: .acquiring) >= count }
            }
        }
        ticket.store(generation << (2 * Self.countBits) | Self.closed, ordering: .sequentiallyConsistent)
        waitUntil { self.readers.load(ordering: .sequentiallyConsistent) == 0 }
        job = nil
    }

    /// Spins until `condition` holds, with the CPU's pause hint, yielding now and then: a worker
    /// preempted mid-piece (decoders share the cores) must get the CPU back. Inside a pass it
    /// yields 64 times less often (every few milliseconds): a yield can hand the core to a
    /// low-priority process for a whole scheduler slice.
    @inline(__always)
    private func waitUntil(_ condition: () -> Bool) {
        let yieldMask = inPass ? (1 << 16) - 1 : 1023
        var spins = 0
        while !condition() {
            bottleneck_spin_pause()
            spins += 1
            if spins & yieldMask == 0 { sched_yield() }
        }
    }

    /// Takes and runs pieces of job `generation` until none are left, from the front of the job or
    /// from its back (see `ticket`); returns how many it ran.
    private func takePieces(generation: UInt64, job: Job, count: Int, fromBack: Bool) -> Int {
        var done = 0
        let step: UInt64 = fromBack ? 1 : 1 << Self.countBits
        while true {
            let value = ticket.load(ordering: .acquiring)
            guard Self.generation(of: value) == generation else { break }
            let front = Int(value >> Self.countBits & Self.countMask), back = Int(value & Self.countMask)
            guard front + back < count else { break }
            guard ticket.compareExchange(expected: value, desired: value + step, ordering: .acquiringAndReleasing).exchanged else {
                continue
            }
            job.body(fromBack ? count - 1 - back : front)
            done += 1
        }
        return done
    }

    private func workerLoop() {
        var seen: UInt64 = 0
        while !stopping.load(ordering: .relaxed) {
            var value = ticket.load(ordering: .acquiring)
            if Self.generation(of: value) == seen {
                var idleSince = DispatchTime.now().uptimeNanoseconds
                var spins = 0
                while Self.generation(of: value) == seen {
                    bottleneck_spin_pause()
                    spins += 1
                    if spins & 255 == 0 {
                        let now = DispatchTime.now().uptimeNanoseconds
                        if now - idleSince > spinNanoseconds {
                            sleep(whileGeneration: seen)
                            if stopping.load(ordering: .relaxed) { return }
                            idleSince = DispatchTime.now().uptimeNanoseconds
                        }
                    }
                    value = ticket.load(ordering: .acquiring)
                }
            }
            seen = Self.generation(of: value)
            readers.add(1, ordering: .sequentiallyConsistent)
            joinCurrentJob(generation: seen)
            readers.subtract(1, ordering: .sequentiallyConsistent)
        }
    }

    /// Runs pieces of the published job if it is still job `generation` and open, and counts them in
    /// `finished` (waking the caller of a patient job). Kept out of line so the job reference is
    /// released before the caller leaves `readers`.
    @inline(never)
    private func joinCurrentJob(generation: UInt64) {
        let value = ticket.load(ordering: .sequentiallyConsistent)
        guard Self.generation(of: value) == generation, value & Self.closed != Self.closed, let current = job else { return }
        let done = takePieces(generation: generation, job: current, count: pieces,
                              fromBack: TensorThreads.twoEndedPieces.load(ordering: .relaxed))
        guard done > 0 else { return }
        guard patient else { finished.add(done, ordering: .releasing); return }
        // Counted under the lock, so the sleeping caller cannot miss it between check and wait.
        completion.lock()
        finished.add(done, ordering: .releasing)
        completion.broadcast()
        completion.unlock()
    }

    /// Parks until a job newer than `generation` is published, a pass begins, or the pool stops.
    private func sleep(whileGeneration generation: UInt64) {
        wake.lock()
        let epoch = passEpoch.load(ordering: .sequentiallyConsistent)
        sleepers.add(1, ordering: .sequentiallyConsistent)
        while Self.generation(of: ticket.load(ordering: .sequentiallyConsistent)) == generation
                && passEpoch.load(ordering: .sequentiallyConsistent) == epoch && !stopping.load(ordering: .relaxed) {
            wake.wait()
        }
        sleepers.subtract(1, ordering: .sequentiallyConsistent)
        wake.unlock()
    }
}
