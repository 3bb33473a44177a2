import Foundation

/// A memory budget shared by every thread that decodes images, so that decoder memory is bounded
/// as a whole rather than per thread.
///
/// Before allocating, a decode reserves its estimated peak (the file bytes it reads, the decoder
/// library's buffers, the output raster and any conversion or orientation copy) and releases it
/// when done.
/// A reservation that does not fit waits until other decodes release enough; one larger than the
/// whole capacity is refused at once with ``ImageDecodingError/exceedsMemoryBudget(path:needed:budget:)``.
/// Waiting cannot deadlock as long as reservations are released by code that always finishes,
/// which holds for the decoder's own reservations (see ``DecodeOptions/MemoryHold``).
///
/// Thread-safe (one condition variable guards all state).
public final class DecodeMemoryBudget: @unchecked Sendable {
    /// Default capacity of ``shared``: 2 GiB. The largest image the default pixel limit admits
    /// (200 megapixels) needs at most about 1.8 GB while decoding (a progressive three-component
    /// JPEG keeps 6 bytes of coefficients per pixel next to its 3-byte output; a PNG needs at most
    /// 7 bytes per pixel), so the defaults never refuse an image the pixel limit accepts, while
    /// any number of decoder threads together stay within one such image's worth of memory.
    public static let defaultCapacity = 2 << 30

    /// The budget every ``DecodeOptions`` uses unless given another one. Its capacity is
    /// ``defaultCapacity``; the command line sets it from `BOTTLENECK_DECODE_MEMORY`.
    public static let shared = DecodeMemoryBudget(capacity: defaultCapacity)

    private let condition = NSCondition()
    private var capacityBytes: Int
    private var reservedBytes = 0
    private var highWater = 0
    private var waitCount = 0
    /// Tickets of reservations waiting for room, oldest first: a waiting reservation is granted
    /// before any later one, so a large image is never starved by a stream of small ones.
    private var queue: [UInt64] = []
    private var nextTicket: UInt64 = 0

    /// Creates a budget of `capacity` bytes (at least 1).
    public init(capacity: Int) {
        capacityBytes = max(1, capacity)
    }

    /// The most bytes that may be reserved at once. Setting it wakes waiting decodes; reservations
    /// already granted are kept even if they now exceed it.
    public var capacity: Int {
        get { condition.lock(); defer { condition.unlock() }; return capacityBytes }
        set {
            condition.lock()
            capacityBytes = max(1, newValue)
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Bytes reserved right now.
    public var reserved: Int { condition.lock(); defer { condition.unlock() }; return reservedBytes }

    /// The most bytes ever reserved at once (since creation or ``resetStatistics()``).
    public var highWaterMark: Int { condition.lock(); defer { condition.unlock() }; return highWater }

    /// How many reservations had to wait for others to release memory.
    public var waits: Int { condition.lock(); defer { condition.unlock() }; return waitCount }

    /// Resets ``highWaterMark`` to the bytes reserved now and ``waits`` to 0.
    public func resetStatistics() {
        condition.lock()
        highWater = reservedBytes
        waitCount = 0
        condition.unlock()
    }

    /// Memory held against a budget; released once, by ``release()`` or when the last reference goes.
    public final class Reservation: @unchecked Sendable {
        /// The budget the bytes are held against.
        public let budget: DecodeMemoryBudget
        /// Bytes held.
        public let bytes: Int
        private let lock = NSLock()
        private var released = false

        fileprivate init(budget: DecodeMemoryBudget, bytes: Int) {
            self.budget = budget
            self.bytes = bytes
        }

        /// Returns the bytes to the budget; later calls do nothing.
        public func release() {
            lock.lock()
            let first = !released
            released = true
            lock.unlock()
            if first { budget.give(back: bytes) }
        }

        deinit { release() }
    }

    /// Reserves `bytes`, waiting while other reservations leave too little room; waiting requests
    /// are granted in arrival order.
    ///
    /// - Parameter path: the file the memory is for, named in the error.
    /// - Throws: ``ImageDecodingError/exceedsMemoryBudget(path:needed:budget:)`` when `bytes` exceeds
    ///   the whole capacity (it could never be granted).
    public func reserve(_ bytes: Int, for path: String) throws -> Reservation {
        let need = max(0, bytes)
        condition.lock()
        let ticket = nextTicket
        nextTicket &+= 1
        queue.append(ticket)
        var waited = false
        while true {
            if need > capacityBytes {
                let cap = capacityBytes
                queue.removeAll { $0 == ticket }
                condition.broadcast()
                condition.unlock()
                throw ImageDecodingError.exceedsMemoryBudget(path: path, needed: need, budget: cap)
            }
            if queue.first == ticket, need <= capacityBytes - reservedBytes { break }
            if !waited { waited = true; waitCount += 1 }
            condition.wait()
        }
        queue.removeFirst()
        condition.broadcast()  // the next in line may fit too
        reservedBytes += need
        highWater = max(highWater, reservedBytes)
        condition.unlock()
        return Reservation(budget: self, bytes: need)
    }

    private func give(back bytes: Int) {
        condition.lock()
        reservedBytes -= bytes
        condition.broadcast()
        condition.unlock()
    }
}
