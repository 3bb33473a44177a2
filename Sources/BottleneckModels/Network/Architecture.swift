import BottleneckTensor

/// One learnable tensor of an architecture, named as in the PyTorch state dict.
public struct ParameterSpec: Sendable, Equatable {
    /// State-dict key, e.g. `layer1.0.bn1.running_var`.
    public let name: String
    /// PyTorch shape (conv `[Cout, Cin/groups, kh, kw]`, linear `[out, in]`, BN `[C]`).
    public let shape: [Int]
    /// Role, which selects the synthetic fill.
    public let kind: SyntheticFill.Kind
    /// Element count.
    public var count: Int { shape.reduce(1, *) }
}

/// A BatchNorm that follows a convolution; folded into it at load time.
struct BatchNormSpec: Sendable {
    /// Module prefix (`layer1.0.bn1`).
    let name: String
    let eps: Float
    /// Whether it closes a residual branch (only changes the synthetic fill of its gamma).
    let closesResidual: Bool
    /// Which tensors hold its statistics and affine terms.
    var keys: Keys = .torch
    /// Weight of a batch's statistics when training updates the running ones (PyTorch's `momentum`;
    /// 0.01 for networks ported from TensorFlow, whose decay is 0.99).
    var momentum: Float = 0.1

    /// How a checkpoint stores a batch norm.
    enum Keys: Sendable {
        /// `nn.BatchNorm2d`: `<name>.weight` (gamma), `<name>.bias`, `<name>.running_mean`, `<name>.running_var`.
        case torch
        /// TensorFlow's batch norm with `scale=False` (Inception-v3's `Conv2dLayer`): `<name>.beta`,
        /// `<name>.mean`, `<name>.var`; gamma is 1.
        case shiftOnly
    }
}

/// Architecture-level description of one layer; `Network` compiles it into kernels.
indirect enum LayerSpec: Sendable {
    /// Dense convolution (+ folded BN) + activation. `name` is the conv's module prefix. The kernel is
    /// `kernel x kernel`, or `kernel x kernelWidth` (height x width) when `kernelWidth` is given.
    case conv(name: String, inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Padding,
              bias: Bool, bn: BatchNormSpec?, activation: Activation, kernelWidth: Int? = nil)
    /// Depthwise convolution (+ folded BN) + activation.
    case depthwise(name: String, channels: Int, kernel: Int, stride: Int, padding: Padding,
                   bn: BatchNormSpec?, activation: Activation)
    /// Max pooling, symmetric padding, floor mode.
    case maxPool(kernel: Int, stride: Int, padding: Int)
    /// Average pooling, symmetric padding, floor mode; `countIncludePad` as PyTorch's `count_include_pad`
    /// (false: a window's divisor is the number of input pixels it covers).
    case avgPool(kernel: Int, stride: Int, padding: Int, countIncludePad: Bool)
    /// Channel concatenation (`torch.cat(dim=1)`): every branch runs on this layer's input, and their
    /// outputs, which must share one spatial size, are placed side by side on channels in branch order.
    /// A branch may end in a nested concatenation (branches sharing a prefix, as in InceptionE).
    case concat(branches: [[LayerSpec]])
    /// Adaptive average pooling to a fixed map size (VGG's 7x7).
    case adaptiveAvgPool(height: Int, width: Int)
    /// Global average pooling + flatten: `[N, C, H, W]` to `[N, C]`.
    case globalAvgPool
    /// Flatten (in PyTorch's NCHW order) + fully connected + activation.
    case linear(name: String, inFeatures: Int, outFeatures: Int, activation: Activation)
    /// `activation(body(x) + shortcut(x))`, shortcut = identity when nil. The add and activation are
    /// fused into the body's last convolution.
    case residual(body: [LayerSpec], shortcut: [LayerSpec]?, activation: Activation)
}

/// The shape of an activation at a stage boundary, in PyTorch's layout.
public enum ActivationShape: Sendable, Equatable, CustomStringConvertible {
    /// A spatial map `[C, H, W]` (per image).
    case map(channels: Int, height: Int, width: Int)
    /// A vector of `D` features (per image).
    case vector(Int)

    /// Elements per image.
    public var count: Int {
        switch self {
        case let .map(c, h, w): return c * h * w
        case let .vector(d): return d
        }
    }

    /// The per-image dimensions (`[C, H, W]` or `[D]`).
    public var dimensions: [Int] {
        switch self {
        case let .map(c, h, w): return [c, h, w]
        case let .vector(d): return [d]
        }
    }

    public var description: String { dimensions.map(String.init).joined(separator: "x") }
}

/// A named stage: the unit a user cuts at. Its output is the activation after all of its layers.
public struct Stage: Sendable {
    /// Stage name used by `--layer` (`layer3`, `pool5`, `fc7`, `blocks.15`).
    public let name: String
    /// One-line description of what the stage contains.
    public let summary: String
    let layers: [LayerSpec]
}

/// The architecture families the zoo builds; the raw value is the name `bottleneck models` prints.
public enum ModelFamily: String, Sendable, CaseIterable {
    case resnet
    case vgg
    case efficientNetLite = "efficientnet-lite"
    case mobileNetV2 = "mobilenet_v2"
    case inception

    /// Fine-tuning depths `benchmark --finetune auto` runs: 0 (the new head alone), 1 and 2 trainable
    /// stages (`Architecture.fineTuningSplit(unfreeze:)`), for every family.
    public var automaticFineTuneDepths: [Int] { [0, 1, 2] }
}

/// A network architecture: an ordered list of stages from the input to the logits, with the
/// PyTorch parameter names each stage needs.
public struct Architecture: Sendable {
    /// CLI / torchvision name (`resnet50`, `vgg16_bn`, `efficientnet-lite0`).
    public let name: String
    /// Family the architecture's stages come from.
    public let family: ModelFamily
    /// Name of the input preprocessing preset (`imagenet` or `lite`, see BottleneckImage).
    public let presetName: String
    /// Native input resolution (square side, pixels).
    public let inputSize: Int
    /// Stages, input first; the last one produces the 1000 ImageNet logits.
    public let stages: [Stage]

    /// Every parameter of the full network in state-dict order.
    public var parameters: [ParameterSpec] { stages.flatMap { $0.layers.flatMap(Self.parameters(of:)) } }

    /// Parameters of stages `0...index`.
    public func parameters(throughStage index: Int) -> [ParameterSpec] {
        stages[0...index].flatMap { $0.layers.flatMap(Self.parameters(of:)) }
    }

    /// Total learnable parameters (BN running statistics excluded, like `sum(p.numel())` in PyTorch).
    public var parameterCount: Int {
        parameters.filter { $0.kind != .bnMean && $0.kind != .bnVar }.reduce(0) { $0 + $1.count }
    }

    /// Stage names, input first.
    public var stageNames: [String] { stages.map(\.name) }

    /// Whether the last stage is a classifier (a linear layer to logits); false for feature networks
    /// such as `inception_v3`, whose last stage is its pooled features.
    public var hasClassifier: Bool {
        if case .linear? = stages.last?.layers.last { return true }
        return false
    }

    /// Output shape of every stage for a `height x width` RGB input.
    public func stageShapes(height: Int, width: Int) -> [ActivationShape] {
        var shape = ActivationShape.map(channels: 3, height: height, width: width)
        return stages.map { stage in
            for layer in stage.layers { shape = Self.infer(layer, shape).shape }
            return shape
        }
    }

    /// Floating-point operations (2 per multiply-accumulate, convolutions and linear layers only)
    /// per image through stage `index` for a `height x width` input.
    public func flops(height: Int, width: Int, throughStage index: Int? = nil) -> Int {
        var shape = ActivationShape.map(channels: 3, height: height, width: width)
        var macs = 0
        for stage in stages[0...(index ?? stages.count - 1)] {
            for layer in stage.layers {
                let r = Self.infer(layer, shape)
                shape = r.shape; macs += r.macs
            }
        }
        return 2 * macs
    }

    /// The largest activation (floats per image, including those inside blocks) through stage
    /// `index` for a `height x width` input; `fusedBlocks` as in `largestActivations`.
    public func largestActivation(height: Int, width: Int, throughStage index: Int, fusedBlocks: Bool = false) -> Int {
        largestActivations(height: height, width: width, fusedBlocks: fusedBlocks)[0...index].max()!
    }

    /// Per stage, the largest activation (floats per image) it holds: its input, its output and those
    /// inside its blocks, for a `height x width` input. One walk over the layers.
    ///
    /// With `fusedBlocks`, the expanded and depthwise tensors inside an [expand →] depthwise → project
    /// run are not counted: a network that fuses MBConv blocks (`InvertedResidual`) keeps only a few
    /// of their rows, in a per-thread scratch. (The late blocks, whose maps are too small to fuse,
    /// still materialise theirs, but those are smaller than the early maps that bound the total:
    /// 14x14x672 against 112x112x32 in EfficientNet-Lite0.) Counting them made EfficientNet-Lite0's
    /// budget see 112x112x96 floats per image where 112x112x32 exist.
    public func largestActivations(height: Int, width: Int, fusedBlocks: Bool = false) -> [Int] {
        func pointwise(_ layer: LayerSpec?) -> Bool {
            guard case let .conv(_, _, _, kernel, stride, padding, _, _, _, kernelWidth)? = layer, kernel == 1,
                  kernelWidth ?? 1 == 1, stride == 1 else { return false }
            return padding.resolve(height: 8, width: 8, kernelH: 1, kernelW: 1, stride: 1) == (0, 0, 0, 0)
        }
        func depthwise(_ layer: LayerSpec?) -> Bool {
            if case .depthwise? = layer { return true } else { return false }
        }
        func walk(_ layers: [LayerSpec], _ shape: inout ActivationShape, _ best: inout Int) {
            for (j, layer) in layers.enumerated() {
                if case let .residual(body, shortcut, _) = layer {
                    var b = shape, s = shape
                    walk(body, &b, &best)
                    walk(shortcut ?? [], &s, &best)
                }
                if case let .concat(branches) = layer {
                    for branch in branches { var b = shape; walk(branch, &b, &best) }
                }
                shape = Self.infer(layer, shape).shape
                let next = j + 1 < layers.count ? layers[j + 1] : nil, afterNext = j + 2 < layers.count ? layers[j + 2] : nil
                let insideFusedBlock = fusedBlocks && ((depthwise(layer) && pointwise(next))
                    || (pointwise(layer) && depthwise(next) && pointwise(afterNext)))
                if !insideFusedBlock { best = max(best, shape.count) }
            }
        }
        var shape = ActivationShape.map(channels: 3, height: height, width: width)
        return stages.map { stage in
            var best = shape.count
            walk(stage.layers, &shape, &best)
            return best
        }
    }

    /// Resolves a stage selection to a stage index.
    public func stageIndex(for selection: StageSelection) throws -> Int {
        switch selection {
        case let .cut(n):
            guard n >= 0 && n < stages.count else {
                throw ModelLoadingError.invalidCut(model: name, cut: n, stageCount: stages.count)
            }
            return stages.count - 1 - n
        case let .layer(layer):
            guard let i = stages.firstIndex(where: { $0.name == layer }) else {
                throw ModelLoadingError.unknownLayer(model: name, layer: layer, available: stageNames)
            }
            return i
        }
    }

    static func parameters(of layer: LayerSpec) -> [ParameterSpec] {
        func bn(_ spec: BatchNormSpec?, _ c: Int) -> [ParameterSpec] {
            guard let spec else { return [] }
            if spec.keys == .shiftOnly {
                return [ParameterSpec(name: spec.name + ".beta", shape: [c], kind: .bnBias),
                        ParameterSpec(name: spec.name + ".mean", shape: [c], kind: .bnMean),
                        ParameterSpec(name: spec.name + ".var", shape: [c], kind: .bnVar)]
            }
            return [ParameterSpec(name: spec.name + ".weight", shape: [c], kind: spec.closesResidual ? .bnWeightResidual : .bnWeight),
                    ParameterSpec(name: spec.name + ".bias", shape: [c], kind: .bnBias),
                    ParameterSpec(name: spec.name + ".running_mean", shape: [c], kind: .bnMean),
                    ParameterSpec(name: spec.name + ".running_var", shape: [c], kind: .bnVar)]
        }
        switch layer {
        case let .conv(name, cin, cout, k, _, _, bias, bnSpec, _, kw):
            return [ParameterSpec(name: name + ".weight", shape: [cout, cin, k, kw ?? k], kind: .weight)]
                + (bias ? [ParameterSpec(name: name + ".bias", shape: [cout], kind: .bias)] : []) + bn(bnSpec, cout)
        case let .depthwise(name, c, k, _, _, bnSpec, _):
            return [ParameterSpec(name: name + ".weight", shape: [c, 1, k, k], kind: .weight)] + bn(bnSpec, c)
        case let .linear(name, i, o, _):
            return [ParameterSpec(name: name + ".weight", shape: [o, i], kind: .weight),
                    ParameterSpec(name: name + ".bias", shape: [o], kind: .bias)]
        case let .residual(body, shortcut, _):
            return body.flatMap(parameters(of:)) + (shortcut ?? []).flatMap(parameters(of:))
        case let .concat(branches):
            return branches.joined().flatMap(parameters(of:))
        case .maxPool, .avgPool, .adaptiveAvgPool, .globalAvgPool:
            return []
        }
    }

    /// `transform` applied to `layers` in order, each given its input shape (`input`, then the previous
    /// layer's output) and whether it is the last layer: the walk both compilers (`LayerCompiler`,
    /// `TrainingGraph`) make over a layer sequence.
    static func mapSequence<T>(_ layers: [LayerSpec], input: ActivationShape,
                               _ transform: (_ layer: LayerSpec, _ input: ActivationShape, _ isLast: Bool) throws -> T) rethrows -> [T] {
        var shape = input
        var results: [T] = []
        results.reserveCapacity(layers.count)
        for (i, layer) in layers.enumerated() {
            results.append(try transform(layer, shape, i == layers.count - 1))
            shape = infer(layer, shape).shape
        }
        return results
    }

    /// Output shape of `layers` run in order on `input`.
    static func outputShape(of layers: [LayerSpec], input: ActivationShape) -> ActivationShape {
        layers.reduce(input) { infer($1, $0).shape }
    }

    /// Output shape and multiply-accumulates per image of one layer.
    static func infer(_ layer: LayerSpec, _ input: ActivationShape) -> (shape: ActivationShape, macs: Int) {
        func spatial(_ k: Int, _ s: Int, _ p: Padding, _ h: Int, _ w: Int, kernelWidth: Int? = nil) -> (Int, Int) {
            let kw = kernelWidth ?? k
            let r = p.resolve(height: h, width: w, kernelH: k, kernelW: kw, stride: s)
            return ((h + r.top + r.bottom - k) / s + 1, (w + r.left + r.right - kw) / s + 1)
        }
        switch (layer, input) {
        case let (.conv(_, cin, cout, k, s, p, _, _, _, kw), .map(_, h, w)):
            let (oh, ow) = spatial(k, s, p, h, w, kernelWidth: kw)
            return (.map(channels: cout, height: oh, width: ow),
                    Conv2D.macs(outputHeight: oh, outputWidth: ow, kernelH: k, kernelW: kw ?? k, inputsPerOutput: cin, outChannels: cout))
        case let (.depthwise(_, c, k, s, p, _, _), .map(_, h, w)):
            let (oh, ow) = spatial(k, s, p, h, w)
            return (.map(channels: c, height: oh, width: ow),
                    Conv2D.macs(outputHeight: oh, outputWidth: ow, kernelH: k, kernelW: k, inputsPerOutput: 1, outChannels: c))
        case let (.maxPool(k, s, p), .map(c, h, w)), let (.avgPool(k, s, p, _), .map(c, h, w)):
            return (.map(channels: c, height: (h + 2 * p - k) / s + 1, width: (w + 2 * p - k) / s + 1), 0)
        case let (.concat(branches), .map(_, h, w)):
            var channels = 0, macs = 0
            var spatial: (Int, Int)? = nil
            for branch in branches {
                var shape = input
                for l in branch { let r = infer(l, shape); shape = r.shape; macs += r.macs }
                guard case let .map(c, bh, bw) = shape, spatial == nil || spatial! == (bh, bw) else {
                    preconditionFailure("concatenated branches disagree on their spatial size at input \(h)x\(w)")
                }
                spatial = (bh, bw)
                channels += c
            }
            return (.map(channels: channels, height: spatial?.0 ?? h, width: spatial?.1 ?? w), macs)
        case let (.adaptiveAvgPool(oh, ow), .map(c, _, _)):
            return (.map(channels: c, height: oh, width: ow), 0)
        case let (.globalAvgPool, .map(c, _, _)):
            return (.vector(c), 0)
        case let (.linear(_, i, o, _), _):
            return (.vector(o), Conv2D.macs(outputHeight: 1, outputWidth: 1, kernelH: 1, kernelW: 1, inputsPerOutput: i, outChannels: o))
        case let (.residual(body, _, _), _):
            var shape = input, macs = 0
            for l in body { let r = infer(l, shape); shape = r.shape; macs += r.macs }
            if case let .residual(_, shortcut?, _) = layer {
                var s2 = input
                for l in shortcut { let r = infer(l, s2); s2 = r.shape; macs += r.macs }
            }
            return (shape, macs)
        default:
            preconditionFailure("layer \(layer) cannot follow an activation of shape \(input)")
        }
    }
}

/// Which stage a network ends at.
public enum StageSelection: Sendable, Equatable {
    /// Remove the top N stages (0 keeps the logits).
    case cut(Int)
    /// End at the stage with this name.
    case layer(String)
}

/// Reduction applied to a spatial output map.
public enum Pooling: String, Sendable, CaseIterable {
    /// Keep the map `[N, C, H, W]`.
    case none
    /// Global average over H and W: `[N, C]`.
    case avg
    /// Global maximum over H and W: `[N, C]`.
    case max
}

/// The built-in architectures, by their CLI (torchvision) names.
public enum ModelZoo {
    /// Every model name, family by family.
    public static let names: [String] = ResNetFamily.names + VGGFamily.names + EfficientNetLiteFamily.names
        + MobileNetV2Family.names + InceptionFamily.names

    /// The architecture called `name`.
    /// - Throws: `ModelLoadingError.unknownModel`.
    public static func architecture(_ name: String) throws -> Architecture {
        if let a = ResNetFamily.architecture(name) ?? VGGFamily.architecture(name) ?? EfficientNetLiteFamily.architecture(name)
            ?? MobileNetV2Family.architecture(name) ?? InceptionFamily.architecture(name) {
            return a
        }
        throw ModelLoadingError.unknownModel(name)
    }
}
