import CBLAS
import Foundation
import Synchronization

/// How kernels run on threads: `WorkerPool`s (one per thread count, created on first use and kept
/// for the process) run the GEMMs, depthwise, pooling and element-wise kernels of a call with
/// `EngineOptions.threads` threads. Kernels run one at a time (each returns before the next
/// starts), so a network on T threads never has more than T busy threads.
public enum TensorThreads {
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
    static func run(pieces: Int, threads: Int, _ body: @escaping (Int) -> Void) {
        if threads <= 1 || pieces <= 1 || isSingleThreadedHere {
            for i in 0..<pieces { body(i) }
        } else {
            pool(threads: threads).run(pieces: pieces, body)
        }
    }

    /// Runs `body(i)` for every `i` in `0..<pieces` on the kernel pool's threads (the caller
    /// included), each piece with single-threaded kernels; returns when all are done.
    ///
    /// For work that splits into independent parts, such as the images of a batch: every thread
    /// runs whole parts with no synchronisation between layers, instead of all threads meeting at
    /// the end of every layer. Pieces are claimed dynamically, so make them several per thread
    /// or equal in size.
    public static func concurrentImages(pieces: Int, threads: Int, _ body: @escaping (Int) -> Void) {
        pool(threads: threads).run(pieces: pieces, patient: true) { piece in
            withSingleThreadedKernels { body(piece) }
        }
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

/// A fork-join pool for the kernels: `extraThreads` persistent workers plus the calling thread take
/// pieces of a job from one atomic counter.
///
/// A network's forward pass hands out hundreds of small jobs (one per layer, tens of microseconds
/// each at batch 1), so waking a sleeping thread per job (`DispatchQueue.concurrentPerform`) would
/// cost as much as the work. Idle workers therefore spin for a short while (`spinSeconds`) before
/// sleeping; the spin is bounded so that between forward passes they leave the cores to JPEG
/// decoders. Jobs from a second thread, or nested inside a job, run inline on the caller.
final class WorkerPool: @unchecked Sendable {
    /// Threads besides the caller.
    let extraThreads: Int
    /// How long an idle worker polls for the next job before sleeping.
    static let spinSeconds = 0.0005

    /// Generation (high 32 bits) and next piece index (low 32 bits) of the current job; one word so
    /// a late worker can never take a piece of a newer job with an older job's body. A low word of
    /// `closed` marks a job whose pieces are all done.
    private let ticket = Atomic<UInt64>(0)
    private static let closed: UInt64 = 0xFFFF_FFFF
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
        guard extraThreads > 0, count > 1,
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
        let generation = (ticket.load(ordering: .relaxed) >> 32) &+ 1
        ticket.store(generation << 32, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 { wake.lock(); wake.broadcast(); wake.unlock() }
        let done = takePieces(generation: generation, job: current, count: count)
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
        ticket.store(generation << 32 | Self.closed, ordering: .sequentiallyConsistent)
        waitUntil { self.readers.load(ordering: .sequentiallyConsistent) == 0 }
        job = nil
    }

    /// Spins until `condition` holds, yielding now and then: a worker preempted mid-piece (decoders
    /// share the cores) must get the CPU back.
    @inline(__always)
    private func waitUntil(_ condition: () -> Bool) {
        var spins = 0
        while !condition() {
            spins += 1
            if spins & 1023 == 0 { sched_yield() }
        }
    }

    /// Takes and runs pieces of job `generation` until none are left; returns how many it ran.
    private func takePieces(generation: UInt64, job: Job, count: Int) -> Int {
        var done = 0
        while true {
            let value = ticket.load(ordering: .acquiring)
            guard value >> 32 == generation else { break }
            let index = Int(value & 0xFFFF_FFFF)
            guard index < count else { break }
            guard ticket.compareExchange(expected: value, desired: value + 1, ordering: .acquiringAndReleasing).exchanged else {
                continue
            }
            job.body(index)
            done += 1
        }
        return done
    }

    private func workerLoop() {
        var seen: UInt64 = 0
        while !stopping.load(ordering: .relaxed) {
            var value = ticket.load(ordering: .acquiring)
            if value >> 32 == seen {
                let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(Self.spinSeconds * 1e9)
                var spins = 0
                while value >> 32 == seen {
                    spins += 1
                    if spins & 255 == 0 && DispatchTime.now().uptimeNanoseconds > deadline {
                        sleep(whileGeneration: seen)
                        if stopping.load(ordering: .relaxed) { return }
                    }
                    value = ticket.load(ordering: .acquiring)
                }
            }
            seen = value >> 32
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
        guard value >> 32 == generation, value & 0xFFFF_FFFF != Self.closed, let current = job else { return }
        let done = takePieces(generation: generation, job: current, count: pieces)
        guard done > 0 else { return }
        guard patient else { finished.add(done, ordering: .releasing); return }
        // Counted under the lock, so the sleeping caller cannot miss it between check and wait.
        completion.lock()
        finished.add(done, ordering: .releasing)
        completion.broadcast()
        completion.unlock()
    }

    private func sleep(whileGeneration generation: UInt64) {
        wake.lock()
        sleepers.add(1, ordering: .sequentiallyConsistent)
        while ticket.load(ordering: .sequentiallyConsistent) >> 32 == generation && !stopping.load(ordering: .relaxed) {
            wake.wait()
        }
        sleepers.subtract(1, ordering: .sequentiallyConsistent)
        wake.unlock()
    }
}
