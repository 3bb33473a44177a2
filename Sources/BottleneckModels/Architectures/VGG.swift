import BottleneckTensor

/// torchvision VGGs, with and without batch norm.
///
/// Stages (input first): one per convolution, `conv{block}_{i}` (conv [+ BN] + ReLU, named as in the
/// original Caffe model), `pool{block}` after each block (2x2/2 max pool; `pool5` is 512 x H/32), then
/// `fc6` (adaptive average pool to 7x7 + flatten + linear 25088 -> 4096 + ReLU), `fc7` (4096 + ReLU),
/// `fc8` (1000 logits). Dropout is the identity at inference. So cut 0 = fc8, 1 = fc7, 2 = fc6,
/// 3 = pool5, 4 = the last conv, ...
/// State-dict names are torchvision's `features.{i}` (conv at i, BN at i+1) and `classifier.{0,3,6}`.
enum VGGFamily {
    static let configs: [(name: String, blocks: [Int])] = [
        ("vgg11", [1, 1, 2, 2, 2]), ("vgg13", [2, 2, 2, 2, 2]), ("vgg16", [2, 2, 3, 3, 3]), ("vgg19", [2, 2, 4, 4, 4]),
    ]
    static var names: [String] { configs.flatMap { [$0.name, $0.name + "_bn"] } }

    static func architecture(_ name: String) -> Architecture? {
        let batchNorm = name.hasSuffix("_bn")
        let base = batchNorm ? String(name.dropLast(3)) : name
        guard let config = configs.first(where: { $0.name == base }) else { return nil }
        var stages: [Stage] = []
        var index = 0, cin = 3
        for (b, convs) in config.blocks.enumerated() {
            let cout = min(512, 64 << b)
            for i in 0..<convs {
                let bn = batchNorm ? BatchNormSpec(name: "features.\(index + 1)", eps: 1e-5, closesResidual: false) : nil
                stages.append(Stage(name: "conv\(b + 1)_\(i + 1)", summary: "3x3 conv\(batchNorm ? " + BN" : "") + ReLU",
                                    layers: [.conv(name: "features.\(index)", inChannels: cin, outChannels: cout, kernel: 3,
                                                   stride: 1, padding: .symmetric(1), bias: true, bn: bn, activation: .relu)]))
                index += batchNorm ? 3 : 2
                cin = cout
            }
            stages.append(Stage(name: "pool\(b + 1)", summary: "2x2/2 max pool", layers: [.maxPool(kernel: 2, stride: 2, padding: 0)]))
            index += 1
        }
        stages.append(Stage(name: "fc6", summary: "adaptive avg pool 7x7 + flatten + linear 4096 + ReLU",
                            layers: [.adaptiveAvgPool(height: 7, width: 7),
                                     .linear(name: "classifier.0", inFeatures: 512 * 49, outFeatures: 4096, activation: .relu)]))
        stages.append(Stage(name: "fc7", summary: "linear 4096 + ReLU",
                            layers: [.linear(name: "classifier.3", inFeatures: 4096, outFeatures: 4096, activation: .relu)]))
        stages.append(Stage(name: "fc8", summary: "linear to 1000 logits",
                            layers: [.linear(name: "classifier.6", inFeatures: 4096, outFeatures: 1000, activation: .none)]))
        return Architecture(name: name, family: .vgg, presetName: "imagenet", inputSize: 224, stages: stages)
    }
}
