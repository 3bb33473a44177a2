import Foundation

/// Chooses OpenBLAS's kernel set before the library initialises.
///
/// Debian's OpenBLAS 0.3.21 picks its Haswell (AVX2) kernels on AMD CPUs that have AVX-512,
/// halving sgemm throughput. The core type is read once, when the library loads, so setting
/// it from inside a running process does nothing: the CLI re-executes itself once with
/// `OPENBLAS_CORETYPE=SkylakeX` when the CPU has AVX-512 and the user has not chosen a core type.
enum BLASEnvironment {
    /// Re-executes the current process with the best core type if needed; returns when no
    /// re-exec is necessary (or if it failed, in which case the default kernels are used).
    static func ensureBestCoreType() {
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env["BOTTLENECK_NO_REEXEC"] == nil, cpuHasAVX512 else { return }
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1)
        setenv("BOTTLENECK_NO_REEXEC", "1", 1)  // never loop, even if exec fails half-way
        let args = CommandLine.arguments
        var cArgs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cArgs.append(nil)
        execv("/proc/self/exe", &cArgs)
        // execv only returns on failure: carry on with the kernels already loaded.
    }

    /// Whether /proc/cpuinfo lists the `avx512f` flag (false where the file is absent).
    static var cpuHasAVX512: Bool { cpuFlags?.contains("avx512f") ?? false }

    /// The CPU feature flags from /proc/cpuinfo (nil where the file is absent, e.g. macOS); read once,
    /// for both start-up checks.
    static let cpuFlags: Set<Substring>? = {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        guard let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        return Set(flags.split(separator: " "))
    }()

    /// Stops with an explanation when the binary was built for AVX2 + FMA (the x86-64 default, see
    /// Package.swift) and the CPU lacks them: better than an illegal-instruction crash mid-run.
    static func ensureSupportedCPU() {
        #if BOTTLENECK_AVX2
        guard let flags = cpuFlags, !(flags.contains("avx2") && flags.contains("fma")) else { return }
        FileHandle.standardError.write(Data("""
            error: this CPU has no AVX2/FMA, but bottleneck was built for them.
            Rebuild for this machine with: BOTTLENECK_PORTABLE=1 swift build -c release

            """.utf8))
        exit(1)
        #endif
    }
}
