/// The 64-byte block stream under MD5 and SHA-256 (both Merkle–Damgård hashes with 64-byte
/// blocks): whole blocks go straight to the hash's compression function, a partial one waits here;
/// `finish` appends the padding (0x80, zeros, the bit length in 8 bytes) and flushes.
struct HashBlocks: Sendable {
    /// Bytes fed so far.
    private(set) var length: UInt64 = 0
    private var pending: [UInt8] = []

    /// Feeds `data`, calling `compress` with each completed 64-byte block in order.
    mutating func feed(_ data: UnsafeRawBufferPointer, _ compress: (UnsafePointer<UInt8>) -> Void) {
        guard data.count > 0 else { return }
        length &+= UInt64(data.count)
        var p = data.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var n = data.count
        if !pending.isEmpty {
            let take = min(64 - pending.count, n)
            pending.append(contentsOf: UnsafeBufferPointer(start: p, count: take))
            p += take; n -= take
            if pending.count == 64 {
                pending.withUnsafeBufferPointer { compress($0.baseAddress!) }
                pending.removeAll(keepingCapacity: true)
            }
        }
        while n >= 64 { compress(p); p += 64; n -= 64 }
        if n > 0 { pending.append(contentsOf: UnsafeBufferPointer(start: p, count: n)) }
    }

    /// Pads the stream (bit length little-endian for MD5, big-endian for SHA-256) and compresses the
    /// last block(s). The stream is then complete.
    mutating func finish(bigEndianLength: Bool, _ compress: (UnsafePointer<UInt8>) -> Void) {
        let bitLength = length &* 8
        var pad: [UInt8] = [0x80]
        let rem = Int((length + 1) % 64)
        pad += [UInt8](repeating: 0, count: rem <= 56 ? 56 - rem : 120 - rem)
        let shifts: [UInt64] = bigEndianLength ? Array((0..<8).reversed()) : Array(0..<8)
        for i in shifts { pad.append(UInt8(truncatingIfNeeded: bitLength >> (i * 8))) }
        let saved = length
        pad.withUnsafeBytes { feed($0, compress) }
        length = saved
        precondition(pending.isEmpty)
    }
}

/// A hash built on `HashBlocks` (MD5, SHA-256): its compression function and the byte order of the
/// padding's length field; feeding and padding are shared here.
protocol BlockHash {
    var blocks: HashBlocks { get set }
    /// Whether the padding's bit length is big-endian (SHA-256) or little-endian (MD5).
    static var bigEndianLength: Bool { get }
    /// Folds one 64-byte block into the state.
    mutating func compress(_ block: UnsafePointer<UInt8>)
}

extension BlockHash {
    /// Feeds `data` through the block stream into `compress`.
    mutating func absorb(_ data: UnsafeRawBufferPointer) {
        var stream = blocks
        stream.feed(data) { compress($0) }
        blocks = stream
    }

    /// Pads and compresses the last block(s); the state then holds the digest.
    mutating func pad() {
        var stream = blocks
        stream.finish(bigEndianLength: Self.bigEndianLength) { compress($0) }
        blocks = stream
    }
}
