import BottleneckTensor

/// torchvision's MobileNetV2 1.0 (`torchvision.models.mobilenet_v2`, state-dict names of the
/// `IMAGENET1K_V1` checkpoint `mobilenet_v2-b0353104.pth`): inverted residuals without
/// squeeze-excitation, ReLU6, BN eps 1e-5, symmetric padding (k - 1) / 2 on every 3x3 convolution
/// (PyTorch's `padding=1`, not TF "SAME": a stride-2 layer pads one pixel on every side).
///
/// Stages (input first): `features.0` (3x3/2 conv + BN + ReLU6, 32 x H/2), `features.1` ...
/// `features.17` (one inverted residual each), `features.18` (1x1 conv to 1280 + BN + ReLU6),
/// `avgpool` (global average, 1280 features), `classifier` (1000 logits; its dropout is the identity
/// at inference). So cut 0 = classifier, 1 = avgpool, 2 = features.18, 3 = features.17, ...
///
/// Keys: `features.0.{0,1}` (conv, BN); `features.1.conv.{0.0, 0.1, 1, 2}` (depthwise, BN,
/// project, BN: expansion 1 has no expand conv); `features.N.conv.{0.0, 0.1, 1.0, 1.1, 2, 3}`
/// (expand, BN, depthwise, BN, project, BN) for N = 2 ... 17; `features.18.{0,1}`; `classifier.1`.
/// Each block is [expand →] depthwise → project with 1x1 unpadded pointwise convolutions, so
/// `Network` runs it as one fused `InvertedResidual` (with the skip when the block has one).
enum MobileNetV2Family {
    static let names = ["mobilenet_v2"]

    /// (expansion t, output channels c, repeats n, first stride s) of the seven groups, as in the
    /// paper's Table 2 and torchvision's `inverted_residual_setting` (width multiplier 1.0, so no
    /// channel rounding applies).
    static let groups: [(t: Int, c: Int, n: Int, s: Int)] = [
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
    ]
    /// Channels of the stem and of the last 1x1 convolution.
    static let stemChannels = 32, lastChannels = 1280

    static func bn(_ name: String, residual: Bool = false) -> BatchNormSpec {
        BatchNormSpec(name: name, eps: 1e-5, closesResidual: residual)
    }

    static func architecture(_ name: String) -> Architecture? {
        guard names.contains(name) else { return nil }
        let pointwise = Padding.symmetric(0), threeByThree = Padding.symmetric(1)
        var stages: [Stage] = [
            Stage(name: "features.0", summary: "3x3/2 conv + BN + ReLU6",
                  layers: [.conv(name: "features.0.0", inChannels: 3, outChannels: stemChannels, kernel: 3, stride: 2,
                                 padding: threeByThree, bias: false, bn: bn("features.0.1"), activation: .relu6)]),
        ]
        var index = 1, cin = stemChannels
        for group in groups {
            for r in 0..<group.n {
                let stride = r == 0 ? group.s : 1, mid = cin * group.t
                let pre = "features.\(index).conv"
                // torchvision's `use_res_connect`.
                let skip = stride == 1 && cin == group.c
                var body: [LayerSpec] = []
                var next = 0  // index of the next module inside `conv`
                if group.t != 1 {
                    body.append(.conv(name: pre + ".0.0", inChannels: cin, outChannels: mid, kernel: 1, stride: 1, padding: pointwise,
                                      bias: false, bn: bn(pre + ".0.1"), activation: .relu6))
                    next = 1
                }
                body.append(.depthwise(name: pre + ".\(next).0", channels: mid, kernel: 3, stride: stride, padding: threeByThree,
                                       bn: bn(pre + ".\(next).1"), activation: .relu6))
                body.append(.conv(name: pre + ".\(next + 1)", inChannels: mid, outChannels: group.c, kernel: 1, stride: 1,
                                  padding: pointwise, bias: false, bn: bn(pre + ".\(next + 2)", residual: skip), activation: .none))
                let summary = "inverted residual t=\(group.t) 3x3/\(stride) \(cin)->\(group.c)\(skip ? " + skip" : "")"
                stages.append(Stage(name: "features.\(index)", summary: summary,
                                    layers: skip ? [.residual(body: body, shortcut: nil, activation: .none)] : body))
                index += 1
                cin = group.c
            }
        }
        stages.append(Stage(name: "features.\(index)", summary: "1x1 conv to \(lastChannels) + BN + ReLU6",
                            layers: [.conv(name: "features.\(index).0", inChannels: cin, outChannels: lastChannels, kernel: 1,
                                           stride: 1, padding: pointwise, bias: false, bn: bn("features.\(index).1"),
                                           activation: .relu6)]))
        stages.append(Stage(name: "avgpool", summary: "global average pool + flatten", layers: [.globalAvgPool]))
        stages.append(Stage(name: "classifier", summary: "linear to 1000 logits (dropout is the identity)",
                            layers: [.linear(name: "classifier.1", inFeatures: lastChannels, outFeatures: 1000, activation: .none)]))
        return Architecture(name: name, family: .mobileNetV2, presetName: "imagenet", inputSize: 224, stages: stages)
    }
}
