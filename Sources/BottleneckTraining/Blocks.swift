/// Builders for the trainable top of the supported architectures, with PyTorch state-dict names.
public enum Blocks {
    /// EfficientNet-Lite `MBConvBlock` (no squeeze-excitation; ReLU6), named `<prefix>._expand_conv`, `._bn0`,
    /// `._depthwise_conv`, `._bn1`, `._project_conv`, `._bn2` as in the efficientnet-lite checkpoints.
    ///
    /// - expand 1×1 conv + BN + ReLU6 (omitted when `expandRatio == 1`), depthwise k×k conv (TF-SAME, `stride`)
    ///   + BN + ReLU6, project 1×1 conv + BN; identity skip when `stride == 1 && input == output`.
    /// - BatchNorm uses eps 1e-3 and PyTorch momentum 0.01 (TensorFlow's 0.99).
    public static func mbconv(prefix: String, input: Int, output: Int, expandRatio: Int, kernel: Int, stride: Int) -> Layer {
        let mid = input * expandRatio
        var body: [Layer] = []
        if expandRatio != 1 {
            body += [Conv2d(name: prefix + "._expand_conv", inChannels: input, outChannels: mid, kernelSize: 1),
                     liteBN(prefix + "._bn0", mid), ReLU6()]
        }
        body += [Conv2d(name: prefix + "._depthwise_conv", inChannels: mid, outChannels: mid, kernelSize: kernel,
                        stride: stride, padding: .tfSame, groups: mid),
                 liteBN(prefix + "._bn1", mid), ReLU6(),
                 Conv2d(name: prefix + "._project_conv", inChannels: mid, outChannels: output, kernelSize: 1),
                 liteBN(prefix + "._bn2", output)]
        let seq = Sequential(body)
        return stride == 1 && input == output ? Residual(body: seq) : seq
    }

    /// EfficientNet-Lite head: `_conv_head` 1×1 + `_bn1` + ReLU6 (the 1280-channel map).
    public static func liteConvHead(input: Int, output: Int = 1280) -> Sequential {
        Sequential([Conv2d(name: "_conv_head", inChannels: input, outChannels: output, kernelSize: 1),
                    liteBN("_bn1", output), ReLU6()])
    }

    static func liteBN(_ name: String, _ c: Int) -> BatchNorm2d { BatchNorm2d(name: name, channels: c, eps: 1e-3, momentum: 0.01) }

    /// torchvision ResNet `BasicBlock` named `<prefix>.conv1/bn1/conv2/bn2[/downsample.0/.1]`: two 3×3 convs,
    /// a 1×1 strided projection when the shape changes, ReLU after the sum.
    public static func basicBlock(prefix: String, input: Int, planes: Int, stride: Int) -> Layer {
        let body = Sequential([
            Conv2d(name: prefix + ".conv1", inChannels: input, outChannels: planes, kernelSize: 3, stride: stride, padding: .symmetric(1)),
            BatchNorm2d(name: prefix + ".bn1", channels: planes), ReLU(),
            Conv2d(name: prefix + ".conv2", inChannels: planes, outChannels: planes, kernelSize: 3, padding: .symmetric(1)),
            BatchNorm2d(name: prefix + ".bn2", channels: planes),
        ])
        return Residual(body: body, shortcut: downsample(prefix, input, planes, stride), post: ReLU())
    }

    /// torchvision ResNet `Bottleneck` (v1.5: stride on the 3×3), expansion 4, named
    /// `<prefix>.conv1/bn1/conv2/bn2/conv3/bn3[/downsample.0/.1]`.
    public static func bottleneckBlock(prefix: String, input: Int, planes: Int, stride: Int) -> Layer {
        let out = planes * 4
        let body = Sequential([
            Conv2d(name: prefix + ".conv1", inChannels: input, outChannels: planes, kernelSize: 1),
            BatchNorm2d(name: prefix + ".bn1", channels: planes), ReLU(),
            Conv2d(name: prefix + ".conv2", inChannels: planes, outChannels: planes, kernelSize: 3, stride: stride, padding: .symmetric(1)),
            BatchNorm2d(name: prefix + ".bn2", channels: planes), ReLU(),
            Conv2d(name: prefix + ".conv3", inChannels: planes, outChannels: out, kernelSize: 1),
            BatchNorm2d(name: prefix + ".bn3", channels: out),
        ])
        return Residual(body: body, shortcut: downsample(prefix, input, out, stride), post: ReLU())
    }

    private static func downsample(_ prefix: String, _ input: Int, _ output: Int, _ stride: Int) -> Layer? {
        guard stride != 1 || input != output else { return nil }
        return Sequential([
            Conv2d(name: prefix + ".downsample.0", inChannels: input, outChannels: output, kernelSize: 1, stride: stride),
            BatchNorm2d(name: prefix + ".downsample.1", channels: output),
        ])
    }

    /// Global average pool, (eval-mode) dropout and a linear classifier named `name`.
    public static func classifier(name: String, features: Int, classes: Int, dropout: Float = 0) -> Sequential {
        var layers: [Layer] = [GlobalAvgPool()]
        if dropout > 0 { layers.append(Dropout(p: dropout)) }
        layers.append(Linear(name: name, inFeatures: features, outFeatures: classes))
        return Sequential(layers)
    }
}
