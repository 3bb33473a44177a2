import Foundation
import XCTest
@testable import BottleneckTensor

/// A convolution with synthetic weights and bias, a synthetic NHWC input and a synthetic residual of
/// the output's shape (`SyntheticFill`, names prefixed by `name`), for tests that run it two ways and
/// compare the outputs.
struct SyntheticConvolution {
    let conv: Conv2D
    let input: [Float]
    let residual: [Float]
    let batch: Int, height: Int, width: Int

    init(name: String, batch: Int, height: Int, width: Int, inChannels: Int, outChannels: Int, kernel: Int,
         stride: Int = 1, padding: Padding, activation: Activation, algorithm: ConvolutionAlgorithm = .automatic) {
        self.batch = batch; self.height = height; self.width = width
        input = SyntheticFill.input(name: name + ".x", shape: [batch, height, width, inChannels])
        let weight = SyntheticFill.values(name: name + ".w", kind: .weight, shape: [outChannels, inChannels, kernel, kernel])
        let bias = SyntheticFill.values(name: name + ".b", kind: .bias, shape: [outChannels])
        conv = weight.withUnsafeBufferPointer {
            Conv2D(weightOIHW: $0.baseAddress!, outChannels: outChannels, inChannels: inChannels, kernelH: kernel,
                   kernelW: kernel, stride: stride, padding: padding, bias: bias, activation: activation, algorithm: algorithm)
        }
        let (oh, ow) = conv.outputSize(height: height, width: width)
        residual = SyntheticFill.input(name: name + ".r", shape: [batch, oh, ow, outChannels])
    }

    /// The output in a fresh buffer (NaN where nothing was written), with or without the residual added.
    func forward(addsResidual: Bool, options: EngineOptions = .default) -> [Float] {
        var out = [Float](repeating: .nan, count: residual.count)
        input.withUnsafeBufferPointer { xp in out.withUnsafeMutableBufferPointer { op in residual.withUnsafeBufferPointer { rp in
            conv.forward(input: xp.baseAddress!, batch: batch, height: height, width: width, output: op.baseAddress!,
                         residual: addsResidual ? rp.baseAddress! : nil, options: options)
        } } }
        return out
    }

    /// Asserts that `forward` under `reference` and under `variant` writes every element and gives the
    /// same output bit for bit (tolerance 0), with and without the residual; `what` names the variant.
    func assertSameOutputs(_ reference: EngineOptions, _ variant: EngineOptions, _ name: String, _ what: String,
                           file: StaticString = #filePath, line: UInt = #line) {
        for addsResidual in [false, true] {
            let expected = forward(addsResidual: addsResidual, options: reference)
            let got = forward(addsResidual: addsResidual, options: variant)
            XCTAssertFalse(got.contains { $0.isNaN }, "\(name): output not fully written", file: file, line: line)
            XCTAssertTrue(got == expected, "\(name): \(what) differs \(addsResidual ? "with" : "without") a residual",
                          file: file, line: line)
        }
    }

    /// The output with the residual added, written over a copy of the residual.
    func forwardOverResidual(options: EngineOptions = .default) -> [Float] {
        var shared = residual
        input.withUnsafeBufferPointer { xp in shared.withUnsafeMutableBufferPointer { sp in
            conv.forward(input: xp.baseAddress!, batch: batch, height: height, width: width, output: sp.baseAddress!,
                         residual: UnsafePointer(sp.baseAddress!), options: options)
        } }
        return shared
    }
}

extension EngineOptions {
    /// Options for `threads` threads with the switch `key` off and on, for comparing two engine paths.
    static func offAndOn(_ key: WritableKeyPath<EngineOptions, Bool>, threads: Int) -> (off: EngineOptions, on: EngineOptions) {
        var off = EngineOptions(threads: threads), on = off
        off[keyPath: key] = false
        on[keyPath: key] = true
        return (off, on)
    }
}
