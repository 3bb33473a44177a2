import XCTest
import BottleneckTensor

/// The fused MBConv kernel against the same three layers run one by one. Both paths run the same
/// kernels over the same k slices in the same order, so the outputs must be identical (tolerance 0).
final class InvertedResidualTests: XCTestCase {
    /// `stem` > 0: the expansion is a `stem x stem` stride-2 convolution (a network's stem fused into
    /// a block without expansion), not a 1x1 one.
    struct Case {
        let name: String; let cin: Int; let mid: Int; let cout: Int; let k: Int; let stride: Int; let h: Int; let w: Int; let batch: Int
        var stem = 0
    }

    func layers(_ c: Case) -> (Conv2D, DepthwiseConv2D, Conv2D) {
        let ek = max(1, c.stem)
        let e = SyntheticFill.values(name: c.name + ".e", kind: .weight, shape: [c.mid, c.cin, ek, ek])
        let d = SyntheticFill.values(name: c.name + ".d", kind: .weight, shape: [c.mid, 1, c.k, c.k])
        let p = SyntheticFill.values(name: c.name + ".p", kind: .weight, shape: [c.cout, c.mid, 1, 1])
        let b1 = SyntheticFill.values(name: c.name + ".b1", kind: .bias, shape: [c.mid])
        let b2 = SyntheticFill.values(name: c.name + ".b2", kind: .bias, shape: [c.mid])
        let b3 = SyntheticFill.values(name: c.name + ".b3", kind: .bias, shape: [c.cout])
        let expand = e.withUnsafeBufferPointer {
            Conv2D(weightOIHW: $0.baseAddress!, outChannels: c.mid, inChannels: c.cin, kernelH: ek, kernelW: ek,
                   stride: c.stem > 0 ? 2 : 1, padding: .same, bias: b1, activation: .relu6)
        }
        let dw = d.withUnsafeBufferPointer {
            DepthwiseConv2D(weightC1HW: $0.baseAddress!, channels: c.mid, kernelH: c.k, kernelW: c.k, stride: c.stride,
                            padding: .same, bias: b2, activation: .relu6)
        }
        let project = p.withUnsafeBufferPointer {
            Conv2D(weightOIHW: $0.baseAddress!, outChannels: c.cout, inChannels: c.mid, kernelH: 1, kernelW: 1, padding: .same, bias: b3)
        }
        return (expand, dw, project)
    }

    /// `c.cin == c.mid` builds a block without expansion (depthwise reads the input directly).
    func check(_ c: Case, bands: Int, options: EngineOptions) {
        let (expandLayer, dw, project) = layers(c)
        let expand: Conv2D? = c.cin == c.mid && c.stem == 0 ? nil : expandLayer
        let skip = c.stride == 1 && c.cin == c.cout && c.stem == 0
        let block = InvertedResidual(expand: expand, depthwise: dw, project: project, addsInput: skip)
        let x = SyntheticFill.input(name: c.name + ".x", shape: [c.batch, c.h, c.w, c.cin])
        let (oh, ow) = block.outputSize(height: c.h, width: c.w)
        let (eh, ew) = c.stem > 0 ? expandLayer.outputSize(height: c.h, width: c.w) : (c.h, c.w)
        var mid1 = [Float](repeating: 0, count: c.batch * eh * ew * c.mid)
        var mid2 = [Float](repeating: 0, count: c.batch * oh * ow * c.mid)
        var reference = [Float](repeating: 0, count: c.batch * oh * ow * c.cout)
        var fused = [Float](repeating: .nan, count: reference.count)
        x.withUnsafeBufferPointer { xp in
            mid1.withUnsafeMutableBufferPointer {
                if let expand { expand.forward(input: xp.baseAddress!, batch: c.batch, height: c.h, width: c.w, output: $0.baseAddress!) }
                else { $0.baseAddress!.update(from: xp.baseAddress!, count: xp.count) }
            }
            mid1.withUnsafeBufferPointer { m1 in mid2.withUnsafeMutableBufferPointer {
                dw.forward(input: m1.baseAddress!, batch: c.batch, height: eh, width: ew, output: $0.baseAddress!) } }
            mid2.withUnsafeBufferPointer { m2 in reference.withUnsafeMutableBufferPointer {
                project.forward(input: m2.baseAddress!, batch: c.batch, height: oh, width: ow, output: $0.baseAddress!,
                                residual: skip ? xp.baseAddress! : nil) } }
            fused.withUnsafeMutableBufferPointer {
                block.forward(input: xp.baseAddress!, batch: c.batch, height: c.h, width: c.w, output: $0.baseAddress!, bands: bands,
                              options: options)
            }
        }
        var worst: Float = 0
        for i in 0..<reference.count { let d = abs(fused[i] - reference[i]); worst = d.isNaN ? .infinity : max(worst, d) }
        let run = "\(c.name) bands \(bands) meeting steps \(options.meetingSteps) tapered \(options.taperedMeeting)"
        XCTAssertFalse(fused.contains { $0.isNaN }, "\(run): output not fully written")
        XCTAssertEqual(worst, 0, "\(run): fused differs from layer-by-layer by \(worst)")
    }

    func testFusedBlockEqualsLayerByLayer() {
        let cases = [
            Case(name: "ir.skip3", cin: 24, mid: 144, cout: 24, k: 3, stride: 1, h: 19, w: 17, batch: 2),
            Case(name: "ir.down5", cin: 24, mid: 144, cout: 40, k: 5, stride: 2, h: 23, w: 21, batch: 3),
            Case(name: "ir.down3", cin: 16, mid: 96, cout: 24, k: 3, stride: 2, h: 40, w: 40, batch: 1),
            Case(name: "ir.wide", cin: 40, mid: 1160, cout: 40, k: 5, stride: 1, h: 9, w: 7, batch: 2),
            Case(name: "ir.noexpand", cin: 32, mid: 32, cout: 16, k: 3, stride: 1, h: 30, w: 29, batch: 2),
            Case(name: "ir.noexpand.skip", cin: 24, mid: 24, cout: 24, k: 3, stride: 1, h: 12, w: 12, batch: 1),
            // Tall maps: many steps per image, each keeping the expanded rows it shares with the one before
            // in a ring of row slots, so windows wrap around the ring's end.
            Case(name: "ir.tall", cin: 16, mid: 96, cout: 16, k: 3, stride: 1, h: 200, w: 24, batch: 1),
            Case(name: "ir.tall5", cin: 16, mid: 96, cout: 24, k: 5, stride: 2, h: 300, w: 20, batch: 1),
            Case(name: "ir.tall5s1", cin: 24, mid: 144, cout: 24, k: 5, stride: 1, h: 90, w: 28, batch: 2),
            Case(name: "ir.tall3s2", cin: 40, mid: 240, cout: 80, k: 3, stride: 2, h: 120, w: 28, batch: 1),
            // A stem convolution as the expansion (its output rows only in the ring).
            Case(name: "ir.stem", cin: 3, mid: 32, cout: 16, k: 3, stride: 1, h: 41, w: 38, batch: 2, stem: 3),
            Case(name: "ir.stem.tall", cin: 3, mid: 16, cout: 8, k: 3, stride: 1, h: 160, w: 30, batch: 1, stem: 3),
        ]
        // Two threads, with and without the meeting walks (batch-1 cases with more than one band), whose
        // last steps are tapered (`taperedMeeting`) or whole.
        let (bands, meeting) = EngineOptions.offAndOn(\.meetingSteps, threads: 2)
        var wholeSteps = meeting
        wholeSteps.taperedMeeting = false
        for c in cases { for n in [1, 2, 5] { for options in [bands, meeting, wholeSteps] { check(c, bands: n, options: options) } } }
    }

    func testBandsPerImageFallsBackForThinBands() {
        let (expand, dw, project) = layers(Case(name: "ir.b", cin: 8, mid: 48, cout: 8, k: 5, stride: 1, h: 7, w: 7, batch: 1))
        let block = InvertedResidual(expand: expand, depthwise: dw, project: project, addsInput: true)
        let two = EngineOptions(threads: 2)
        XCTAssertEqual(block.bandsPerImage(batch: 8, height: 7, width: 7, options: two), 1)
        XCTAssertEqual(block.bandsPerImage(batch: 1, height: 7, width: 7, options: two), 0, "7 rows in 4 bands under a 5x5 window")
        XCTAssertEqual(block.bandsPerImage(batch: 1, height: 112, width: 112, options: two), 4)
        // 28 rows: too few for four bands under a 5x5 window, enough for two walks that meet.
        let (fourBands, walks) = EngineOptions.offAndOn(\.walkFusion, threads: 2)
        XCTAssertEqual(block.bandsPerImage(batch: 1, height: 28, width: 28, options: fourBands), 0)
        XCTAssertGreaterThan(block.bandsPerImage(batch: 1, height: 28, width: 28, options: walks), 1)
        XCTAssertEqual(block.bandsPerImage(batch: 1, height: 14, width: 14, options: walks), 0, "7 rows per walk under a 5x5 window")
        let (e, d, p) = layers(Case(name: "ir.late", cin: 192, mid: 1152, cout: 192, k: 5, stride: 1, h: 7, w: 7, batch: 1))
        let late = InvertedResidual(expand: e, depthwise: d, project: p, addsInput: true)
        XCTAssertEqual(late.bandsPerImage(batch: 32, height: 7, width: 7, options: two), 0, "a 7x1152 step is 14 GEMM rows: run unfused")
    }
}
