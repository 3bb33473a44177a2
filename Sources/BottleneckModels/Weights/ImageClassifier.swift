import BottleneckImage
import Foundation

/// One ImageNet class with its softmax probability.
public struct ClassPrediction: Sendable, Equatable, Codable {
    /// Class index (0..<1000).
    public var index: Int
    /// Class name (``ImageNetLabels``).
    public var label: String
    /// Softmax probability in [0, 1].
    public var probability: Float

    /// Creates a prediction.
    public init(index: Int, label: String, probability: Float) {
        self.index = index; self.label = label; self.probability = probability
    }
}

/// Classifies photos with a network that ends at the logits: decode, preprocess (the network's
/// preset), batched forward pass, softmax, top-k. Not thread-safe (it owns one `Network`).
public final class ImageClassifier {
    /// The logits network (cut 0).
    public let network: Network
    /// Input preprocessing.
    public let preprocessor: Preprocessor
    /// Class names, index = class id.
    public let labels: [String]

    /// Wraps `network`, which must output one logit per label.
    /// - Throws: ``WeightsError/malformed(path:reason:)`` when the output size is not `labels.count`.
    public init(network: Network, preset: PreprocessPreset, labels: [String]) throws {
        let n = network.outputShape(height: preset.cropSize, width: preset.cropSize).count
        guard network.architecture.hasClassifier else {
            throw WeightsError.malformed(path: network.architecture.name, reason: "the network has no classifier: it ends at \(n) `\(network.architecture.stageNames.last!)` features (use extract or train)")
        }
        guard n == labels.count else {
            throw WeightsError.malformed(path: network.architecture.name, reason: "stage \(network.stageName) outputs \(n) values, not \(labels.count) class logits; classify needs --cut 0")
        }
        self.network = network
        self.preprocessor = Preprocessor(preset: preset)
        self.labels = labels
    }

    /// Classifies every file; results keep the input order. A file that cannot be decoded gets
    /// its error and does not stop the others. Cost: one forward pass per `batchSize` images.
    public func classify(_ files: [URL], top k: Int, batchSize: Int = 8) -> [(url: URL, result: Result<[ClassPrediction], Error>)] {
        var results: [(url: URL, result: Result<[ClassPrediction], Error>)] = []
        let size = preprocessor.preset.cropSize
        let per = preprocessor.outputCount
        let classes = labels.count
        var start = 0
        while start < files.count {
            let chunk = Array(files[start..<min(files.count, start + max(1, batchSize))])
            start += chunk.count
            var input = [Float](repeating: 0, count: chunk.count * per)
            // Decoding dominates for large photos: decode the batch's files concurrently, each into its own slot.
            let slots = DecodeSlots(count: chunk.count)
            let pre = preprocessor
            input.withUnsafeMutableBufferPointer { buf in
                let base = SendablePointer(pointer: buf.baseAddress!)
                DispatchQueue.concurrentPerform(iterations: chunk.count) { i in
                    do {
                        let image = try ImageDecoder.decode(contentsOf: chunk[i])
                        pre.write(image, into: base.pointer + i * per)
                    } catch { slots.set(i, error) }
                }
            }
            var ok: [Int] = []
            var errors: [Int: Error] = [:]
            for i in 0..<chunk.count {
                if let e = slots.errors[i] { errors[i] = e; continue }
                if ok.count != i {  // close the gap a failed image left so the batch stays contiguous
                    input.withUnsafeMutableBufferPointer { b in (b.baseAddress! + ok.count * per).update(from: b.baseAddress! + i * per, count: per) }
                }
                ok.append(i)
            }
            var logits = [Float](repeating: 0, count: max(1, ok.count) * classes)
            if !ok.isEmpty {
                input.withUnsafeBufferPointer { inp in
                    logits.withUnsafeMutableBufferPointer { network.forward(inp.baseAddress!, batch: ok.count, height: size, width: size, into: $0.baseAddress!) }
                }
            }
            var row = 0
            for (i, url) in chunk.enumerated() {
                if let e = errors[i] { results.append((url, .failure(e))); continue }
                let top = logits.withUnsafeBufferPointer { Self.topK(UnsafeBufferPointer(rebasing: $0[(row * classes)..<((row + 1) * classes)]), k: k, labels: labels) }
                results.append((url, .success(top)))
                row += 1
            }
        }
        return results
    }

    /// Softmax of `logits` (computed in Double after subtracting the max, so large logits cannot
    /// overflow) and the `k` most probable classes, highest first (ties: lower index first).
    public static func topK(_ logits: UnsafeBufferPointer<Float>, k: Int, labels: [String]) -> [ClassPrediction] {
        guard let maxLogit = logits.max() else { return [] }
        var sum = 0.0
        for v in logits { sum += exp(Double(v - maxLogit)) }
        let order = logits.indices.sorted { logits[$0] != logits[$1] ? logits[$0] > logits[$1] : $0 < $1 }
        return order.prefix(max(0, k)).map { i in
            ClassPrediction(index: i, label: i < labels.count ? labels[i] : "class \(i)",
                            probability: Float(exp(Double(logits[i] - maxLogit)) / sum))
        }
    }

    /// Image files under `paths`: files as given, directories walked recursively (sorted, hidden
    /// entries skipped, extensions jpg/jpeg/png/ppm/pgm/pnm, case-insensitive).
    /// - Throws: ``WeightsError/fileNotFound(path:)`` for a path that does not exist.
    public static func imageFiles(in paths: [String]) throws -> [URL] {
        let exts: Set<String> = ["jpg", "jpeg", "png", "ppm", "pgm", "pnm"]
        var out: [URL] = []
        for p in paths {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else { throw WeightsError.fileNotFound(path: p) }
            if !isDir.boolValue { out.append(URL(fileURLWithPath: p)); continue }
            let root = URL(fileURLWithPath: p)
            guard let e = FileManager.default.enumerator(at: root, includingPropertiesForKeys: [.isRegularFileKey], options: [.skipsHiddenFiles]) else { continue }
            var found: [URL] = []
            for case let url as URL in e where exts.contains(url.pathExtension.lowercased()) { found.append(url) }
            out += found.sorted { $0.path < $1.path }
        }
        return out
    }
}

/// Per-image decode errors written from concurrent workers.
private final class DecodeSlots: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var errors: [Error?]
    init(count: Int) { errors = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ e: Error) { lock.lock(); errors[i] = e; lock.unlock() }
}

/// A buffer pointer handed to concurrent workers that write disjoint ranges of it.
private struct SendablePointer: @unchecked Sendable { let pointer: UnsafeMutablePointer<Float> }
