import ArgumentParser
import BottleneckCore
import BottleneckImage
import Foundation

/// `bottleneck preprocess`: one image to a network input tensor, or a decode+preprocess benchmark.
struct PreprocessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "preprocess",
        abstract: "Decode an image and write the normalized network input tensor (1x3xCxC float32 .npy).",
        discussion: """
            The tensor equals torchvision's Resize(S) + CenterCrop(C) + ToTensor() + Normalize(mean, std) on ImageOps.exif_transpose(Image.open(IMG)).convert("RGB").

            With --bench DIR, every JPEG/PNG/PPM under DIR is decoded and preprocessed (images/s printed); add --fast-decode to also time the reduced-DCT JPEG path and report its tensor difference.
            """)

    @Argument(help: "The image to preprocess (omit with --bench).")
    var image: String?

    @Option(help: "Preprocessing preset.")
    var preset: PreprocessPreset = .imagenet

    @Option(help: "Output .npy path for the 1x3xCxC float32 tensor.")
    var out: String?

    @Flag(help: "Decode large JPEGs at 1/2, 1/4 or 1/8 DCT scale while the shorter side stays >= the resize target (faster, not bit-exact).")
    var fastDecode = false

    @Option(help: "Benchmark mode: decode+preprocess every image under this directory.")
    var bench: String?

    @Option(help: "Benchmark worker threads.")
    var threads = 2

    @Option(help: "Benchmark passes over the directory (the best pass is reported).")
    var repeats = 3

    @OptionGroup var limits: DecodeLimitOptions

    func validate() throws {
        if bench != nil {
            guard image == nil, out == nil else { throw ValidationError("--bench takes a directory instead of IMG and --out.") }
            guard threads >= 1, repeats >= 1 else { throw ValidationError("--threads and --repeats must be at least 1.") }
        } else {
            guard image != nil else { throw ValidationError("Pass an image, e.g. `bottleneck preprocess photo.jpg --out x.npy`, or --bench DIR.") }
            guard out != nil else { throw ValidationError("Pass --out PATH.npy for the tensor.") }
        }
    }

    func run() throws {
        limits.apply()
        let recipe = preset
        let options = DecodeOptions(reducedDCTMinimumShorterSide: fastDecode ? recipe.resizeShorter : nil)
        if let dir = bench {
            try DecodeBenchmark(directory: dir, preset: recipe, threads: threads, repeats: repeats, fast: fastDecode).run()
            return
        }
        let url = URL(fileURLWithPath: image!)
        let decoded = try ImageDecoder.decode(contentsOf: url, options: options)
        let pre = Preprocessor(preset: recipe)
        let c = recipe.cropSize
        try NumpyArray(float32: pre.tensor(decoded), shape: [1, 3, c, c]).write(to: URL(fileURLWithPath: out!))
        print("\(image!): \(decoded.width)x\(decoded.height) -> \(out!) [1, 3, \(c), \(c)] preset \(recipe.name)")
    }
}

import Foundation

/// The `preprocess --bench` workload: read, decode and preprocess every image under a directory
/// on N threads (DispatchQueue.concurrentPerform, files dealt round-robin), best of several passes.
private struct DecodeBenchmark {
    var directory: String
    var preset: PreprocessPreset
    var threads: Int
    var repeats: Int
    var fast: Bool

    /// Files whose bytes sniff as a decodable format, sorted by path.
    func imageFiles() throws -> [URL] {
        let root = URL(fileURLWithPath: directory)
        guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey]) else {
            throw BenchmarkInputError("cannot list \(directory)")
        }
        return walker.compactMap { $0 as? URL }
            .filter { ["jpg", "jpeg", "png", "ppm", "pgm"].contains($0.pathExtension.lowercased()) }
            .sorted { $0.path < $1.path }
    }

    /// One pass: returns (seconds, images done, failures). `sink` receives each tensor when given.
    /// Each decoded image holds its share of the decode memory budget until it is preprocessed.
    func pass(_ files: [URL], options: DecodeOptions, sink: (@Sendable (Int, [Float]) -> Void)? = nil) -> (Double, Int, Int) {
        let options = options.holdingMemoryUntilImageReleased
        let pre = Preprocessor(preset: preset)
        let counter = Counter()
        let start = DispatchTime.now().uptimeNanoseconds
        DispatchQueue.concurrentPerform(iterations: threads) { worker in
            let buffer = UnsafeMutablePointer<Float>.allocate(capacity: pre.outputCount)
            defer { buffer.deallocate() }
            var done = 0, failed = 0
            for i in stride(from: worker, to: files.count, by: threads) {
                do {
                    let image = try ImageDecoder.decode(contentsOf: files[i], options: options)
                    pre.write(image, into: buffer)
                    sink?(i, Array(UnsafeBufferPointer(start: buffer, count: pre.outputCount)))
                    done += 1
                } catch {
                    failed += 1
                }
            }
            counter.add(done: done, failed: failed)
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        return (seconds, counter.done, counter.failed)
    }

    func run() throws {
        let files = try imageFiles()
        guard !files.isEmpty else { throw BenchmarkInputError("no .jpg/.jpeg/.png/.ppm/.pgm files under \(directory)") }
        func timed(_ label: String, _ options: DecodeOptions) -> Double {
            var best = Double.infinity, done = 0, failed = 0
            for _ in 0..<repeats {
                let (s, d, f) = pass(files, options: options)
                best = min(best, s); done = d; failed = f
            }
            let rate = Double(done) / best
            print(String(format: "bottleneck %@: %d images (%d failed) on %d threads, best of %d: %.3f s, %.1f images/s",
                         label, done, failed, threads, repeats, best, rate))
            return rate
        }
        _ = timed("exact", DecodeOptions())
        guard fast else { return }
        let fastOptions = DecodeOptions(reducedDCTMinimumShorterSide: preset.resizeShorter)
        _ = timed("fast-decode", fastOptions)
        // Accuracy impact of the reduced-DCT path on the final tensors.
        let exact = TensorStore(count: files.count), reduced = TensorStore(count: files.count)
        _ = pass(files, options: DecodeOptions()) { exact.set($0, $1) }
        _ = pass(files, options: fastOptions) { reduced.set($0, $1) }
        var maxAbs: Float = 0, sum = 0.0, n = 0, worstMeans: [Double] = []
        for i in files.indices {
            guard let a = exact.get(i), let b = reduced.get(i) else { continue }
            var s = 0.0
            for j in a.indices {
                let d = abs(a[j] - b[j])
                maxAbs = max(maxAbs, d)
                s += Double(d)
            }
            sum += s; n += a.count
            worstMeans.append(s / Double(a.count))
        }
        print(String(format: "fast-decode tensor difference vs exact: max abs %.4f, mean abs %.5f, worst per-image mean abs %.5f",
                     maxAbs, sum / Double(max(n, 1)), worstMeans.max() ?? 0))
    }
}

/// Totals from concurrent workers.
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var done = 0, failed = 0
    func add(done d: Int, failed f: Int) { lock.lock(); done += d; failed += f; lock.unlock() }
}

/// Per-file tensors written by concurrent workers (each index written once).
private final class TensorStore: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [[Float]?]
    init(count: Int) { items = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ t: [Float]) { lock.lock(); items[i] = t; lock.unlock() }
    func get(_ i: Int) -> [Float]? { lock.lock(); defer { lock.unlock() }; return items[i] }
}

/// An error whose description is the message itself.
private struct BenchmarkInputError: Error, CustomStringConvertible {
    var description: String
    init(_ message: String) { description = message }
}
