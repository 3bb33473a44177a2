/// Max pooling over NCHW (PyTorch `nn.MaxPool2d`, floor mode, implicit −∞ padding). The backward pass routes
/// each output gradient to the first maximal input of its window, as PyTorch does.
public final class MaxPool2d: Layer {
    /// Window size, stride and symmetric padding.
    public let kernel: Int, stride: Int, padding: Int
    private var inputShape: [Int] = []
    private var argmax: [Int32] = []

    /// Creates a max-pool layer.
    public init(kernel: Int, stride: Int, padding: Int = 0) {
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
    }

    public func forward(_ x: TrainTensor) throws -> TrainTensor {
        guard x.shape.count == 4 else {
            throw TrainingError.shapeMismatch(layer: "MaxPool2d", expected: "[N, C, H, W]", got: x.shape)
        }
        let h = x.height, w = x.width
        let oh = (h + 2 * padding - kernel) / stride + 1, ow = (w + 2 * padding - kernel) / stride + 1
        let planes = x.batch * x.channels
        inputShape = x.shape
        var y = TrainTensor(zeros: [x.batch, x.channels, oh, ow])
        argmax = [Int32](repeating: -1, count: y.count)
        x.data.withUnsafeBufferPointer { xp in
            y.data.withUnsafeMutableBufferPointer { yp in
                argmax.withUnsafeMutableBufferPointer { ap in
                    for pl in 0..<planes {
                        let xs = xp.baseAddress! + pl * h * w
                        for oy in 0..<oh {
                            for ox in 0..<ow {
                                var best = -Float.infinity, bi = -1
                                for i in 0..<kernel {
                                    let iy = oy * stride - padding + i
                                    if iy < 0 || iy >= h { continue }
                                    for j in 0..<kernel {
                                        let ix = ox * stride - padding + j
                                        if ix < 0 || ix >= w { continue }
                                        let v = xs[iy * w + ix]
                                        if v > best || bi < 0 || v.isNaN { best = v; bi = iy * w + ix }
                                    }
                                }
                                let o = (pl * oh + oy) * ow + ox
                                yp[o] = best
                                ap[o] = Int32(bi)
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    public func backward(_ dy: TrainTensor) -> TrainTensor {
        var dx = TrainTensor(zeros: inputShape)
        let hw = inputShape[2] * inputShape[3], ohw = dy.height * dy.width
        dy.data.withUnsafeBufferPointer { dp in
            argmax.withUnsafeBufferPointer { ap in
                dx.data.withUnsafeMutableBufferPointer { xp in
                    for o in 0..<dp.count where ap[o] >= 0 {
                        xp[(o / ohw) * hw + Int(ap[o])] += dp[o]
                    }
                }
            }
        }
        return dx
    }
}

/// Global average pooling and flattening: `[N, C, H, W] → [N, C]` (`AdaptiveAvgPool2d(1)` + `view(N, -1)`).
public final class GlobalAvgPool: Layer {
    private var inputShape: [Int] = []

    /// Creates the pooling layer.
    public init() {}

    public func forward(_ x: TrainTensor) throws -> TrainTensor {
        guard x.shape.count == 4 else {
            throw TrainingError.shapeMismatch(layer: "GlobalAvgPool", expected: "[N, C, H, W]", got: x.shape)
        }
        inputShape = x.shape
        let hw = x.height * x.width, planes = x.batch * x.channels
        var y = TrainTensor(zeros: [x.batch, x.channels])
        let inv = 1 / Float(hw)
        x.data.withUnsafeBufferPointer { xp in
            y.data.withUnsafeMutableBufferPointer { yp in
                for pl in 0..<planes {
                    let s = xp.baseAddress! + pl * hw
                    var acc: Float = 0
                    for i in 0..<hw { acc += s[i] }
                    yp[pl] = acc * inv
                }
            }
        }
        return y
    }

    public func backward(_ dy: TrainTensor) -> TrainTensor {
        var dx = TrainTensor(zeros: inputShape)
        let hw = inputShape[2] * inputShape[3]
        let inv = 1 / Float(hw)
        dy.data.withUnsafeBufferPointer { dp in
            dx.data.withUnsafeMutableBufferPointer { xp in
                for pl in 0..<dp.count {
                    let v = dp[pl] * inv
                    let d = xp.baseAddress! + pl * hw
                    for i in 0..<hw { d[i] = v }
                }
            }
        }
        return dx
    }
}
