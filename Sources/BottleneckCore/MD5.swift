import Foundation

/// MD5 (RFC 1321), used only to check downloads against checksums that publishers give as MD5
/// (torchvision's dataset tables). Not a security primitive on its own: where a SHA-256 is
/// known it is checked as well.
///
/// Streaming: call ``update(_:)`` with chunks, then ``finalize()``.
public struct MD5: Sendable, BlockHash {
    private var state: (UInt32, UInt32, UInt32, UInt32) = (0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476)
    var blocks = HashBlocks()
    static let bigEndianLength = false

    /// Per-round left-rotation amounts (RFC 1321, section 3.4).
    private static let shifts: [UInt32] = [7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                           5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
                                           4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                           6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21]
    /// floor(abs(sin(i + 1)) * 2^32), the RFC's table T.
    private static let k: [UInt32] = (0..<64).map { UInt32(truncatingIfNeeded: Int64(abs(sin(Double($0 + 1))) * 4_294_967_296.0)) }

    /// Creates an empty hasher.
    public init() {}

    /// Feeds bytes into the hash.
    public mutating func update(_ data: UnsafeRawBufferPointer) { absorb(data) }

    /// Feeds `Data` into the hash.
    public mutating func update(_ data: Data) { data.withUnsafeBytes { update($0) } }

    /// Finishes and returns the 16-byte digest as lowercase hex.
    public mutating func finalize() -> String {
        pad()
        let words = [state.0, state.1, state.2, state.3]
        return words.map { w in (0..<4).map { String(format: "%02x", (w >> (8 * UInt32($0))) & 0xFF) }.joined() }.joined()
    }

    /// Hex digest of `data`.
    public static func hex(_ data: Data) -> String { var m = MD5(); m.update(data); return m.finalize() }

    mutating func compress(_ p: UnsafePointer<UInt8>) {
        var m = [UInt32](repeating: 0, count: 16)
        for i in 0..<16 {
            m[i] = UInt32(p[4 * i]) | UInt32(p[4 * i + 1]) << 8 | UInt32(p[4 * i + 2]) << 16 | UInt32(p[4 * i + 3]) << 24
        }
        var (a, b, c, d) = state
        for i in 0..<64 {
            var f: UInt32
            let g: Int
            switch i {
            case 0..<16: f = (b & c) | (~b & d); g = i
            case 16..<32: f = (d & b) | (~d & c); g = (5 * i + 1) % 16
            case 32..<48: f = b ^ c ^ d; g = (3 * i + 5) % 16
            default: f = c ^ (b | ~d); g = (7 * i) % 16
            }
            f = f &+ a &+ MD5.k[i] &+ m[g]
            a = d; d = c; c = b
            let s = MD5.shifts[i]
            b = b &+ ((f << s) | (f >> (32 - s)))
        }
        state = (state.0 &+ a, state.1 &+ b, state.2 &+ c, state.3 &+ d)
    }
}
