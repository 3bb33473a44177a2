import BottleneckCore
import Foundation
import XCTest
import BottleneckTensor

/// Kernel parity against torch.nn.functional (fixtures from Tests/Reference/models/kernels.py).
/// Inputs and weights are regenerated here from the same SplitMix64 streams.
/// Metric: max|ours - torch| / max(1, max|torch|) <= 1e-5 (single layers: only float32 reordering
/// of the sums separates the two), or `winogradTolerance` for the Winograd path.
final class KernelParityTests: XCTestCase {
    /// `conv` on NHWC `input`, its output buffer filled with NaN first (so unwritten pixels show), plus
    /// `residual` (the output's shape) when given.
    static func forwardOverNaNs(_ conv: Conv2D, input x: [Float], batch n: Int, height h: Int, width w: Int,
                                residual: [Float]?) -> [Float] {
        let (oh, ow) = conv.outputSize(height: h, width: w)
        var out = [Float](repeating: .nan, count: n * oh * ow * conv.outChannels)
        x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
            if let residual {
                residual.withUnsafeBufferPointer { rp in
                    conv.forward(input: xp.baseAddress!, batch: n, height: h, width: w, output: op.baseAddress!, residual: rp.baseAddress!)
                }
            } else {
                conv.forward(input: xp.baseAddress!, batch: n, height: h, width: w, output: op.baseAddress!, residual: nil)
            }
        } }
        return out
    }

    let tolerance: Float = 1e-5
    /// Winograd F(4x4, 3x3) rounds differently: the input transform multiplies by up to 5 and sums 4
    /// to 6 terms, the output transform by up to 8, so each transformed value carries a few ulps of
    /// error of the patch's magnitude before the Cin-long sums. Measured on the fixtures below:
    /// 6.1e-6 (Cin 64) and 7.8e-6 (Cin 320, folded BN); at most 9.3e-6 against the direct path on
    /// the random layers of `testWinogradMatchesDirect` (Cin 256). 5e-5 leaves 5x room for other
    /// shapes without hiding a wrong transform (which errs by O(1)).
    let winogradTolerance: Float = 5e-5

    func fixture(_ name: String) throws -> NumpyArray {
        guard let url = Bundle.module.url(forResource: name, withExtension: "npy", subdirectory: "Fixtures/kernels") else {
            throw XCTSkip("fixture \(name).npy missing: run /opt/refvenv/bin/python Tests/Reference/models/kernels.py")
        }
        return try NumpyArray(contentsOf: url)
    }

    /// max |ours - reference| / max(1, max |reference|); infinite where `ours` holds a NaN (an output
    /// never written: the tests fill outputs with NaN), which `max` would otherwise drop.
    func relativeMaxError(_ ours: [Float], _ reference: [Float]) -> Float {
        var maxDiff: Float = 0, maxRef: Float = 0
        for i in 0..<ours.count {
            let d = abs(ours[i] - reference[i])
            maxDiff = d.isNaN ? .infinity : max(maxDiff, d); maxRef = max(maxRef, abs(reference[i]))
        }
        return maxDiff / max(1, maxRef)
    }

    @discardableResult
    func assertParity(_ ours: [Float], _ name: String, tolerance: Float? = nil,
                      file: StaticString = #filePath, line: UInt = #line) throws -> Float {
        let ref = try fixture(name)
        let expected = ref.floats
        XCTAssertEqual(ours.count, expected.count, "\(name): element count", file: file, line: line)
        guard ours.count == expected.count else { return .infinity }
        let err = relativeMaxError(ours, expected)
        XCTAssertLessThanOrEqual(err, tolerance ?? self.tolerance, "\(name): relative max error \(err)", file: file, line: line)
        return err
    }

    /// NCHW synthetic input converted to NHWC.
    func inputNHWC(_ name: String, _ n: Int, _ c: Int, _ h: Int, _ w: Int) -> [Float] {
        let nchw = SyntheticFill.input(name: name, shape: [n, c, h, w])
        var out = [Float](repeating: 0, count: nchw.count)
        nchw.withUnsafeBufferPointer { s in out.withUnsafeMutableBufferPointer { d in
            Layout.nchwToNhwc(s.baseAddress!, batch: n, channels: c, height: h, width: w, into: d.baseAddress!) } }
        return out
    }

    func toNCHW(_ nhwc: [Float], _ n: Int, _ h: Int, _ w: Int, _ c: Int) -> [Float] {
        var out = [Float](repeating: 0, count: nhwc.count)
        nhwc.withUnsafeBufferPointer { s in out.withUnsafeMutableBufferPointer { d in
            Layout.nhwcToNchw(s.baseAddress!, batch: n, height: h, width: w, channels: c, into: d.baseAddress!) } }
        return out
    }

    func runConv(_ c: String, n: Int, cin: Int, h: Int, w: Int, cout: Int, k: Int, stride: Int, padding: Padding,
                 bias: Bool, activation: Activation = .none, residual: Bool = false,
                 scale: [Float]? = nil, shift: [Float]? = nil, algorithm: ConvolutionAlgorithm = .direct) -> [Float] {
        let x = inputNHWC(c + ".x", n, cin, h, w)
        let weight = SyntheticFill.values(name: c + ".w", kind: .weight, shape: [cout, cin, k, k])
        let b = bias ? SyntheticFill.values(name: c + ".b", kind: .bias, shape: [cout]) : shift
        let conv = weight.withUnsafeBufferPointer {
            Conv2D(weightOIHW: $0.baseAddress!, outChannels: cout, inChannels: cin, kernelH: k, kernelW: k, stride: stride,
                   padding: padding, channelScale: scale, bias: b, activation: activation, algorithm: algorithm)
        }
        XCTAssertEqual(conv.usesWinograd, algorithm == .winograd)
        let (oh, ow) = conv.outputSize(height: h, width: w)
        var out = [Float](repeating: .nan, count: n * oh * ow * cout)
        let r = residual ? inputNHWC(c + ".r", n, cout, oh, ow) : []
        x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in r.withUnsafeBufferPointer { rp in
            conv.forward(input: xp.baseAddress!, batch: n, height: h, width: w, output: op.baseAddress!,
                         residual: residual ? rp.baseAddress! : nil)
        } } }
        return toNCHW(out, n, oh, ow, cout)
    }

    func testConvolutions() throws {
        try assertParity(runConv("conv3x3_s1_p1_bias_relu", n: 2, cin: 5, h: 9, w: 7, cout: 6, k: 3, stride: 1,
                                 padding: .symmetric(1), bias: true, activation: .relu), "conv3x3_s1_p1_bias_relu")
        try assertParity(runConv("conv7x7_s2_p3", n: 1, cin: 3, h: 17, w: 15, cout: 8, k: 7, stride: 2,
                                 padding: .symmetric(3), bias: false), "conv7x7_s2_p3")
        try assertParity(runConv("conv1x1_s1_bias", n: 2, cin: 16, h: 5, w: 6, cout: 12, k: 1, stride: 1,
                                 padding: .symmetric(0), bias: true), "conv1x1_s1_bias")
        try assertParity(runConv("conv1x1_s2", n: 2, cin: 16, h: 7, w: 7, cout: 8, k: 1, stride: 2,
                                 padding: .symmetric(0), bias: false), "conv1x1_s2")
        try assertParity(runConv("conv3x3_s2_same", n: 1, cin: 4, h: 8, w: 9, cout: 5, k: 3, stride: 2,
                                 padding: .same, bias: false), "conv3x3_s2_same")
        try assertParity(runConv("conv3x3_residual_relu", n: 1, cin: 8, h: 6, w: 6, cout: 8, k: 3, stride: 1,
                                 padding: .symmetric(1), bias: true, activation: .relu, residual: true),
                         "conv3x3_residual_relu")
    }

    /// Shapes chosen for the GEMM's blocking (see kernels.py): two K slices, every panel width and
    /// the scalar column tail, partial row tiles; residual + bias + ReLU6 fused in the output pass.
    func testConvolutionsAcrossGEMMBlocking() throws {
        try assertParity(runConv("conv1x1_k300_n44_bias_residual_relu6", n: 2, cin: 300, h: 11, w: 9, cout: 44, k: 1,
                                 stride: 1, padding: .symmetric(0), bias: true, activation: .relu6, residual: true),
                         "conv1x1_k300_n44_bias_residual_relu6")
        try assertParity(runConv("conv3x3_k288_n24_s1_p1_bias_relu", n: 1, cin: 32, h: 13, w: 14, cout: 24, k: 3,
                                 stride: 1, padding: .symmetric(1), bias: true, activation: .relu),
                         "conv3x3_k288_n24_s1_p1_bias_relu")
        // A batch-1 7x7 map: the 49th row is a one-row tile. One thread takes all six panels in one
        // task; several threads split them into column groups.
        let remainder = "conv1x1_k200_n88_7x7_bias_residual_relu6"
        _ = try TensorThreads.withSingleThreadedKernels {
            try assertParity(runConv(remainder, n: 1, cin: 200, h: 7, w: 7, cout: 88, k: 1, stride: 1, padding: .symmetric(0),
                                     bias: true, activation: .relu6, residual: true), remainder)
        }
        try assertParity(runConv(remainder, n: 1, cin: 200, h: 7, w: 7, cout: 88, k: 1, stride: 1, padding: .symmetric(0),
                                 bias: true, activation: .relu6, residual: true), remainder)
        // Strided 1x1 layers, rows read at the input pixels (`TileMajorRows.pixels`): copied per tile
        // (512 channels, rows 4 KiB apart), and in place with a tile spanning two images. One thread
        // (one task reads the pixels), then the default threads (column groups share one gathered copy).
        // K = 1024 (rows 4 KiB apart): tile-major in 512-wide k slices with the partial sums in the
        // output, plain and strided.
        let strided = "conv1x1_s2_c512_n24_bias_relu", spanning = "conv1x1_s2_c64_n40_13x13"
        let sliced = "conv1x1_k1024_n40_bias_residual_relu", slicedStrided = "conv1x1_s2_k1024_n24"
        for singleThreaded in [true, false] {
            let run = { [self] in
                try assertParity(runConv(strided, n: 1, cin: 512, h: 5, w: 6, cout: 24, k: 1, stride: 2,
                                         padding: .symmetric(0), bias: true, activation: .relu), strided)
                try assertParity(runConv(spanning, n: 2, cin: 64, h: 13, w: 13, cout: 40, k: 1, stride: 2,
                                         padding: .symmetric(0), bias: false), spanning)
                try assertParity(runConv(sliced, n: 1, cin: 1024, h: 3, w: 5, cout: 40, k: 1, stride: 1, padding: .symmetric(0),
                                         bias: true, activation: .relu, residual: true), sliced)
                try assertParity(runConv(slicedStrided, n: 1, cin: 1024, h: 5, w: 5, cout: 24, k: 1, stride: 2,
                                         padding: .symmetric(0), bias: false), slicedStrided)
            }
            if singleThreaded { try TensorThreads.withSingleThreadedKernels(run) } else { try run() }
        }
    }

    /// Winograd F(4x4, 3x3) against torch: overhanging tiles (13x11, 7x10), 16/16/8 column panels,
    /// two K slices (Cin 320), folded BN, SAME padding, residual + bias + ReLU / ReLU6 fused.
    func testWinogradConvolutions() throws {
        let a = "wino3x3_c64_n40_13x11_bias_residual_relu"
        let e1 = try assertParity(runConv(a, n: 2, cin: 64, h: 13, w: 11, cout: 40, k: 3, stride: 1, padding: .symmetric(1),
                                          bias: true, activation: .relu, residual: true, algorithm: .winograd),
                                  a, tolerance: winogradTolerance)
        let c = "wino3x3_c320_n48_7x10_same_bn_relu6"
        let (scale, shift) = syntheticBatchNorm(c, channels: 48)
        let e2 = try assertParity(runConv(c, n: 1, cin: 320, h: 7, w: 10, cout: 48, k: 3, stride: 1, padding: .same,
                                          bias: false, activation: .relu6, scale: scale, shift: shift, algorithm: .winograd),
                                  c, tolerance: winogradTolerance)
        print("Winograd fixture errors (max|diff| / max(1, max|ref|)): \(a) \(e1), \(c) \(e2)")
        // The same layers on the direct path stay within the direct tolerance.
        try assertParity(runConv(a, n: 2, cin: 64, h: 13, w: 11, cout: 40, k: 3, stride: 1, padding: .symmetric(1),
                                 bias: true, activation: .relu, residual: true), a)
    }

    /// Winograd and the direct GEMM agree on random layers of many shapes: batch-1 7x7 maps (4 tiles,
    /// split by column groups), 1x1 and 2x3 maps (patches mostly padding), several tile blocks, no
    /// bias, residual without activation, channel counts that are not multiples of 16, unpadded and
    /// one-sided padding (Inception's `conv_1`/`conv_4`: outputs two pixels smaller), and `.automatic`
    /// selection.
    func testWinogradMatchesDirect() {
        struct Case {
            let n, cin, cout, h, w: Int; let bias, residual: Bool; let act: Activation
            var padding: Padding = .symmetric(1)
        }
        let cases = [Case(n: 1, cin: 64, cout: 64, h: 7, w: 7, bias: true, residual: true, act: .relu),
                     Case(n: 1, cin: 256, cout: 256, h: 14, w: 14, bias: true, residual: false, act: .relu),
                     Case(n: 3, cin: 32, cout: 48, h: 5, w: 9, bias: false, residual: true, act: .none),
                     Case(n: 2, cin: 128, cout: 24, h: 1, w: 1, bias: true, residual: false, act: .relu6),
                     Case(n: 1, cin: 8, cout: 8, h: 2, w: 3, bias: true, residual: true, act: .relu),
                     Case(n: 4, cin: 40, cout: 72, h: 23, w: 17, bias: true, residual: true, act: .relu),
                     Case(n: 2, cin: 80, cout: 192, h: 15, w: 13, bias: true, residual: false, act: .relu, padding: .symmetric(0)),
                     Case(n: 3, cin: 32, cout: 32, h: 10, w: 7, bias: false, residual: true, act: .none, padding: .symmetric(0)),
                     Case(n: 2, cin: 16, cout: 24, h: 3, w: 3, bias: true, residual: true, act: .relu, padding: .symmetric(0)),
                     Case(n: 2, cin: 24, cout: 16, h: 9, w: 6, bias: true, residual: true, act: .relu6,
                          padding: .explicit(top: 1, left: 0, bottom: 0, right: 1))]
        for (index, t) in cases.enumerated() {
            let name = "winograd-vs-direct-\(index)"
            let x = SyntheticFill.input(name: name + ".x", shape: [t.n, t.h, t.w, t.cin])
            let weight = SyntheticFill.values(name: name + ".w", kind: .weight, shape: [t.cout, t.cin, 3, 3])
            let bias = t.bias ? SyntheticFill.values(name: name + ".b", kind: .bias, shape: [t.cout]) : nil
            let scale = SyntheticFill.values(name: name + ".s", kind: .bnWeight, shape: [t.cout])
            let p = t.padding.resolve(height: t.h, width: t.w, kernelH: 3, kernelW: 3, stride: 1)
            let (oh, ow) = (t.h + p.top + p.bottom - 2, t.w + p.left + p.right - 2)
            let residual = SyntheticFill.input(name: name + ".r", shape: [t.n, oh, ow, t.cout])
            var results: [[Float]] = []
            for algorithm in [ConvolutionAlgorithm.direct, .winograd, .automatic] {
                let conv = weight.withUnsafeBufferPointer {
                    Conv2D(weightOIHW: $0.baseAddress!, outChannels: t.cout, inChannels: t.cin, kernelH: 3, kernelW: 3,
                           padding: t.padding, channelScale: scale, bias: bias, activation: t.act, algorithm: algorithm)
                }
                XCTAssertTrue(conv.outputSize(height: t.h, width: t.w) == (oh, ow))
                if algorithm == .automatic {
                    XCTAssertEqual(conv.usesWinograd, Conv2D.prefersWinograd(inChannels: t.cin, outChannels: t.cout, kernelH: 3,
                                                                             kernelW: 3, stride: 1, padding: t.padding))
                }
                results.append(Self.forwardOverNaNs(conv, input: x, batch: t.n, height: t.h, width: t.w,
                                                    residual: t.residual ? residual : nil))
            }
            let err = relativeMaxError(results[1], results[0])
            XCTAssertLessThanOrEqual(err, winogradTolerance, "\(name): Winograd vs direct relative error \(err)")
            XCTAssertFalse(results[1].contains { $0.isNaN }, "\(name): pixels left unwritten")
            print("\(name) (n \(t.n), \(t.cin)->\(t.cout), \(t.h)x\(t.w), padding \(p)): Winograd vs direct relative error \(err)")
            let auto = results[2] == results[1] || results[2] == results[0]
            XCTAssertTrue(auto, "\(name): .automatic matches neither path")
        }
    }

    /// The 1-D Winograd F(4, r) of 1 x r, r x 1 and kh x r layers (Inception's 1x7/7x1, 1x3/3x1 and 5x5)
    /// agrees with the direct GEMM: both axes, folded kernel rows with padding above and below (rows
    /// outside the map), lengths that are and are not multiples of 4, maps shorter than a tile,
    /// one-sided padding, 8-wide channel remainders, bias, residual and each activation; and
    /// `.automatic` picks it.
    func testLineWinogradMatchesDirect() {
        struct Case { let n, cin, cout, h, w, kh, kw: Int; let padding: Padding; let residual: Bool; let act: Activation }
        let cases = [Case(n: 2, cin: 128, cout: 160, h: 17, w: 17, kh: 1, kw: 7, padding: .explicit(top: 0, left: 3, bottom: 0, right: 3),
                          residual: false, act: .relu),
                     Case(n: 2, cin: 160, cout: 192, h: 17, w: 17, kh: 7, kw: 1, padding: .explicit(top: 3, left: 0, bottom: 3, right: 0),
                          residual: false, act: .relu),
                     Case(n: 3, cin: 24, cout: 40, h: 5, w: 3, kh: 7, kw: 1, padding: .explicit(top: 3, left: 0, bottom: 3, right: 0),
                          residual: true, act: .relu6),
                     Case(n: 1, cin: 64, cout: 48, h: 8, w: 8, kh: 1, kw: 3, padding: .explicit(top: 0, left: 1, bottom: 0, right: 1),
                          residual: true, act: .none),
                     Case(n: 2, cin: 40, cout: 24, h: 8, w: 9, kh: 3, kw: 1, padding: .explicit(top: 1, left: 0, bottom: 1, right: 0),
                          residual: false, act: .relu),
                     Case(n: 1, cin: 16, cout: 8, h: 4, w: 13, kh: 1, kw: 5, padding: .explicit(top: 0, left: 0, bottom: 0, right: 2),
                          residual: true, act: .relu),
                     Case(n: 2, cin: 48, cout: 64, h: 10, w: 11, kh: 5, kw: 5, padding: .symmetric(2), residual: false, act: .relu),
                     Case(n: 1, cin: 24, cout: 16, h: 6, w: 9, kh: 3, kw: 5, padding: .explicit(top: 2, left: 1, bottom: 0, right: 2),
                          residual: true, act: .relu6)]
        for (index, t) in cases.enumerated() {
            let name = "line-winograd-vs-direct-\(index)"
            let x = SyntheticFill.input(name: name + ".x", shape: [t.n, t.h, t.w, t.cin])
            let weight = SyntheticFill.values(name: name + ".w", kind: .weight, shape: [t.cout, t.cin, t.kh, t.kw])
            let bias = SyntheticFill.values(name: name + ".b", kind: .bias, shape: [t.cout])
            let scale = SyntheticFill.values(name: name + ".s", kind: .bnWeight, shape: [t.cout])
            var results: [[Float]] = []
            for algorithm in [ConvolutionAlgorithm.direct, .winograd, .automatic] {
                let conv = weight.withUnsafeBufferPointer {
                    Conv2D(weightOIHW: $0.baseAddress!, outChannels: t.cout, inChannels: t.cin, kernelH: t.kh, kernelW: t.kw,
                           padding: t.padding, channelScale: scale, bias: bias, activation: t.act, algorithm: algorithm)
                }
                XCTAssertEqual(conv.usesWinograd, algorithm != .direct, "\(name) \(algorithm)")
                let (oh, ow) = conv.outputSize(height: t.h, width: t.w)
                let residual = SyntheticFill.input(name: name + ".r", shape: [t.n, oh, ow, t.cout])
                results.append(Self.forwardOverNaNs(conv, input: x, batch: t.n, height: t.h, width: t.w,
                                                    residual: t.residual ? residual : nil))
            }
            let err = relativeMaxError(results[1], results[0])
            XCTAssertLessThanOrEqual(err, winogradTolerance, "\(name): 1-D Winograd vs direct relative error \(err)")
            XCTAssertFalse(results[1].contains { $0.isNaN }, "\(name): pixels left unwritten")
            XCTAssertEqual(results[2], results[1], "\(name): .automatic should run the 1-D Winograd")
            print("\(name) (n \(t.n), \(t.cin)->\(t.cout), \(t.kh)x\(t.kw) on \(t.h)x\(t.w)): 1-D Winograd vs direct relative error \(err)")
        }
    }

    /// F(4, 3) built by `WinogradLineConvolution.matrices` from the points 0, ±1, ±2, ∞ is Lavin & Gray's
    /// (the Bᵀ and G the 2-D `WinogradConvolution` hard-codes).
    func testLineWinogradMatricesMatchLavinGray() {
        let (at, g, bt) = WinogradLineConvolution.matrices(outputs: 4, taps: 3)
        XCTAssertEqual(bt, [4, 0, -5, 0, 1, 0, 0, -4, -4, 1, 1, 0, 0, 4, -4, -1, 1, 0,
                            0, -2, -1, 2, 1, 0, 0, 2, -1, -2, 1, 0, 0, 4, 0, -5, 0, 1])
        let lavin: [Double] = [1.0 / 4, 0, 0, -1.0 / 6, -1.0 / 6, -1.0 / 6, -1.0 / 6, 1.0 / 6, -1.0 / 6,
                               1.0 / 24, 1.0 / 12, 1.0 / 6, 1.0 / 24, -1.0 / 12, 1.0 / 6, 0, 0, 1]
        for (a, b) in zip(g, lavin) { XCTAssertEqual(a, b, accuracy: 1e-12) }
        XCTAssertEqual(at, [1, 1, 1, 1, 1, 0, 0, 1, -1, 2, -2, 0, 0, 1, 1, 4, 4, 0, 0, 1, -1, 8, -8, 1])
    }

    /// Every path that can write a channel slice of a wider tensor (`outputStride`, what a
    /// concatenation's branches do) writes exactly the dense result there and leaves every other
    /// channel untouched: 1x1 tile-major, gathered patches (3x3/2), window reads (a stem), 2-D and
    /// 1-D Winograd, max and average pools.
    func testOutputIntoChannelSlice() {
        struct Case { let cin, cout, kh, kw, stride: Int; let padding: Padding; let algorithm: ConvolutionAlgorithm }
        let (n, h, w) = (2, 11, 10)
        let cases = [Case(cin: 64, cout: 48, kh: 1, kw: 1, stride: 1, padding: .symmetric(0), algorithm: .direct),
                     Case(cin: 32, cout: 40, kh: 3, kw: 3, stride: 2, padding: .symmetric(0), algorithm: .direct),
                     Case(cin: 3, cout: 32, kh: 3, kw: 3, stride: 2, padding: .symmetric(1), algorithm: .direct),
                     Case(cin: 32, cout: 24, kh: 3, kw: 3, stride: 1, padding: .symmetric(0), algorithm: .winograd),
                     Case(cin: 32, cout: 24, kh: 3, kw: 3, stride: 1, padding: .symmetric(1), algorithm: .winograd),
                     Case(cin: 32, cout: 40, kh: 1, kw: 7, stride: 1, padding: .explicit(top: 0, left: 3, bottom: 0, right: 3),
                          algorithm: .winograd)]
        for (index, t) in cases.enumerated() {
            let name = "slice-\(index)"
            let x = SyntheticFill.input(name: name + ".x", shape: [n, h, w, t.cin])
            let weight = SyntheticFill.values(name: name + ".w", kind: .weight, shape: [t.cout, t.cin, t.kh, t.kw])
            let bias = SyntheticFill.values(name: name + ".b", kind: .bias, shape: [t.cout])
            let conv = weight.withUnsafeBufferPointer {
                Conv2D(weightOIHW: $0.baseAddress!, outChannels: t.cout, inChannels: t.cin, kernelH: t.kh, kernelW: t.kw,
                       stride: t.stride, padding: t.padding, bias: bias, activation: .relu, algorithm: t.algorithm)
            }
            let (oh, ow) = conv.outputSize(height: h, width: w)
            let pixels = n * oh * ow, (offset, total) = (16, t.cout + 24)
            var dense = [Float](repeating: .nan, count: pixels * t.cout)
            var wide = [Float](repeating: .nan, count: pixels * total)
            x.withUnsafeBufferPointer { xp in
                dense.withUnsafeMutableBufferPointer {
                    conv.forward(input: xp.baseAddress!, batch: n, height: h, width: w, output: $0.baseAddress!)
                }
                wide.withUnsafeMutableBufferPointer {
                    conv.forward(input: xp.baseAddress!, batch: n, height: h, width: w, output: $0.baseAddress! + offset,
                                 outputStride: total)
                }
            }
            assertSlice(wide, dense, pixels: pixels, channels: t.cout, offset: offset, total: total, name)
        }
        let c = 24
        let x = SyntheticFill.input(name: "slice-pool.x", shape: [n, h, w, c])
        for isMax in [true, false] {
            let (oh, ow) = Pooling2D.outputSize(height: h, width: w, kernel: 3, stride: isMax ? 2 : 1, padding: isMax ? 0 : 1)
            let pixels = n * oh * ow, (offset, total) = (8, c + 16)
            var dense = [Float](repeating: .nan, count: pixels * c), wide = [Float](repeating: .nan, count: pixels * total)
            x.withUnsafeBufferPointer { xp in
                for (out, stride) in [(0, c), (1, total)] {
                    func run(_ p: UnsafeMutablePointer<Float>) {
                        if isMax {
                            Pooling2D.maxPool(input: xp.baseAddress!, batch: n, height: h, width: w, channels: c, kernel: 3,
                                              stride: 2, padding: 0, output: p, outputStride: stride)
                        } else {
                            Pooling2D.avgPool(input: xp.baseAddress!, batch: n, height: h, width: w, channels: c, kernel: 3,
                                              stride: 1, padding: 1, countIncludePad: false, output: p, outputStride: stride)
                        }
                    }
                    if out == 0 { dense.withUnsafeMutableBufferPointer { run($0.baseAddress!) } }
                    else { wide.withUnsafeMutableBufferPointer { run($0.baseAddress! + offset) } }
                }
            }
            assertSlice(wide, dense, pixels: pixels, channels: c, offset: offset, total: total, isMax ? "max pool" : "avg pool")
        }
    }

    /// `wide` holds `dense` (pixels x channels) at channels `offset...` of `total`, NaN elsewhere.
    func assertSlice(_ wide: [Float], _ dense: [Float], pixels: Int, channels: Int, offset: Int, total: Int, _ name: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(dense.contains { $0.isNaN }, "\(name): dense output incomplete", file: file, line: line)
        var sliceEqual = true, othersUntouched = true
        for p in 0..<pixels {
            for ch in 0..<total {
                let v = wide[p * total + ch]
                if ch >= offset && ch < offset + channels {
                    if v != dense[p * channels + ch - offset] { sliceEqual = false }
                } else if !v.isNaN {
                    othersUntouched = false
                }
            }
        }
        XCTAssertTrue(sliceEqual, "\(name): the slice differs from the dense output", file: file, line: line)
        XCTAssertTrue(othersUntouched, "\(name): channels outside the slice were written", file: file, line: line)
    }

    /// A layer with large transformed weights on a small expected map (256 channels, 7x7: 9.4 MB of
    /// Winograd weights, 4 tiles per image) keeps both weight sets: a 1-image call runs the direct
    /// path, a 3-image call (12 tiles) Winograd, each bit for bit what that algorithm alone gives.
    func testWinogradChosenPerCallOnSmallMaps() {
        let (cin, cout, h, w) = (256, 256, 7, 7)
        let weight = SyntheticFill.values(name: "per-call.w", kind: .weight, shape: [cout, cin, 3, 3])
        let bias = SyntheticFill.values(name: "per-call.b", kind: .bias, shape: [cout])
        let convs = [ConvolutionAlgorithm.automatic, .direct, .winograd].map { algorithm in
            weight.withUnsafeBufferPointer {
                Conv2D(weightOIHW: $0.baseAddress!, outChannels: cout, inChannels: cin, kernelH: 3, kernelW: 3,
                       padding: .symmetric(1), bias: bias, activation: .relu, algorithm: algorithm, expectedInput: (h, w))
            }
        }
        XCTAssertTrue(convs[0].usesWinograd && convs[0].usesDirect)
        for (n, expected) in [(1, 1), (3, 2)] {
            let x = SyntheticFill.input(name: "per-call.x\(n)", shape: [n, h, w, cin])
            let outs: [[Float]] = convs.map { conv in
                var out = [Float](repeating: .nan, count: n * h * w * cout)
                x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
                    conv.forward(input: xp.baseAddress!, batch: n, height: h, width: w, output: op.baseAddress!)
                } }
                return out
            }
            XCTAssertNotEqual(outs[1], outs[2], "the two algorithms should round differently")
            XCTAssertEqual(outs[0], outs[expected], "batch \(n): expected the \(expected == 1 ? "direct" : "Winograd") path")
            XCTAssertEqual(convs[0].runsWinograd(batch: n, height: h, width: w), expected == 2)
        }
    }

    /// `.automatic` keeps the direct path where Winograd does not pay: other geometries, and large
    /// transformed weights on small expected maps (ResNet's 512-channel 7x7 stage).
    func testWinogradSelection() {
        func prefers(_ cin: Int, _ cout: Int, k: Int = 3, stride: Int = 1, padding: Padding = .symmetric(1),
                     expected: (height: Int, width: Int)? = nil) -> Bool {
            Conv2D.prefersWinograd(inChannels: cin, outChannels: cout, kernelH: k, kernelW: k, stride: stride,
                                   padding: padding, expectedInput: expected)
        }
        XCTAssertTrue(prefers(64, 64))
        XCTAssertTrue(prefers(64, 64, padding: .same))
        XCTAssertTrue(prefers(512, 512, expected: (14, 14)))
        XCTAssertTrue(prefers(128, 128, expected: (7, 7)))
        XCTAssertTrue(prefers(512, 512))
        XCTAssertFalse(prefers(512, 512, expected: (7, 7)))
        XCTAssertTrue(Conv2D.prefersWinogradForBatches(inChannels: 512, outChannels: 512, kernelH: 3, kernelW: 3, stride: 1,
                                                       padding: .symmetric(1), expectedInput: (7, 7)))
        XCTAssertFalse(Conv2D.prefersWinogradForBatches(inChannels: 512, outChannels: 512, kernelH: 3, kernelW: 3, stride: 1,
                                                        padding: .symmetric(1), expectedInput: (14, 14)))
        XCTAssertFalse(Conv2D.prefersWinogradForBatches(inChannels: 128, outChannels: 128, kernelH: 3, kernelW: 3, stride: 1,
                                                        padding: .symmetric(1), expectedInput: (7, 7)))
        XCTAssertFalse(prefers(64, 64, stride: 2))
        XCTAssertFalse(prefers(64, 64, k: 1, padding: .symmetric(0)))
        XCTAssertTrue(prefers(64, 64, padding: .symmetric(0)))
        XCTAssertTrue(prefers(64, 64, padding: .explicit(top: 1, left: 0, bottom: 0, right: 1)))
        XCTAssertFalse(prefers(64, 64, padding: .symmetric(2)))
        XCTAssertFalse(prefers(3, 64))
        XCTAssertFalse(prefers(60, 64))
    }

    /// A folded BN (eps 1e-5) from the fixture's "<case>.g/.be/.m/.v" streams, as kernels.py draws them.
    func syntheticBatchNorm(_ c: String, channels: Int) -> (scale: [Float], shift: [Float]) {
        foldBatchNorm(gamma: SyntheticFill.values(name: c + ".g", kind: .bnWeight, shape: [channels]),
                      beta: SyntheticFill.values(name: c + ".be", kind: .bnBias, shape: [channels]),
                      mean: SyntheticFill.values(name: c + ".m", kind: .bnMean, shape: [channels]),
                      variance: SyntheticFill.values(name: c + ".v", kind: .bnVar, shape: [channels]), eps: 1e-5)
    }

    func testConvolutionWithFoldedBatchNorm() throws {
        let c = "conv3x3_bn_relu"
        let (scale, shift) = syntheticBatchNorm(c, channels: 6)
        try assertParity(runConv(c, n: 2, cin: 3, h: 6, w: 5, cout: 6, k: 3, stride: 1, padding: .symmetric(1),
                                 bias: false, activation: .relu, scale: scale, shift: shift), c)
    }

    func runDepthwise(_ c: String, n: Int, ch: Int, h: Int, w: Int, k: Int, stride: Int, bias: Bool,
                      activation: Activation) -> [Float] {
        let x = inputNHWC(c + ".x", n, ch, h, w)
        let weight = SyntheticFill.values(name: c + ".w", kind: .weight, shape: [ch, 1, k, k])
        let b = bias ? SyntheticFill.values(name: c + ".b", kind: .bias, shape: [ch]) : nil
        let conv = weight.withUnsafeBufferPointer {
            DepthwiseConv2D(weightC1HW: $0.baseAddress!, channels: ch, kernelH: k, kernelW: k, stride: stride,
                            padding: .same, bias: b, activation: activation)
        }
        let (oh, ow) = conv.outputSize(height: h, width: w)
        var out = [Float](repeating: .nan, count: n * oh * ow * ch)
        x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in
            conv.forward(input: xp.baseAddress!, batch: n, height: h, width: w, output: op.baseAddress!) } }
        return toNCHW(out, n, oh, ow, ch)
    }

    func testDepthwise() throws {
        // (fixture, batch, channels, height, width, kernel, stride, bias, activation); each case names what it covers.
        let cases: [(String, Int, Int, Int, Int, Int, Int, Bool, Activation)] = [
            ("depthwise3x3_s1_same_bias_relu6", 2, 12, 7, 8, 3, 1, true, .relu6),
            // 5 output pixels: the second 4-pixel segment shifted back over the first.
            ("depthwise5x5_s2_same", 1, 20, 9, 10, 5, 2, false, .none),
            // 92 channels: every channel-block width (16, 8, scalar) on a map whose 4-pixel segments all
            // read window columns outside the image.
            ("depthwise5x5_s1_same_c92_bias_relu6", 1, 92, 7, 11, 5, 1, true, .relu6),
            // 12 channels: an 8-channel block plus a 4-channel scalar tail.
            ("depthwise3x3_s2_same_c12_relu", 2, 12, 12, 16, 3, 2, true, .relu),
            // 27 columns at stride 2: 14 output pixels as 4 + 4 + 3 + 3.
            ("depthwise5x5_s2_same_w27_bias", 2, 20, 11, 27, 5, 2, true, .none),
            // A 7x7 window takes the generic path (the fixed-window kernels cover 3x3 and 5x5).
            ("depthwise7x7_s1_same_c24_relu6", 1, 24, 9, 16, 7, 1, true, .relu6),
            // 21 columns under 3x3/1: interior segments address their pixels directly, edge ones use the table.
            ("depthwise3x3_s1_same_w21_c16_relu6", 2, 16, 5, 21, 3, 1, true, .relu6),
            // 200 channels: each channel block sweeps the row in turn (the others take all channels per
            // segment); 9 output pixels as three 3-pixel segments.
            ("depthwise5x5_s1_same_c200_bias_relu6", 1, 200, 6, 9, 5, 1, true, .relu6),
            // Rows of 3 output pixels, narrower than a segment: a fixed window on the generic path.
            ("depthwise5x5_s1_same_w3_c40_bias", 1, 40, 5, 3, 5, 1, true, .none),
            // Lite0-like widths (multiples of 7), one per window: an 8-channel block after the
            // 16-channel ones, a scalar channel tail, interior segments with the channel-major sweep.
            ("depthwise3x3_s1_same_w14_c72_bias_relu6", 2, 72, 6, 14, 3, 1, true, .relu6),
            ("depthwise5x5_s2_same_w28_c66_relu", 1, 66, 9, 28, 5, 2, true, .relu),
            ("depthwise5x5_s1_same_w35_c80_bias_relu6", 1, 80, 7, 35, 5, 1, true, .relu6),
            ("depthwise3x3_s2_same_w14_c64", 2, 64, 8, 14, 3, 2, false, .none),
        ]
        for (name, n, ch, h, w, k, stride, bias, activation) in cases {
            try assertParity(runDepthwise(name, n: n, ch: ch, h: h, w: w, k: k, stride: stride, bias: bias,
                                          activation: activation), name)
        }
    }

    func pool(_ c: String, n: Int, ch: Int, h: Int, w: Int, oh: Int, ow: Int,
              _ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> [Float] {
        let x = inputNHWC(c + ".x", n, ch, h, w)
        var out = [Float](repeating: .nan, count: n * oh * ow * ch)
        x.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in body(xp.baseAddress!, op.baseAddress!) } }
        return toNCHW(out, n, oh, ow, ch)
    }

    func testPooling() throws {
        let mp = Pooling2D.outputSize(height: 9, width: 8, kernel: 3, stride: 2, padding: 1)
        try assertParity(pool("maxpool3_s2_p1", n: 2, ch: 10, h: 9, w: 8, oh: mp.height, ow: mp.width) {
            Pooling2D.maxPool(input: $0, batch: 2, height: 9, width: 8, channels: 10, kernel: 3, stride: 2, padding: 1, output: $1)
        }, "maxpool3_s2_p1")
        let ap = Pooling2D.outputSize(height: 7, width: 7, kernel: 3, stride: 2, padding: 1)
        try assertParity(pool("avgpool3_s2_p1", n: 1, ch: 9, h: 7, w: 7, oh: ap.height, ow: ap.width) {
            Pooling2D.avgPool(input: $0, batch: 1, height: 7, width: 7, channels: 9, kernel: 3, stride: 2, padding: 1, output: $1)
        }, "avgpool3_s2_p1")
        try assertParity(pool("avgpool2_s2", n: 1, ch: 9, h: 6, w: 7, oh: 3, ow: 3) {
            Pooling2D.avgPool(input: $0, batch: 1, height: 6, width: 7, channels: 9, kernel: 2, stride: 2, padding: 0, output: $1)
        }, "avgpool2_s2")
        try assertParity(pool("adaptive_avg_5x7_to_3x3", n: 2, ch: 11, h: 5, w: 7, oh: 3, ow: 3) {
            Pooling2D.adaptiveAvgPool(input: $0, batch: 2, height: 5, width: 7, channels: 11, outHeight: 3, outWidth: 3, output: $1)
        }, "adaptive_avg_5x7_to_3x3")
        try assertParity(pool("adaptive_avg_2x2_to_7x7", n: 1, ch: 9, h: 2, w: 2, oh: 7, ow: 7) {
            Pooling2D.adaptiveAvgPool(input: $0, batch: 1, height: 2, width: 2, channels: 9, outHeight: 7, outWidth: 7, output: $1)
        }, "adaptive_avg_2x2_to_7x7")
        for (name, isMax) in [("global_avg", false), ("global_max", true)] {
            try assertParity(pool(name, n: 2, ch: 13, h: 3, w: 5, oh: 1, ow: 1) {
                Pooling2D.global(input: $0, batch: 2, height: 3, width: 5, channels: 13, max: isMax, output: $1)
            }, name)
        }
    }

    func testLinearSoftmaxBatchNorm() throws {
        let c = "linear_relu"
        let x = SyntheticFill.input(name: c + ".x", shape: [3, 20])
        let w = SyntheticFill.values(name: c + ".w", kind: .weight, shape: [7, 20])
        let layer = w.withUnsafeBufferPointer {
            Linear(weight: $0.baseAddress!, outFeatures: 7, inFeatures: 20,
                   bias: SyntheticFill.values(name: c + ".b", kind: .bias, shape: [7]), activation: .relu)
        }
        var y = [Float](repeating: .nan, count: 21)
        x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { layer.forward(input: xp.baseAddress!, batch: 3, output: $0.baseAddress!) } }
        try assertParity(y, c)

        var s = SyntheticFill.input(name: "softmax.x", shape: [3, 10]).map { $0 * 5 }
        s.withUnsafeMutableBufferPointer { Elementwise.softmax($0.baseAddress!, rows: 3, cols: 10) }
        try assertParity(s, "softmax")

        let b = "batchnorm"
        var bx = inputNHWC(b + ".x", 2, 6, 3, 4)
        bx.withUnsafeMutableBufferPointer {
            Elementwise.batchNorm($0.baseAddress!, rows: 24, channels: 6,
                                  gamma: SyntheticFill.values(name: b + ".g", kind: .bnWeight, shape: [6]),
                                  beta: SyntheticFill.values(name: b + ".be", kind: .bnBias, shape: [6]),
                                  mean: SyntheticFill.values(name: b + ".m", kind: .bnMean, shape: [6]),
                                  variance: SyntheticFill.values(name: b + ".v", kind: .bnVar, shape: [6]), eps: 1e-3)
        }
        try assertParity(toNCHW(bx, 2, 3, 4, 6), b)
    }

    func testResidualAddAndLayoutRoundTrip() {
        let a: [Float] = (0..<37).map { Float($0) - 18 }, b: [Float] = (0..<37).map { Float($0 % 5) - 2 }
        var out = [Float](repeating: 0, count: 37)
        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in out.withUnsafeMutableBufferPointer {
            Elementwise.add(ap.baseAddress!, bp.baseAddress!, into: $0.baseAddress!, count: 37, activation: .relu) } } }
        XCTAssertEqual(out, zip(a, b).map { max(0, $0 + $1) })
        let x = SyntheticFill.input(name: "roundtrip", shape: [2, 3, 4, 5])
        let back = toNCHW(inputNHWC("roundtrip", 2, 3, 4, 5), 2, 4, 5, 3)
        XCTAssertEqual(back, x)
    }

    func testSameAndSymmetricPaddingResolution() {
        // TF SAME: 224 input, k3 s2 -> out 112, total pad 1 split (0, 1).
        let p = Padding.same.resolve(height: 224, width: 225, kernelH: 3, kernelW: 3, stride: 2)
        XCTAssertEqual(p.top, 0); XCTAssertEqual(p.bottom, 1); XCTAssertEqual(p.left, 1); XCTAssertEqual(p.right, 1)
        let q = Padding.same.resolve(height: 14, width: 14, kernelH: 5, kernelW: 5, stride: 2)
        XCTAssertEqual(q.top, 1); XCTAssertEqual(q.bottom, 2)
    }
}
