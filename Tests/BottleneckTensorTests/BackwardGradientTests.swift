import BottleneckCore
import XCTest
@testable import BottleneckTensor

/// Finite-difference checks of every backward kernel (`Backward`, `ConvolutionInputGradient`) against the
/// inference forward kernel it differentiates, on NHWC tensors with deterministic random values.
///
/// The loss is `L = Σ y·dy` (accumulated in double), so `dL/dx` and `dL/dθ` are what the backward kernels
/// return for upstream gradient `dy`. Convolutions, linear layers and average pools are linear in the probed
/// variable, so a central difference is exact up to float32 rounding of the forward: step 0.25 and tolerance
/// `2e-3 · max(1, |analytic|)`. Max pooling and activations are piecewise linear: step 1e-3 (max pooling on
/// inputs 0.02 apart, so no probe changes a window's winner), same tolerance.
final class BackwardGradientTests: XCTestCase {
    var rng = SplitMix64(seed: 29)

    func random(_ n: Int, scale: Float = 1) -> [Float] { (0..<n).map { _ in rng.nextSymmetric(scale: scale) } }

    /// Checks `analytic[i]` against the central difference of `loss` at up to 40 coordinates of `values`, at
    /// `step`, then a quarter and a sixteenth of it while it disagrees (a kink of ReLU or a max within a step of
    /// the probe bends one difference; a wrong gradient disagrees at every step).
    func check(_ name: String, _ values: [Float], _ analytic: [Float], step: Float, tolerance: Float = 2e-3,
               file: StaticString = #filePath, line: UInt = #line, loss: ([Float]) -> Double) {
        XCTAssertEqual(values.count, analytic.count, "\(name): gradient length", file: file, line: line)
        let probes = values.count <= 40 ? Array(0..<values.count) : (0..<40).map { ($0 * 7919) % values.count }
        for i in probes {
            var best = Float.infinity, shown: Float = 0
            for h in [step, step / 4, step / 16] where best > tolerance * max(1, abs(analytic[i])) {
                var plus = values, minus = values
                plus[i] += h; minus[i] -= h
                let fd = Float((loss(plus) - loss(minus)) / Double(2 * h))
                if abs(fd - analytic[i]) < best { best = abs(fd - analytic[i]); shown = fd }
            }
            XCTAssertLessThanOrEqual(best, tolerance * max(1, abs(analytic[i])),
                                     "\(name)[\(i)]: finite difference \(shown), analytic \(analytic[i])", file: file, line: line)
        }
    }

    static func dot(_ a: [Float], _ b: [Float]) -> Double { zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) } }

    // MARK: - Dense convolution

    struct ConvCase {
        let batch: Int, height: Int, width: Int
        let shape: ConvolutionShape
        var activation: Activation = .none
        var algorithm: ConvolutionAlgorithm = .direct
        /// Floats of patches the backward kernels hold at once (small values force several blocks).
        var blockFloats = 1 << 20
    }

    func forward(_ c: ConvCase, _ x: [Float], _ w: [Float], _ bias: [Float]) -> [Float] {
        let s = c.shape
        let conv = w.withUnsafeBufferPointer {
            Conv2D(weightOIHW: $0.baseAddress!, outChannels: s.outChannels, inChannels: s.inChannels, kernelH: s.kernelH,
                   kernelW: s.kernelW, stride: s.stride, padding: s.padding, bias: bias, activation: c.activation,
                   algorithm: c.algorithm)
        }
        let (oh, ow) = s.outputSize(height: c.height, width: c.width)
        var y = [Float](repeating: .nan, count: c.batch * oh * ow * s.outChannels)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
            conv.forward(input: xp.baseAddress!, batch: c.batch, height: c.height, width: c.width, output: yp.baseAddress!)
        } }
        return y
    }

    func checkConvolution(_ c: ConvCase, _ name: String, file: StaticString = #filePath, line: UInt = #line) {
        let s = c.shape
        let x = random(c.batch * c.height * c.width * s.inChannels)
        let w = random(s.outChannels * s.patchLength, scale: 0.5)
        let bias = random(s.outChannels, scale: 0.5)
        let y = forward(c, x, w, bias)
        let dy = random(y.count)
        // Backward: activation mask, then bias, weight and input gradients.
        var g = dy
        y.withUnsafeBufferPointer { yp in g.withUnsafeMutableBufferPointer { gp in
            Backward.activation(c.activation, output: yp.baseAddress!, gradient: gp.baseAddress!, count: y.count)
        } }
        var dBias = [Float](repeating: 0, count: s.outChannels)
        var dWRows = [Float](repeating: 0, count: s.outChannels * s.patchLength)
        var dx = [Float](repeating: .nan, count: x.count)
        let gradient = ConvolutionInputGradient(weightOIHW: w, shape: s)
        g.withUnsafeBufferPointer { gp in
            Backward.accumulateChannelSums(gp.baseAddress!, rows: y.count / s.outChannels, channels: s.outChannels,
                                           into: &dBias)
            x.withUnsafeBufferPointer { xp in dWRows.withUnsafeMutableBufferPointer { wp in
                Backward.convolutionWeightGradient(s, input: xp.baseAddress!, batch: c.batch, height: c.height, width: c.width,
                                                   outputGradient: gp.baseAddress!, accumulate: wp.baseAddress!,
                                                   blockFloats: c.blockFloats, options: .default)
            } }
            dx.withUnsafeMutableBufferPointer { dp in
                gradient.run(outputGradient: gp.baseAddress!, batch: c.batch, height: c.height, width: c.width, into: dp.baseAddress!,
                             blockFloats: c.blockFloats, options: .default)
            }
        }
        // [Cout][kh][kw][Cin] rows to PyTorch's [Cout][Cin][kh][kw].
        var dW = [Float](repeating: 0, count: dWRows.count)
        for o in 0..<s.outChannels { for i in 0..<s.inChannels { for t in 0..<(s.kernelH * s.kernelW) {
            dW[(o * s.inChannels + i) * s.kernelH * s.kernelW + t] = dWRows[(o * s.kernelH * s.kernelW + t) * s.inChannels + i]
        } } }
        let piecewise = c.activation != .none
        let step: Float = piecewise ? 1e-3 : 0.25
        check("\(name) dx", x, dx, step: step, file: file, line: line) { Self.dot(forward(c, $0, w, bias), dy) }
        check("\(name) dW", w, dW, step: step, file: file, line: line) { Self.dot(forward(c, x, $0, bias), dy) }
        check("\(name) db", bias, dBias, step: step, file: file, line: line) { Self.dot(forward(c, x, w, $0), dy) }
    }

    func testConvolutionGradients() {
        checkConvolution(ConvCase(batch: 2, height: 7, width: 8, shape: ConvolutionShape(
            inChannels: 3, outChannels: 5, kernelH: 3, kernelW: 3, stride: 2, padding: .same)), "3x3/2 same")
        checkConvolution(ConvCase(batch: 2, height: 6, width: 5, shape: ConvolutionShape(
            inChannels: 8, outChannels: 16, kernelH: 3, kernelW: 3, stride: 1, padding: .symmetric(1)), algorithm: .winograd),
            "3x3/1 winograd forward")
        checkConvolution(ConvCase(batch: 3, height: 4, width: 3, shape: ConvolutionShape(
            inChannels: 8, outChannels: 5, kernelH: 1, kernelW: 1, stride: 1, padding: .symmetric(0))), "1x1/1")
        checkConvolution(ConvCase(batch: 2, height: 5, width: 5, shape: ConvolutionShape(
            inChannels: 4, outChannels: 6, kernelH: 1, kernelW: 1, stride: 2, padding: .symmetric(0))), "1x1/2")
        checkConvolution(ConvCase(batch: 1, height: 9, width: 9, shape: ConvolutionShape(
            inChannels: 4, outChannels: 8, kernelH: 1, kernelW: 7, stride: 1, padding: .explicit(top: 0, left: 3, bottom: 0, right: 3))),
            "1x7")
        checkConvolution(ConvCase(batch: 2, height: 6, width: 6, shape: ConvolutionShape(
            inChannels: 4, outChannels: 8, kernelH: 3, kernelW: 3, stride: 1, padding: .symmetric(1)), activation: .relu), "3x3 relu")
        checkConvolution(ConvCase(batch: 2, height: 5, width: 4, shape: ConvolutionShape(
            inChannels: 4, outChannels: 8, kernelH: 1, kernelW: 1, stride: 1, padding: .same), activation: .relu6), "1x1 relu6")
    }

    /// Blocks smaller than the batch: the input gradient runs one image per block, the weight gradient
    /// 41-row blocks that cut images apart.
    func testConvolutionGradientsAcrossBlocks() {
        checkConvolution(ConvCase(batch: 3, height: 6, width: 6, shape: ConvolutionShape(
            inChannels: 4, outChannels: 8, kernelH: 3, kernelW: 3, stride: 1, padding: .symmetric(1)), blockFloats: 1500),
            "3x3 blocked")
    }

    // MARK: - Depthwise

    func testDepthwiseGradients() {
        for (shape, h, w, act) in [
            (ConvolutionShape(inChannels: 6, outChannels: 6, kernelH: 5, kernelW: 5, stride: 2, padding: .same, isDepthwise: true),
             8, 9, Activation.none),
            (ConvolutionShape(inChannels: 20, outChannels: 20, kernelH: 3, kernelW: 3, stride: 1, padding: .symmetric(1), isDepthwise: true),
             6, 7, .relu6),
            // Stride 1 takes the rotated-filter forward for dx: TF-SAME 5x5, and unpadded 3x3 (dx padded by 2).
            (ConvolutionShape(inChannels: 24, outChannels: 24, kernelH: 5, kernelW: 5, stride: 1, padding: .same, isDepthwise: true),
             7, 6, .none),
            (ConvolutionShape(inChannels: 19, outChannels: 19, kernelH: 3, kernelW: 3, stride: 1, padding: .symmetric(0), isDepthwise: true),
             6, 5, .none),
        ] {
            let batch = 2, c = shape.inChannels, k = shape.kernelH * shape.kernelW
            let x = random(batch * h * w * c)
            let weight = random(c * k, scale: 0.5)   // PyTorch [C][1][kh][kw]
            let bias = random(c, scale: 0.5)
            func run(_ x: [Float], _ weight: [Float], _ bias: [Float]) -> [Float] {
                let conv = weight.withUnsafeBufferPointer {
                    DepthwiseConv2D(weightC1HW: $0.baseAddress!, channels: c, kernelH: shape.kernelH, kernelW: shape.kernelW,
                                    stride: shape.stride, padding: shape.padding, bias: bias, activation: act)
                }
                let (oh, ow) = shape.outputSize(height: h, width: w)
                var y = [Float](repeating: .nan, count: batch * oh * ow * c)
                x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                    conv.forward(input: xp.baseAddress!, batch: batch, height: h, width: w, output: yp.baseAddress!)
                } }
                return y
            }
            let y = run(x, weight, bias)
            let dy = random(y.count)
            var g = dy
            Backward.activation(act, output: y, gradient: &g, count: y.count)
            var hwc = [Float](repeating: 0, count: k * c)   // the kernel's [kh][kw][C] layout
            for ch in 0..<c { for t in 0..<k { hwc[t * c + ch] = weight[ch * k + t] } }
            var dWhwc = [Float](repeating: 0, count: k * c), dx = [Float](repeating: .nan, count: x.count)
            var dBias = [Float](repeating: 0, count: c)
            Backward.accumulateChannelSums(g, rows: g.count / c, channels: c, into: &dBias)
            Backward.depthwise(shape, input: x, batch: batch, height: h, width: w, weights: hwc, outputGradient: g,
                               accumulateWeightGradient: &dWhwc, inputGradient: &dx)
            var dW = [Float](repeating: 0, count: k * c)
            for ch in 0..<c { for t in 0..<k { dW[ch * k + t] = dWhwc[t * c + ch] } }
            let step: Float = act == .none ? 0.25 : 1e-3
            let name = "depthwise \(shape.kernelH)x\(shape.kernelW)/\(shape.stride)"
            check("\(name) dx", x, dx, step: step) { Self.dot(run($0, weight, bias), dy) }
            check("\(name) dW", weight, dW, step: step) { Self.dot(run(x, $0, bias), dy) }
            check("\(name) db", bias, dBias, step: step) { Self.dot(run(x, weight, $0), dy) }
        }
    }

    // MARK: - Linear

    func testLinearGradients() {
        let batch = 3, inF = 11, outF = 6
        let x = random(batch * inF), w = random(outF * inF, scale: 0.5), b = random(outF)
        func run(_ x: [Float], _ w: [Float], _ b: [Float]) -> [Float] {
            var y = [Float](repeating: .nan, count: batch * outF)
            Linear.forward(input: x, batch: batch, weight: w, outFeatures: outF, inFeatures: inF, bias: b, activation: .none,
                           output: &y)
            return y
        }
        let dy = random(batch * outF)
        var dW = [Float](repeating: 0, count: w.count), dx = [Float](repeating: .nan, count: x.count)
        var db = [Float](repeating: 0, count: outF)
        Backward.linear(input: x, batch: batch, inFeatures: inF, outFeatures: outF, weight: w, outputGradient: dy,
                        accumulateWeightGradient: &dW, inputGradient: &dx)
        Backward.accumulateChannelSums(dy, rows: batch, channels: outF, into: &db)
        check("linear dx", x, dx, step: 0.25) { Self.dot(run($0, w, b), dy) }
        check("linear dW", w, dW, step: 0.25) { Self.dot(run(x, $0, b), dy) }
        check("linear db", b, db, step: 0.25) { Self.dot(run(x, w, $0), dy) }
    }

    // MARK: - Pooling

    /// Values on a grid 0.02 apart, shuffled: no two inputs of a window within a probe step of each other.
    func distinct(_ n: Int) -> [Float] {
        var v = (0..<n).map { Float($0) * 0.02 - Float(n) * 0.01 }
        for i in stride(from: n - 1, to: 0, by: -1) { v.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        return v
    }

    func testPoolingGradients() {
        let batch = 2, h = 7, w = 6, c = 10
        let x = distinct(batch * h * w * c)
        typealias Pool = (name: String, out: (Int, Int), forward: ([Float]) -> [Float], backward: ([Float]) -> [Float])
        func pool(_ name: String, _ oh: Int, _ ow: Int, _ f: @escaping (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void,
                  _ b: @escaping (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> Pool {
            (name, (oh, ow), { x in
                var y = [Float](repeating: .nan, count: batch * oh * ow * c)
                x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { f(xp.baseAddress!, $0.baseAddress!) } }
                return y
            }, { g in
                var dx = [Float](repeating: .nan, count: x.count)
                g.withUnsafeBufferPointer { gp in dx.withUnsafeMutableBufferPointer { b(gp.baseAddress!, $0.baseAddress!) } }
                return dx
            })
        }
        let (mh, mw) = Pooling2D.outputSize(height: h, width: w, kernel: 3, stride: 2, padding: 1)
        let (ah, aw) = Pooling2D.outputSize(height: h, width: w, kernel: 3, stride: 1, padding: 1)
        var pools: [Pool] = [
            pool("max 3x3/2", mh, mw, { Pooling2D.maxPool(input: $0, batch: batch, height: h, width: w, channels: c, kernel: 3,
                                                           stride: 2, padding: 1, output: $1) },
                 { g, dx in x.withUnsafeBufferPointer {
                     Backward.maxPool(input: $0.baseAddress!, batch: batch, height: h, width: w, channels: c, kernel: 3, stride: 2,
                                      padding: 1, outputGradient: g, into: dx) } }),
            pool("adaptive 3x4", 3, 4, { Pooling2D.adaptiveAvgPool(input: $0, batch: batch, height: h, width: w, channels: c,
                                                                   outHeight: 3, outWidth: 4, output: $1) },
                 { Backward.adaptiveAvgPool(batch: batch, height: h, width: w, channels: c, outHeight: 3, outWidth: 4,
                                            outputGradient: $0, into: $1) }),
            pool("global", 1, 1, { Pooling2D.global(input: $0, batch: batch, height: h, width: w, channels: c, max: false, output: $1) },
                 { Backward.globalAvgPool(batch: batch, height: h, width: w, channels: c, outputGradient: $0, into: $1) }),
        ]
        for includePad in [true, false] {
            pools.append(pool("avg 3x3/1 includePad \(includePad)", ah, aw, {
                Pooling2D.avgPool(input: $0, batch: batch, height: h, width: w, channels: c, kernel: 3, stride: 1, padding: 1,
                                  countIncludePad: includePad, output: $1)
            }, { Backward.avgPool(batch: batch, height: h, width: w, channels: c, kernel: 3, stride: 1, padding: 1,
                                  countIncludePad: includePad, outputGradient: $0, into: $1) }))
        }
        for p in pools {
            let dy = random(batch * p.out.0 * p.out.1 * c)
            check("\(p.name) dx", x, p.backward(dy), step: 1e-3) { Self.dot(p.forward($0), dy) }
        }
    }
}
