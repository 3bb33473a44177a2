import ArgumentParser
import BottleneckModels
import Foundation

/// `bottleneck models`: the model zoo with stages, shapes, sizes and weight availability.
struct ModelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract: "List every model with its stages (cut points), output shapes, parameters, FLOPs and weights.",
        discussion: """
        Each stage line shows the --cut value that ends the network there, the --layer name, and the output shape per image for a SIZExSIZE input (C x H x W for maps, D for vectors). FLOPs count 2 per multiply-accumulate of the convolutions and linear layers, per image, through the last stage.
        """)

    @Option(help: "Show only this model.")
    var model: String?

    @Option(help: "Input side in pixels for the shapes and FLOPs (default: each model's native size).")
    var size: Int?

    @Flag(help: "Print one JSON object per model instead of text.")
    var json = false

    func validate() throws {
        if let model, !ModelZoo.names.contains(model) {
            throw ValidationError("unknown model '\(model)'; choose one of: \(ModelZoo.names.joined(separator: ", "))")
        }
        if let size, size < 32 { throw ValidationError("--size must be at least 32 pixels (got \(size))") }
    }

    func run() throws {
        for name in model.map({ [$0] }) ?? ModelZoo.names {
            let arch = try ModelZoo.architecture(name)
            let size = size ?? arch.inputSize
            let shapes = arch.stageShapes(height: size, width: size)
            let flops = arch.flops(height: size, width: size)
            let weights = WeightsStatus.describe(model: name)
            if json {
                let stages: [[String: Any]] = arch.stages.enumerated().map { i, s in
                    ["name": s.name, "cut": arch.stages.count - 1 - i, "shape": shapes[i].dimensions, "summary": s.summary]
                }
                let object: [String: Any] = ["model": name, "family": arch.family.rawValue, "preset": arch.presetName,
                                             "native_size": arch.inputSize, "size": size, "parameters": arch.parameterCount,
                                             "flops": flops, "weights": weights, "stages": stages]
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
                continue
            }
            print(String(format: "%@  [%@, preset %@, native %dx%d]  params %.2fM  FLOPs %.2fG @%dx%d  weights: %@",
                         name, arch.family.rawValue, arch.presetName, arch.inputSize, arch.inputSize,
                         Double(arch.parameterCount) / 1e6, Double(flops) / 1e9, size, size, weights))
            for (i, s) in arch.stages.enumerated() {
                let cut = arch.stages.count - 1 - i
                let pad = { (t: String, n: Int) in t.padding(toLength: max(n, t.count), withPad: " ", startingAt: 0) }
                print("  cut \(pad(String(cut), 3)) \(pad(s.name, 10)) \(pad(shapes[i].description, 12)) \(s.summary)")
            }
            print("")
        }
    }
}

/// Whether a model's pretrained weights are installed, from the weights manifest and cache.
enum WeightsStatus {
    static func describe(model: String) -> String {
        guard let manifest = try? WeightManifest.bundled() else { return "unknown (weights manifest unreadable)" }
        guard let entry = try? manifest.entry(for: model) else { return "no known checkpoint" }
        if let url = WeightCache.default.locate(entry) { return "present (\(url.path))" }
        return "absent (bottleneck weights fetch \(model))"
    }
}
