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
    static var cpuHasAVX512: Bool {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        guard let flags = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
        return flags.split(separator: " ").contains("avx512f")
    }
}
