import BottleneckModels

/// The part of a pretrained network that fine-tuning trains: the top K feature stages rebuilt as
/// differentiable layers with the checkpoint's weights, plus where the frozen prefix ends.
///
/// What K counts: EfficientNet-Lite — MBConv blocks (`blocks.i`), and `_conv_head` + `_bn1` always come with
/// them (the recipe "last 2 blocks + conv_head + head" is K = 2); ResNet — residual groups (`layer4` is K = 1).
/// K = 0 trains only the new linear head on the frozen pooled features (the `avgpool` stage).
public struct TrainableTop {
    /// Stage whose output the frozen prefix produces (`blocks.13`, `layer3`, `avgpool`).
    public let prefixStage: String
    /// Names of the stages rebuilt for training, in forward order.
    public let trainableStages: [String]
    /// The rebuilt stages (empty for K = 0); outputs a spatial map.
    public let body: Sequential
    /// Features entering the classifier (channels of the pooled map, or the prefix vector's length).
    public let features: Int
    /// Whether a global average pool sits between `body` and the classifier (false for K = 0).
    public let pools: Bool

    /// Builds the top for `architecture` with K = `unfreeze` and loads its parameters from `weights`.
    /// - Throws: ``TrainingError`` when the family is unsupported, K is out of range, or a weight is missing
    ///   or has an unexpected shape.
    public init(architecture: Architecture, weights: WeightSource, unfreeze: Int) throws {
        let names = architecture.stageNames
        let size = architecture.inputSize
        let shapes = architecture.stageShapes(height: size, width: size)
        func stride(_ stage: String) throws -> Int {
            guard let i = names.firstIndex(of: stage), i > 0,
                  case let .map(_, hIn, _) = shapes[i - 1], case let .map(_, hOut, _) = shapes[i] else {
                throw TrainingError.invalidConfiguration("\(architecture.name): cannot infer the stride of stage \(stage)")
            }
            return hIn > hOut ? (hIn + hOut - 1) / hOut : 1
        }
        func shape(_ key: String) throws -> [Int] {
            guard let s = weights.shape(of: key) else { throw TrainingError.missingKey(key) }
            return s
        }
        guard unfreeze >= 0 else { throw TrainingError.invalidConfiguration("--unfreeze must be ≥ 0") }
        var layers: [Layer] = []
        var stages: [String] = []
        switch architecture.family {
        case .efficientNetLite:
            let blocks = names.filter { $0.hasPrefix("blocks.") }
            guard unfreeze <= blocks.count else {
                throw TrainingError.invalidConfiguration("\(architecture.name) has \(blocks.count) blocks; --unfreeze must be ≤ \(blocks.count)")
            }
            if unfreeze == 0 {
                prefixStage = "avgpool"
                features = try shape("_fc.weight")[1]
                pools = false
                break
            }
            let first = blocks.count - unfreeze
            prefixStage = first == 0 ? "stem" : blocks[first - 1]
            var last = 0
            for i in first..<blocks.count {
                let pre = "_blocks.\(i)"
                let dw = try shape(pre + "._depthwise_conv.weight")
                let proj = try shape(pre + "._project_conv.weight")
                let mid = dw[0], out = proj[0]
                var input = mid, expand = 1
                if let e = weights.shape(of: pre + "._expand_conv.weight") {
                    input = e[1]
                    expand = mid / input
                }
                layers.append(Blocks.mbconv(prefix: pre, input: input, output: out, expandRatio: expand, kernel: dw[2],
                                            stride: try stride(blocks[i])))
                stages.append(blocks[i])
                last = out
            }
            let head = try shape("_conv_head.weight")
            guard head[1] == last else { throw TrainingError.parameterShape(key: "_conv_head.weight", expected: [head[0], last, 1, 1], got: head) }
            layers.append(Blocks.liteConvHead(input: last, output: head[0]))
            stages.append("head")
            features = head[0]
            pools = true
        case .resnet:
            let groups = names.filter { $0.hasPrefix("layer") }
            guard unfreeze <= groups.count else {
                throw TrainingError.invalidConfiguration("\(architecture.name) has \(groups.count) layer groups; --unfreeze must be ≤ \(groups.count)")
            }
            if unfreeze == 0 {
                prefixStage = "avgpool"
                features = try shape("fc.weight")[1]
                pools = false
                break
            }
            let first = groups.count - unfreeze
            prefixStage = names[names.firstIndex(of: groups[first])! - 1]
            var last = 0
            for g in groups[first...] {
                let s = try stride(g)
                var j = 0
                while weights.shape(of: "\(g).\(j).conv1.weight") != nil {
                    let pre = "\(g).\(j)"
                    let c1 = try shape(pre + ".conv1.weight")
                    if let c3 = weights.shape(of: pre + ".conv3.weight") {
                        layers.append(Blocks.bottleneckBlock(prefix: pre, input: c1[1], planes: c1[0], stride: j == 0 ? s : 1))
                        last = c3[0]
                    } else {
                        layers.append(Blocks.basicBlock(prefix: pre, input: c1[1], planes: c1[0], stride: j == 0 ? s : 1))
                        last = c1[0]
                    }
                    j += 1
                }
                guard j > 0 else { throw TrainingError.missingKey("\(g).0.conv1.weight") }
                stages.append(g)
            }
            features = last
            pools = true
        case .inception:
            // Only the new head trains: the Inception blocks (towers concatenated on channels) have no
            // differentiable counterpart here yet.
            guard unfreeze == 0 else {
                throw TrainingError.invalidConfiguration("\(architecture.name) fine-tunes only the new head (--unfreeze 0): its Inception blocks cannot be trained yet")
            }
            guard let last = names.last, case let .vector(d) = shapes.last! else {
                throw TrainingError.invalidConfiguration("\(architecture.name): the last stage is not a feature vector")
            }
            prefixStage = last
            features = d
            pools = false
        case .vgg, .mobileNetV2:
            throw TrainingError.invalidConfiguration("fine-tuning supports the efficientnet-lite and resnet families (and inception_v3's head), not \(architecture.family.rawValue)")
        }
        trainableStages = stages
        body = Sequential(layers)
        var state = StateDict()
        for p in body.allParameters {
            let s = try shape(p.name)
            guard s.reduce(1, *) == p.value.count else { throw TrainingError.parameterShape(key: p.name, expected: p.shape, got: s) }
            state.set(p.name, shape: p.shape, values: try weights.load(p.name))
        }
        try body.load(state)
    }
}
