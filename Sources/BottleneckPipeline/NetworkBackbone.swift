import BottleneckImage
import BottleneckModels
import BottleneckTensor
import Foundation

/// Adapts a ``BottleneckModels/Network`` (a pretrained CNN truncated at a stage) to ``FeatureBackbone``.
///
/// Features are the network's output per image flattened in PyTorch order: `C` values with pooling,
/// `C*H*W` for an unpooled map. The input resolution is the preset's crop size.
public final class NetworkBackbone: FeatureBackbone {
    /// The wrapped network (see ``supportsConcurrentSlices`` for when the extractor calls it from several threads).
    public let network: Network
    /// Preprocessing named by the architecture (`imagenet` or `lite`).
    public let preset: PreprocessPreset
    /// `model`, `cut` or `layer` (as the user chose it), `stage` (resolved stage name), `pool`, `weights_sha256`.
    public let identity: [String: String]
    /// Output length per image.
    public let featureDimension: Int

    /// Wraps `network`. `selection` is recorded as given (`cut` or `layer`) so default output
    /// folders and `meta.json` follow the user's wording; `weightsSHA256` identifies the checkpoint.
    /// - Throws: ``PipelineError/invalidArgument(_:)`` when the architecture's preset is unknown.
    public init(network: Network, selection: StageSelection, weightsSHA256: String) throws {
        guard let preset = PreprocessPreset.named(network.presetName) else {
            throw PipelineError.invalidArgument("model \(network.architecture.name) asks for preprocessing preset '\(network.presetName)', which this build does not have")
        }
        self.network = network
        self.preset = preset
        featureDimension = network.outputShape(height: preset.cropSize, width: preset.cropSize).count
        var id = ["model": network.architecture.name, "stage": network.stageName, "pool": network.pooling.rawValue,
                  "weights_sha256": weightsSHA256]
        switch selection {
        case .cut(let n): id["cut"] = String(n)
        case .layer(let name): id["layer"] = name
        }
        identity = id
    }

    /// The network's `splitsBatchesIntoConcurrentSlices` (EfficientNet-Lite: yes; ResNet-50, VGG: no).
    public var supportsConcurrentSlices: Bool { network.splitsBatchesIntoConcurrentSlices }

    /// Runs the network on `batch` images of `3 x crop x crop`.
    public func features(_ input: UnsafePointer<Float>, batch: Int, into output: UnsafeMutablePointer<Float>) throws {
        network.forward(input, batch: batch, height: preset.cropSize, width: preset.cropSize, into: output)
    }
}

extension NetworkBackbone {
    /// Wraps a network built from a real checkpoint (``BottleneckModels/PretrainedModel``).
    public convenience init(pretrained: PretrainedModel, selection: StageSelection) throws {
        try self.init(network: pretrained.network, selection: selection, weightsSHA256: pretrained.weightsSHA256)
    }

    /// Builds the zoo model `model` truncated at `selection` with pretrained weights.
    ///
    /// - Parameters:
    ///   - weights: a checkpoint file (`.pth` or `.safetensors`); nil looks the model up in the weight
    ///     cache (`bottleneck weights fetch`).
    ///   - selection: where to cut; the default (cut 1) drops only the classifier.
    ///   - pool: reduction for spatial outputs (ignored for vector outputs).
    /// - Throws: the models module's errors (unknown model, bad cut/layer, missing or mismatched
    ///   weights, with fetch instructions), each naming the file or option to fix.
    public static func load(model: String, weights: URL?, selection: StageSelection = .cut(1), pool: Pooling = .avg,
                            options: EngineOptions = .default) throws -> NetworkBackbone {
        try NetworkBackbone(pretrained: PretrainedModel.load(model: model, weights: weights, selection: selection, pool: pool,
                                                             options: options),
                            selection: selection)
    }
}
