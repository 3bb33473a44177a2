import ArgumentParser
import BottleneckHeads
import BottleneckImage
import BottleneckPipeline
import Foundation

/// `bottleneck predict`: classify images with a trained model and the backbone it records.
struct PredictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "predict",
        abstract: "Classify images with a trained model: decode, run the model's backbone, apply scaler and head.",
        discussion: """
        The backbone (model, cut or layer, pooling, preprocessing) is rebuilt from what the model recorded at training time and checked against it, including the weights' SHA-256; pass --weights when the checkpoint is not the cached one. Directories are searched recursively for .jpg, .jpeg, .png, .ppm and .pnm files. Images that cannot be decoded are reported and skipped (exit status 1 at the end).
        """)

    @Argument(help: "Model file written by `bottleneck train`.")
    var model: String

    @Argument(help: "Image files or directories.")
    var inputs: [String]

    @Option(help: "Number of classes to print per image (1...1000).")
    var top: Int = 3

    @Flag(help: "Print a JSON array instead of text.")
    var json = false

    @Option(help: "Checkpoint file for the backbone (default: the cached weights of the recorded model).")
    var weights: String?

    @Option(help: "Images per backbone call (\(ValueRanges.text(ValueRanges.batch))).")
    var batch: Int = 16

    func validate() throws {
        try ValueRanges.check(top, ValueRanges.top, "--top")
        try ValueRanges.check(batch, ValueRanges.batch, "--batch")
        guard !inputs.isEmpty else { throw ValidationError("give at least one image file or directory") }
    }

    func run() throws {
        let m = try ClassifierModel.load(from: URL(fileURLWithPath: model))
        guard let info = m.backbone, !info.model.isEmpty else {
            throw ValidationError("\(model) records no backbone; it was trained on features of unknown origin and cannot predict from images")
        }
        let backbone = try BackboneFactory.make(for: info, modelFile: URL(fileURLWithPath: model), weights: weights)
        var identity = backbone.identity
        identity["preset"] = backbone.preset.name
        let diffs = info.mismatches(with: BackboneInfo(storeMeta: identity))
        guard diffs.isEmpty else {
            throw ValidationError("the rebuilt backbone differs from the one the model was trained on:\n  " + diffs.joined(separator: "\n  "))
        }
        guard backbone.featureDimension == m.dimension else {
            throw HeadError.dimensionMismatch(expected: m.dimension, got: backbone.featureDimension, context: "backbone \(info.model)")
        }
        let files = try collectImages()
        let pre = Preprocessor(preset: backbone.preset)
        let d = backbone.featureDimension
        var results: [(path: String, ranked: [(String, Double)]?, error: String?)] = []
        var start = 0
        while start < files.count {
            let chunk = Array(files[start..<min(start + batch, files.count)])
            start += chunk.count
            var tensors: [Float] = []
            var ok: [String] = []
            for f in chunk {
                do {
                    let img = try ImageDecoder.decode(contentsOf: URL(fileURLWithPath: f))
                    tensors += pre.tensor(img); ok.append(f)
                } catch {
                    results.append((f, nil, "\(error)"))
                }
            }
            guard !ok.isEmpty else { continue }
            var feats = [Float](repeating: 0, count: ok.count * d)
            try tensors.withUnsafeBufferPointer { inp in
                try feats.withUnsafeMutableBufferPointer { out in
                    try backbone.features(inp.baseAddress!, batch: ok.count, into: out.baseAddress!)
                }
            }
            let scores = try m.classScores(Matrix(rows: ok.count, cols: d, float32: feats))
            for (i, f) in ok.enumerated() {
                let order = (0..<scores.cols).sorted { scores[i, $0] > scores[i, $1] || (scores[i, $0] == scores[i, $1] && $0 < $1) }
                results.append((f, order.prefix(top).map { (m.classNames[$0], scores[i, $0]) }, nil))
            }
        }
        let kind = m.head.scoresAreProbabilities ? "probability" : "score"
        if json {
            let arr: [[String: Any]] = results.map { r in
                var o: [String: Any] = ["path": r.path]
                if let e = r.error { o["error"] = e }
                if let ranked = r.ranked { o["predictions"] = ranked.map { ["label": $0.0, kind: $0.1] } }
                return o
            }
            let data = try JSONSerialization.data(withJSONObject: arr, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for r in results {
                if let e = r.error { print("\(r.path): ERROR \(e)"); continue }
                let parts = r.ranked!.map { String(format: "%@ (%@ %.4f)", $0.0, kind, $0.1) }
                print("\(r.path): " + parts.joined(separator: ", "))
            }
        }
        if results.contains(where: { $0.error != nil }) { throw ExitCode(1) }
    }

    private func collectImages() throws -> [String] {
        let exts: Set<String> = ["jpg", "jpeg", "png", "ppm", "pnm"]
        var out: [String] = []
        for input in inputs {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: input, isDirectory: &isDir) else {
                throw ValidationError("\(input) does not exist")
            }
            if !isDir.boolValue { out.append(input); continue }
            guard let en = FileManager.default.enumerator(atPath: input) else { continue }
            var found: [String] = []
            for case let rel as String in en where exts.contains((rel as NSString).pathExtension.lowercased()) {
                found.append((input as NSString).appendingPathComponent(rel))
            }
            out += found.sorted()
        }
        guard !out.isEmpty else { throw ValidationError("no images found in \(inputs.joined(separator: ", "))") }
        return out
    }
}
