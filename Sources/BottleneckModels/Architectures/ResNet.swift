import BottleneckTensor

/// torchvision ResNets (v1.5: the stride of a bottleneck block sits on its 3x3 convolution).
///
/// Stages (input first; `--cut N` removes the last N):
/// `conv1` (7x7/2 conv + bn1 + ReLU, 64 x H/2), `maxpool` (3x3/2, 64 x H/4), `layer1` ... `layer4`
/// (stride 1, 2, 2, 2; 64/128/256/512 channels, x4 for bottleneck models), `avgpool` (global average,
/// 512 or 2048 features), `fc` (1000 logits). So cut 0 = fc, 1 = avgpool, 2 = layer4, ..., 7 = conv1.
enum ResNetFamily {
    static let configs: [(name: String, bottleneck: Bool, blocks: [Int])] = [
        ("resnet18", false, [2, 2, 2, 2]), ("resnet34", false, [3, 4, 6, 3]), ("resnet50", true, [3, 4, 6, 3]),
        ("resnet101", true, [3, 4, 23, 3]), ("resnet152", true, [3, 8, 36, 3]),
    ]
    static var names: [String] { configs.map(\.name) }

    static func bn(_ name: String, residual: Bool = false) -> BatchNormSpec {
        BatchNormSpec(name: name, eps: 1e-5, closesResidual: residual)
    }

    static func architecture(_ name: String) -> Architecture? {
        guard let config = configs.first(where: { $0.name == name }) else { return nil }
        let expansion = config.bottleneck ? 4 : 1
        var stages: [Stage] = [
            Stage(name: "conv1", summary: "7x7/2 conv + BN + ReLU",
                  layers: [.conv(name: "conv1", inChannels: 3, outChannels: 64, kernel: 7, stride: 2, padding: .symmetric(3),
                                 bias: false, bn: bn("bn1"), activation: .relu)]),
            Stage(name: "maxpool", summary: "3x3/2 max pool", layers: [.maxPool(kernel: 3, stride: 2, padding: 1)]),
        ]
        var inplanes = 64
        for (li, count) in config.blocks.enumerated() {
            let planes = 64 << li, stride = li == 0 ? 1 : 2
            var blocks: [LayerSpec] = []
            for b in 0..<count {
                let p = "layer\(li + 1).\(b)", s = b == 0 ? stride : 1
                var body: [LayerSpec]
                if config.bottleneck {
                    body = [
                        .conv(name: p + ".conv1", inChannels: inplanes, outChannels: planes, kernel: 1, stride: 1,
                              padding: .symmetric(0), bias: false, bn: bn(p + ".bn1"), activation: .relu),
                        .conv(name: p + ".conv2", inChannels: planes, outChannels: planes, kernel: 3, stride: s,
                              padding: .symmetric(1), bias: false, bn: bn(p + ".bn2"), activation: .relu),
                        .conv(name: p + ".conv3", inChannels: planes, outChannels: planes * 4, kernel: 1, stride: 1,
                              padding: .symmetric(0), bias: false, bn: bn(p + ".bn3", residual: true), activation: .none),
                    ]
                } else {
                    body = [
                        .conv(name: p + ".conv1", inChannels: inplanes, outChannels: planes, kernel: 3, stride: s,
                              padding: .symmetric(1), bias: false, bn: bn(p + ".bn1"), activation: .relu),
                        .conv(name: p + ".conv2", inChannels: planes, outChannels: planes, kernel: 3, stride: 1,
                              padding: .symmetric(1), bias: false, bn: bn(p + ".bn2", residual: true), activation: .none),
                    ]
                }
                var shortcut: [LayerSpec]? = nil
                if s != 1 || inplanes != planes * expansion {
                    shortcut = [.conv(name: p + ".downsample.0", inChannels: inplanes, outChannels: planes * expansion,
                                      kernel: 1, stride: s, padding: .symmetric(0), bias: false,
                                      bn: bn(p + ".downsample.1"), activation: .none)]
                }
                blocks.append(.residual(body: body, shortcut: shortcut, activation: .relu))
                inplanes = planes * expansion
            }
            stages.append(Stage(name: "layer\(li + 1)", summary: "\(count) \(config.bottleneck ? "bottleneck" : "basic") blocks",
                                layers: blocks))
        }
        stages.append(Stage(name: "avgpool", summary: "global average pool + flatten", layers: [.globalAvgPool]))
        stages.append(Stage(name: "fc", summary: "linear to 1000 logits",
                            layers: [.linear(name: "fc", inFeatures: inplanes, outFeatures: 1000, activation: .none)]))
        return Architecture(name: name, family: .resnet, presetName: "imagenet", inputSize: 224, stages: stages)
    }
}
