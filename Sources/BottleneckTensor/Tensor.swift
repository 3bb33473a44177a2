import Foundation

/// 64-byte aligned float allocations (posix_memalign semantics through Swift's aligned allocate).
/// Buffers of `hugePageBytes` or more are 2 MiB aligned, padded to whole 2 MiB pages and, on Linux,
/// marked `MADV_HUGEPAGE`: transparent huge pages are often opt-in (`enabled=madvise`, as on the
/// Debian machines here), and with 4 KiB pages a layer's weights (9.4 MB for ResNet-50's 512-channel
/// 3x3) span more pages than the L2 TLB maps (docs/ENGINE.md, "Memory").
package enum AlignedBuffer {
    /// Size from which a buffer asks for 2 MiB pages.
    package static let hugePageBytes = 2 << 20

    /// `count` floats, 64-byte aligned; from `hugePageBytes` on 2 MiB aligned and asking for huge
    /// pages unless `hugePages` is false (`EngineOptions.hugePages`).
    package static func allocate(_ count: Int, hugePages: Bool = true) -> UnsafeMutableBufferPointer<Float> {
        let bytes = max(1, count) * MemoryLayout<Float>.stride
        let raw: UnsafeMutableRawPointer
        if bytes >= hugePageBytes && hugePages {
            let rounded = (bytes + hugePageBytes - 1) / hugePageBytes * hugePageBytes
            raw = UnsafeMutableRawPointer.allocate(byteCount: rounded, alignment: hugePageBytes)
            #if os(Linux)
            _ = madvise(raw, rounded, MADV_HUGEPAGE)
            #endif
        } else {
            raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        }
        return UnsafeMutableBufferPointer(start: raw.bindMemory(to: Float.self, capacity: max(1, count)), count: count)
    }

    /// A 64-byte-aligned copy of `values` (release with ``free(_:)``).
    package static func copy(of values: [Float]) -> UnsafeMutableBufferPointer<Float> {
        let buffer = allocate(values.count)
        _ = buffer.initialize(from: values)
        return buffer
    }

    package static func free(_ buffer: UnsafeMutableBufferPointer<Float>) {
        UnsafeMutableRawPointer(buffer.baseAddress!).deallocate()
    }
}

/// A growable scratch buffer reused across calls: it only reallocates when a request exceeds its
/// current capacity, so steady-state inference does no allocation (and no page faults).
public final class Workspace: @unchecked Sendable {
    private var buffer: UnsafeMutableBufferPointer<Float>
    /// Whether growing asks for huge pages (`EngineOptions.hugePages`).
    private let hugePages: Bool

    /// Creates an empty workspace.
    public init(hugePages: Bool = true) {
        buffer = AlignedBuffer.allocate(0)
        self.hugePages = hugePages
    }
    deinit { AlignedBuffer.free(buffer) }

    /// Current capacity in floats.
    public var capacity: Int { buffer.count }

    /// A pointer to at least `count` floats; contents are unspecified. Invalidates earlier pointers
    /// when it has to grow.
    public func pointer(minimumCount count: Int) -> UnsafeMutablePointer<Float> {
        if count > buffer.count {
            AlignedBuffer.free(buffer)
            buffer = AlignedBuffer.allocate(count, hugePages: hugePages)
        }
        return buffer.baseAddress!
    }

    /// Releases the memory (the next request reallocates).
    public func release() {
        AlignedBuffer.free(buffer)
        buffer = AlignedBuffer.allocate(0)
    }
}

/// Per-task scratch for kernels that split work into tasks (`WinogradConvolution`, `InvertedResidual`),
/// reused across calls and layers: a small free list of
/// buffers (a couple per concurrently running task), each grown to the largest request it has
/// served. A request takes the smallest free buffer that fits (else the largest, regrown), so the
/// large and small requests of one kernel (Winograd's shared `V` and per-task `M`) keep separate buffers. Steady-state inference
/// therefore allocates nothing; the lock is held for a few instructions, twice per request.
enum KernelScratch {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var free: [UnsafeMutableBufferPointer<Float>] = []

    /// Runs `body` with at least `count` floats of 64-byte-aligned scratch (contents unspecified).
    static func with(count: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) {
        lock.lock()
        var pick = -1
        for i in free.indices {
            if pick < 0 { pick = i; continue }
            let fits = free[i].count >= count, pickFits = free[pick].count >= count
            // Smallest that fits; if none fits yet, the largest (least to regrow).
            if fits ? (!pickFits || free[i].count < free[pick].count) : (!pickFits && free[i].count > free[pick].count) {
                pick = i
            }
        }
        var buffer = pick >= 0 ? free.remove(at: pick) : nil
        lock.unlock()
        if let b = buffer, b.count < count { AlignedBuffer.free(b); buffer = nil }
        let scratch = buffer ?? AlignedBuffer.allocate(count)
        body(scratch.baseAddress!)
        lock.lock()
        free.append(scratch)
        lock.unlock()
    }
}
