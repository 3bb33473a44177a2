import ArgumentParser
import BottleneckHeads
import BottleneckImage
import BottleneckModels
import BottleneckTensor
import BottleneckTraining
import Foundation

// Library value types parsed straight from the command line: an unknown value is refused by the parser
// with the list of valid ones, and no command compares these values as strings.
extension Pooling: ExpressibleByArgument {}
extension HeadKind: ExpressibleByArgument {}
extension ModelFamily: ExpressibleByArgument {}
extension ScheduleKind: ExpressibleByArgument {}
extension HeadInitialization: ExpressibleByArgument {}
extension ClassWeight: ExpressibleByArgument {}
extension LinearSVM.Loss: ExpressibleByArgument {}

extension PreprocessPreset: ExpressibleByArgument {
    /// A preset by its name (`imagenet`, `lite`).
    public init?(argument: String) {
        guard let preset = PreprocessPreset.named(argument) else { return nil }
        self = preset
    }

    public static var allValueStrings: [String] { all.map(\.name) }

    public var defaultValueDescription: String { name }
}

/// `--model` and `--weights` for commands that load a zoo model's pretrained checkpoint.
struct CheckpointOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Model: \(ModelZoo.names.joined(separator: ", ")).", valueName: "name"))
    var model: String = "efficientnet-lite0"

    @Option(help: ArgumentHelp("Checkpoint file (.pth or .safetensors) to use instead of the cached one for --model.", valueName: "path"))
    var weights: String?

    func validate() throws {
        guard ModelZoo.names.contains(model) else {
            throw ValidationError("unknown --model '\(model)'; choose one of: \(ModelZoo.names.joined(separator: ", "))")
        }
        if let w = weights, !FileManager.default.fileExists(atPath: w) {
            throw ValidationError("--weights \(w): no such file; omit it to use the cached checkpoint (`bottleneck weights fetch \(model)`)")
        }
    }

    /// The model's architecture (the name was checked in `validate()`).
    func architecture() throws -> Architecture { try ModelZoo.architecture(model) }

    /// `--weights`, else the weight cache's file for `--model` (with fetch instructions when it is missing).
    func checkpointURL() throws -> URL {
        try weights.map { URL(fileURLWithPath: $0) } ?? WeightCache.default.resolve(model: model, manifest: WeightManifest.bundled())
    }
}

/// `--cut` and `--layer`: where to end a network.
struct StageOptions: ParsableArguments {
    @Option(help: "Remove the top N stages (0 = logits; see `bottleneck models` for each model's stages).")
    var cut: Int?

    @Option(help: ArgumentHelp("End at the stage with this name (e.g. layer3, fc7, blocks.15) instead of --cut.", valueName: "name"))
    var layer: String?

    func validate() throws {
        if cut != nil && layer != nil { throw ValidationError("give either --cut or --layer, not both") }
        if let c = cut, c < 0 { throw ValidationError("--cut must be 0 or more (0 keeps the logits)") }
    }

    /// Refuses a cut or layer `architecture` does not have.
    func check(against architecture: Architecture) throws {
        if let c = cut, c >= architecture.stages.count {
            throw ValidationError("--cut \(c) is out of range for \(architecture.name): use 0...\(architecture.stages.count - 1)")
        }
        if let l = layer, !architecture.stageNames.contains(l) {
            throw ValidationError("\(architecture.name) has no stage '\(l)'; stages: \(architecture.stageNames.joined(separator: ", "))")
        }
    }

    /// The stage selection the user asked for (`--layer`, else `--cut`, else `defaultCut`).
    func selection(defaultCut: Int = 0) -> StageSelection {
        if let layer { return .layer(layer) }
        return .cut(cut ?? defaultCut)
    }
}

/// `--threads` for commands that run the network on all cores by default.
struct ThreadOptions: ParsableArguments {
    @Option(help: "Worker threads for decoding, the network's kernels and OpenBLAS (\(ValueRanges.text(ValueRanges.threads)); default: all cores).")
    var threads: Int?

    func validate() throws {
        if let threads { try ValueRanges.check(threads, ValueRanges.threads, "--threads") }
    }

    /// The engine settings for these threads and the environment's switches; also sizes OpenBLAS's pool.
    func configuredEngine() -> EngineOptions {
        let engine = EngineOptions.fromEnvironment(threads: threads)
        TensorThreads.configureBLAS(threads: engine.threads)
        return engine
    }
}

/// Options shared by every command that runs a pretrained network (classify, extract, predict):
/// which model, which checkpoint, where to cut it and how to pool a spatial output.
struct ModelOptions: ParsableArguments {
    @OptionGroup var checkpoint: CheckpointOptions

    @OptionGroup var stage: StageOptions

    @Option(help: "Reduce a spatial output map (ignored for vector outputs).")
    var pool: Pooling = .avg

    var model: String { checkpoint.model }
    var weights: String? { checkpoint.weights }

    func validate() throws {
        try stage.check(against: checkpoint.architecture())
    }

    /// The stage selection the user asked for (`--layer`, else `--cut`, else `defaultCut`).
    func selection(defaultCut: Int = 0) -> StageSelection { stage.selection(defaultCut: defaultCut) }

    /// Resolves the checkpoint (--weights, else the weights cache) and builds the network. When the
    /// cache lacks it, the error says exactly how to fetch it.
    func loadModel(defaultCut: Int = 0) throws -> PretrainedModel {
        try PretrainedModel.load(model: model, weights: weights.map { URL(fileURLWithPath: $0) },
                                 selection: selection(defaultCut: defaultCut), pool: pool, options: .fromEnvironment())
    }
}
