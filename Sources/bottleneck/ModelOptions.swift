import ArgumentParser
import BottleneckModels
import BottleneckTensor
import Foundation

extension Pooling: ExpressibleByArgument {}

/// Options shared by every command that runs a pretrained network (classify, extract, predict):
/// which model, which checkpoint, where to cut it and how to pool a spatial output.
struct ModelOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Model: \(ModelZoo.names.joined(separator: ", ")).", valueName: "name"))
    var model: String = "efficientnet-lite0"

    @Option(help: ArgumentHelp("Checkpoint file (.pth or .safetensors) to use instead of the cached one for --model.", valueName: "path"))
    var weights: String?

    @Option(help: "Remove the top N stages (0 = logits; see `bottleneck models` for each model's stages).")
    var cut: Int?

    @Option(help: ArgumentHelp("End at the stage with this name (e.g. layer3, fc7, blocks.15) instead of --cut.", valueName: "name"))
    var layer: String?

    @Option(help: "Reduce a spatial output map: avg, max or none (ignored for vector outputs).")
    var pool: Pooling = .avg

    func validate() throws {
        guard ModelZoo.names.contains(model) else {
            throw ValidationError("unknown --model '\(model)'; choose one of: \(ModelZoo.names.joined(separator: ", "))")
        }
        if cut != nil && layer != nil { throw ValidationError("give either --cut or --layer, not both") }
        if let c = cut, c < 0 { throw ValidationError("--cut must be 0 or more (0 keeps the logits)") }
        if let c = cut, let arch = try? ModelZoo.architecture(model), c >= arch.stages.count {
            throw ValidationError("--cut \(c) is out of range for \(model): use 0...\(arch.stages.count - 1)")
        }
        if let l = layer, let arch = try? ModelZoo.architecture(model), !arch.stageNames.contains(l) {
            throw ValidationError("\(model) has no stage '\(l)'; stages: \(arch.stageNames.joined(separator: ", "))")
        }
        if let w = weights, !FileManager.default.fileExists(atPath: w) {
            throw ValidationError("--weights \(w): no such file")
        }
    }

    /// The stage selection the user asked for (`--layer`, else `--cut`, else `defaultCut`).
    func selection(defaultCut: Int = 0) -> StageSelection {
        if let layer { return .layer(layer) }
        return .cut(cut ?? defaultCut)
    }

    /// Resolves the checkpoint (--weights, else the weights cache) and builds the network. When the
    /// cache lacks it, the error says exactly how to fetch it.
    func loadModel(defaultCut: Int = 0) throws -> PretrainedModel {
        try PretrainedModel.load(model: model, weights: weights.map { URL(fileURLWithPath: $0) },
                                 selection: selection(defaultCut: defaultCut), pool: pool, options: .fromEnvironment())
    }
}
