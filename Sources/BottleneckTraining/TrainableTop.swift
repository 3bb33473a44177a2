import BottleneckModels
import BottleneckTensor

/// The part of a pretrained network that fine-tuning trains, derived from the architecture's stages
/// (`Architecture.fineTuningSplit(unfreeze:)`): the top K stages as a `TrainingGraph` on the inference
/// kernels, with the checkpoint's weights, followed by a new zero-initialised linear head named `head`.
/// K = 0 trains only the head, on the feature stage's output.
public struct TrainableTop {
    /// Where the architecture is cut.
    public let split: FineTuningSplit
    /// Stage whose output the frozen prefix produces (`blocks.13`, `layer3`, `avgpool`, `fc6`).
    public let prefixStage: String
    /// Names of the trainable stages, in forward order (empty for K = 0).
    public let trainableStages: [String]
    /// Stage whose output (a feature vector) the head reads (`avgpool`, `fc7`).
    public let featureStage: String
    /// Features entering the head.
    public let features: Int
    /// The trainable stages and the head.
    public let graph: TrainingGraph

    /// Builds the top for `architecture` with K = `unfreeze` and `classCount` head outputs, loading the
    /// stages' parameters from `weights`.
    /// - Throws: ``TrainingError/invalidConfiguration(_:)`` when K is out of range or the architecture has
    ///   no feature vector; `ModelLoadingError` (naming `sourceName`) for a missing or malformed weight.
    public init(architecture: Architecture, weights: WeightSource, unfreeze: Int, classCount: Int,
                sourceName: String = "weights", options: EngineOptions = .default) throws {
        do { split = try architecture.fineTuningSplit(unfreeze: unfreeze) } catch let error as FineTuningDepthError {
            throw TrainingError.invalidConfiguration(error.description)
        }
        let names = architecture.stageNames
        prefixStage = names[split.prefixStage]
        trainableStages = split.trainableStages.map { names[$0] }
        featureStage = names[split.featureStage]
        let size = architecture.inputSize
        features = architecture.stageShapes(height: size, width: size)[split.featureStage].count
        if split.trainableStages.isEmpty {
            graph = try TrainingGraph(headOn: features, name: "head", outputs: classCount, options: options)
        } else {
            graph = try TrainingGraph(architecture: architecture,
                                      stages: split.trainableStages.lowerBound...(split.trainableStages.upperBound - 1),
                                      weights: weights, sourceName: sourceName, head: ("head", classCount), options: options)
        }
    }

    /// The trained stages' parameters and BatchNorm statistics (checkpoint keys; the head excluded).
    public var stageParameters: [Parameter] {
        let head = graph.headParameters.map { [$0.weight.name, $0.bias.name] } ?? []
        return graph.parameters.filter { !head.contains($0.name) }
    }
}
