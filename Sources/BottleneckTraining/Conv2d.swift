import CBLAS

/// Zero padding of a convolution.
public enum ConvPadding: Sendable, Equatable {
    /// Fixed padding per side, in pixels.
    case explicit(top: Int, bottom: Int, left: Int, right: Int)
    /// TensorFlow "SAME": output `ceil(in / stride)`, total padding split with the extra pixel at the
    /// bottom/right (what EfficientNet-Lite's `Conv2dStaticSamePadding` computes for its image size).
    case tfSame

    /// The same padding on every side (PyTorch's `padding=p`).
    public static func symmetric(_ p: Int) -> ConvPadding { .explicit(top: p, bottom: p, left: p, right: p) }

    /// Per-side padding for an input of `h`×`w` pixels.
    func resolve(h: Int, w: Int, kh: Int, kw: Int, stride: Int) -> (top: Int, bottom: Int, left: Int, right: Int) {
        switch self {
        case let .explicit(t, b, l, r): return (t, b, l, r)
        case .tfSame:
            func split(_ n: Int, _ k: Int) -> (Int, Int) {
                let o = (n + stride - 1) / stride
                let pad = max((o - 1) * stride + k - n, 0)
                return (pad / 2, pad - pad / 2)
            }
            let (t, b) = split(h, kh)
            let (l, r) = split(w, kw)
            return (t, b, l, r)
        }
    }
}

/// Geometry of one convolution call, resolved from the input size.
struct ConvGeometry {
    let c: Int, h: Int, w: Int, kh: Int, kw: Int, stride: Int
    let top: Int, left: Int, oh: Int, ow: Int
}

/// 2-D convolution over NCHW batches (PyTorch `nn.Conv2d` semantics, dilation 1), with grouped and depthwise
/// variants and a backward pass.
///
/// Dense and grouped convolutions lower to im2col + `cblas_sgemm` per sample and group (1×1 stride-1 unpadded
/// convolutions skip im2col); the weight gradient is `dY · colᵀ` and the input gradient is col2im of `Wᵀ · dY`.
/// Depthwise convolutions (`groups == in == out`) use direct loops, which beat one tiny GEMM per channel.
/// Cost: `2·N·OC·(IC/groups)·KH·KW·OH·OW` flops forward, about twice that backward.
public final class Conv2d: Layer {
    /// Input channels.
    public let inChannels: Int
    /// Output channels.
    public let outChannels: Int
    /// Kernel height and width.
    public let kernelH: Int, kernelW: Int
    /// Stride (same in both directions).
    public let stride: Int
    /// Padding rule.
    public let padding: ConvPadding
    /// Channel groups (`inChannels` for depthwise).
    public let groups: Int
    /// `[out, in/groups, kh, kw]`, state-dict key `<name>.weight`.
    public let weight: Parameter
    /// `[out]`, key `<name>.bias`, or nil.
    public let bias: Parameter?
    /// When false, `backward` skips the input gradient (the first trainable layer) and returns zeros.
    public var computesInputGradient = true

    private var input: TrainTensor?
    // Batch columns of the last forward (dense path), reused by backward.
    private var batchCols: [Float] = []

    /// Creates a convolution whose parameters are named `<name>.weight` / `<name>.bias`.
    public init(name: String, inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int = 1,
                padding: ConvPadding = .symmetric(0), groups: Int = 1, bias: Bool = false) {
        precondition(inChannels % groups == 0 && outChannels % groups == 0, "Conv2d \(name): groups must divide channels")
        self.inChannels = inChannels
        self.outChannels = outChannels
        self.kernelH = kernelSize
        self.kernelW = kernelSize
        self.stride = stride
        self.padding = padding
        self.groups = groups
        self.weight = Parameter(name: name + ".weight", shape: [outChannels, inChannels / groups, kernelSize, kernelSize])
        self.bias = bias ? Parameter(name: name + ".bias", shape: [outChannels]) : nil
    }

    public var ownParameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    var isDepthwise: Bool { groups == inChannels && outChannels == inChannels && groups > 1 }

    func geometry(_ x: TrainTensor) -> ConvGeometry {
        let (t, b, l, r) = padding.resolve(h: x.height, w: x.width, kh: kernelH, kw: kernelW, stride: stride)
        let oh = (x.height + t + b - kernelH) / stride + 1
        let ow = (x.width + l + r - kernelW) / stride + 1
        return ConvGeometry(c: inChannels / groups, h: x.height, w: x.width, kh: kernelH, kw: kernelW, stride: stride,
                            top: t, left: l, oh: oh, ow: ow)
    }

    private func isPointwise(_ g: ConvGeometry) -> Bool {
        g.kh == 1 && g.kw == 1 && g.stride == 1 && g.top == 0 && g.left == 0 && g.oh == g.h && g.ow == g.w
    }

    public func forward(_ x: TrainTensor) throws -> TrainTensor {
        guard x.shape.count == 4, x.channels == inChannels else {
            throw TrainingError.shapeMismatch(layer: weight.name, expected: "[N, \(inChannels), H, W]", got: x.shape)
        }
        let g = geometry(x)
        guard g.oh > 0, g.ow > 0 else {
            throw TrainingError.shapeMismatch(layer: weight.name, expected: "spatial size ≥ kernel", got: x.shape)
        }
        input = x
        let n = x.batch, p = g.oh * g.ow
        var y = TrainTensor(zeros: [n, outChannels, g.oh, g.ow])
        if isDepthwise {
            x.data.withUnsafeBufferPointer { xp in
                weight.value.withUnsafeBufferPointer { wp in
                    y.data.withUnsafeMutableBufferPointer { yp in
                        depthwiseForward(xp.baseAddress!, wp.baseAddress!, yp.baseAddress!, n: n, g)
                    }
                }
            }
        } else if groups == 1 {
            batchedForward(x, &y, g)
        } else {
            let cg = g.c, ocg = outChannels / groups, k = cg * g.kh * g.kw
            let pointwise = isPointwise(g)
            var col = [Float](repeating: 0, count: pointwise ? 0 : k * p)
            x.data.withUnsafeBufferPointer { xp in
                weight.value.withUnsafeBufferPointer { wp in
                    y.data.withUnsafeMutableBufferPointer { yp in
                        col.withUnsafeMutableBufferPointer { cp in
                            for s in 0..<n {
                                for gi in 0..<groups {
                                    let src = xp.baseAddress! + (s * inChannels + gi * cg) * g.h * g.w
                                    var b = UnsafePointer(src)
                                    if !pointwise {
                                        im2col(src, cp.baseAddress!, g)
                                        b = UnsafePointer(cp.baseAddress!)
                                    }
                                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(ocg), Int32(p), Int32(k), 1,
                                                wp.baseAddress! + gi * ocg * k, Int32(k), b, Int32(p), 0,
                                                yp.baseAddress! + (s * outChannels + gi * ocg) * p, Int32(p))
                                }
                            }
                        }
                    }
                }
            }
        }
        if let bias {
            bias.value.withUnsafeBufferPointer { bp in
                y.data.withUnsafeMutableBufferPointer { yp in
                    for s in 0..<n {
                        for o in 0..<outChannels {
                            let base = yp.baseAddress! + (s * outChannels + o) * p
                            let v = bp[o]
                            for i in 0..<p { base[i] += v }
                        }
                    }
                }
            }
        }
        return y
    }

    public func backward(_ dy: TrainTensor) -> TrainTensor {
        guard let x = input else { preconditionFailure("Conv2d \(weight.name): backward without forward") }
        let g = geometry(x)
        let n = x.batch, p = g.oh * g.ow
        precondition(dy.shape == [n, outChannels, g.oh, g.ow], "Conv2d \(weight.name): dy shape \(dy.shape)")
        var dx = TrainTensor(zeros: x.shape)
        let wantDX = computesInputGradient
        if isDepthwise {
            x.data.withUnsafeBufferPointer { xp in
                weight.value.withUnsafeBufferPointer { wp in
                    weight.grad.withUnsafeMutableBufferPointer { gwp in
                        dy.data.withUnsafeBufferPointer { dyp in
                            dx.data.withUnsafeMutableBufferPointer { dxp in
                                depthwiseBackward(xp.baseAddress!, wp.baseAddress!, dyp.baseAddress!, gwp.baseAddress!,
                                                  wantDX ? dxp.baseAddress! : nil, n: n, g)
                            }
                        }
                    }
                }
            }
        } else if groups == 1 {
            batchedBackward(x, dy, &dx, g)
        } else {
            let cg = g.c, ocg = outChannels / groups, k = cg * g.kh * g.kw
            let pointwise = isPointwise(g)
            var col = [Float](repeating: 0, count: pointwise ? 0 : k * p)
            x.data.withUnsafeBufferPointer { xp in
                weight.value.withUnsafeBufferPointer { wp in
                    weight.grad.withUnsafeMutableBufferPointer { gwp in
                        dy.data.withUnsafeBufferPointer { dyp in
                            dx.data.withUnsafeMutableBufferPointer { dxp in
                                col.withUnsafeMutableBufferPointer { cp in
                                    for s in 0..<n {
                                        for gi in 0..<groups {
                                            let off = (s * inChannels + gi * cg) * g.h * g.w
                                            let dyg = dyp.baseAddress! + (s * outChannels + gi * ocg) * p
                                            let wg = wp.baseAddress! + gi * ocg * k
                                            var b = UnsafePointer(xp.baseAddress! + off)
                                            if !pointwise {
                                                im2col(xp.baseAddress! + off, cp.baseAddress!, g)
                                                b = UnsafePointer(cp.baseAddress!)
                                            }
                                            // dW_g += dY_g · colᵀ
                                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(ocg), Int32(k), Int32(p), 1,
                                                        dyg, Int32(p), b, Int32(p), 1, gwp.baseAddress! + gi * ocg * k, Int32(k))
                                            guard wantDX else { continue }
                                            if pointwise {
                                                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(k), Int32(p), Int32(ocg), 1,
                                                            wg, Int32(k), dyg, Int32(p), 1, dxp.baseAddress! + off, Int32(p))
                                            } else {
                                                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(k), Int32(p), Int32(ocg), 1,
                                                            wg, Int32(k), dyg, Int32(p), 0, cp.baseAddress!, Int32(p))
                                                col2im(cp.baseAddress!, dxp.baseAddress! + off, g)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        if let bias {
            bias.grad.withUnsafeMutableBufferPointer { gb in
                dy.data.withUnsafeBufferPointer { dyp in
                    for s in 0..<n {
                        for o in 0..<outChannels {
                            let base = dyp.baseAddress! + (s * outChannels + o) * p
                            var acc: Float = 0
                            for i in 0..<p { acc += base[i] }
                            gb[o] += acc
                        }
                    }
                }
            }
        }
        return dx
    }

    /// im2col of the whole batch, `[K, N·P]` (sample-major columns), so one GEMM covers the batch: per-sample
    /// GEMMs on late-stage maps (P = 49) run far below OpenBLAS's peak. For 1×1 convolutions it is a transpose.
    private func batchColumns(_ x: UnsafePointer<Float>, n: Int, _ g: ConvGeometry, into all: UnsafeMutablePointer<Float>) {
        let p = g.oh * g.ow, k = g.c * g.kh * g.kw, np = n * p
        if isPointwise(g) {
            for s in 0..<n {
                for c in 0..<k { (all + c * np + s * p).update(from: x + (s * k + c) * p, count: p) }
            }
            return
        }
        let col = UnsafeMutablePointer<Float>.allocate(capacity: k * p)
        defer { col.deallocate() }
        for s in 0..<n {
            im2col(x + s * inChannels * g.h * g.w, col, g)
            for r in 0..<k { (all + r * np + s * p).update(from: col + r * p, count: p) }
        }
    }

    private func batchedForward(_ x: TrainTensor, _ y: inout TrainTensor, _ g: ConvGeometry) {
        let n = x.batch, p = g.oh * g.ow, k = g.c * g.kh * g.kw, np = n * p
        var cols = [Float](repeating: 0, count: k * np)
        var out = [Float](repeating: 0, count: outChannels * np)
        x.data.withUnsafeBufferPointer { xp in
            cols.withUnsafeMutableBufferPointer { cp in batchColumns(xp.baseAddress!, n: n, g, into: cp.baseAddress!) }
        }
        cols.withUnsafeBufferPointer { cp in
            weight.value.withUnsafeBufferPointer { wp in
                out.withUnsafeMutableBufferPointer { op in
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(outChannels), Int32(np), Int32(k), 1,
                                wp.baseAddress!, Int32(k), cp.baseAddress!, Int32(np), 0, op.baseAddress!, Int32(np))
                }
            }
        }
        out.withUnsafeBufferPointer { op in
            y.data.withUnsafeMutableBufferPointer { yp in
                for s in 0..<n {
                    for o in 0..<outChannels { (yp.baseAddress! + (s * outChannels + o) * p).update(from: op.baseAddress! + o * np + s * p, count: p) }
                }
            }
        }
        batchCols = cols
    }

    private func batchedBackward(_ x: TrainTensor, _ dy: TrainTensor, _ dx: inout TrainTensor, _ g: ConvGeometry) {
        let n = x.batch, p = g.oh * g.ow, k = g.c * g.kh * g.kw, np = n * p
        if batchCols.count != k * np {
            var cols = [Float](repeating: 0, count: k * np)
            x.data.withUnsafeBufferPointer { xp in
                cols.withUnsafeMutableBufferPointer { cp in batchColumns(xp.baseAddress!, n: n, g, into: cp.baseAddress!) }
            }
            batchCols = cols
        }
        var dyT = [Float](repeating: 0, count: outChannels * np)
        dy.data.withUnsafeBufferPointer { dp in
            dyT.withUnsafeMutableBufferPointer { tp in
                for s in 0..<n {
                    for o in 0..<outChannels { (tp.baseAddress! + o * np + s * p).update(from: dp.baseAddress! + (s * outChannels + o) * p, count: p) }
                }
            }
        }
        let wantDX = computesInputGradient
        var dcols = [Float](repeating: 0, count: wantDX ? k * np : 0)
        batchCols.withUnsafeBufferPointer { cp in
            dyT.withUnsafeBufferPointer { tp in
                weight.grad.withUnsafeMutableBufferPointer { gw in
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(outChannels), Int32(k), Int32(np), 1,
                                tp.baseAddress!, Int32(np), cp.baseAddress!, Int32(np), 1, gw.baseAddress!, Int32(k))
                }
                guard wantDX else { return }
                weight.value.withUnsafeBufferPointer { wp in
                    dcols.withUnsafeMutableBufferPointer { dc in
                        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(k), Int32(np), Int32(outChannels), 1,
                                    wp.baseAddress!, Int32(k), tp.baseAddress!, Int32(np), 0, dc.baseAddress!, Int32(np))
                    }
                }
            }
        }
        guard wantDX else { return }
        let pointwise = isPointwise(g)
        dcols.withUnsafeBufferPointer { dc in
            dx.data.withUnsafeMutableBufferPointer { dxp in
                if pointwise {
                    for s in 0..<n {
                        for c in 0..<k { (dxp.baseAddress! + (s * k + c) * p).update(from: dc.baseAddress! + c * np + s * p, count: p) }
                    }
                    return
                }
                let col = UnsafeMutablePointer<Float>.allocate(capacity: k * p)
                defer { col.deallocate() }
                for s in 0..<n {
                    for r in 0..<k { (col + r * p).update(from: dc.baseAddress! + r * np + s * p, count: p) }
                    col2im(col, dxp.baseAddress! + s * inChannels * g.h * g.w, g)
                }
            }
        }
    }

    /// Copies one channel plane into a zero-padded `ph × pw` buffer so the tap loops need no bounds checks.
    private func pad(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, _ g: ConvGeometry, pw: Int, ph: Int) {
        dst.update(repeating: 0, count: ph * pw)
        for y in 0..<g.h { (dst + (y + g.top) * pw + g.left).update(from: src + y * g.w, count: g.w) }
    }

    private func paddedSize(_ g: ConvGeometry) -> (ph: Int, pw: Int) {
        // Large enough for every tap of every output position (covers bottom/right padding and strides).
        ((g.oh - 1) * g.stride + g.kh, max((g.ow - 1) * g.stride + g.kw, g.left + g.w))
    }

    private func depthwiseForward(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                                  n: Int, _ g: ConvGeometry) {
        let hw = g.h * g.w, ohw = g.oh * g.ow, kk = g.kh * g.kw
        var (ph, pw) = paddedSize(g)
        ph = max(ph, g.top + g.h)
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: ph * pw)
        defer { buf.deallocate() }
        for s in 0..<n {
            for c in 0..<inChannels {
                pad(x + (s * inChannels + c) * hw, into: buf, g, pw: pw, ph: ph)
                let yc = y + (s * inChannels + c) * ohw
                let wc = w + c * kk
                for oy in 0..<g.oh {
                    let out = yc + oy * g.ow
                    out.update(repeating: 0, count: g.ow)
                    for i in 0..<g.kh {
                        let row = buf + (oy * g.stride + i) * pw
                        for j in 0..<g.kw {
                            let wv = wc[i * g.kw + j]
                            let src = row + j
                            if g.stride == 1 {
                                for ox in 0..<g.ow { out[ox] += wv * src[ox] }
                            } else {
                                for ox in 0..<g.ow { out[ox] += wv * src[ox * g.stride] }
                            }
                        }
                    }
                }
            }
        }
    }

    private func depthwiseBackward(_ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ dy: UnsafePointer<Float>,
                                   _ dw: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
                                   n: Int, _ g: ConvGeometry) {
        let hw = g.h * g.w, ohw = g.oh * g.ow, kk = g.kh * g.kw
        var (ph, pw) = paddedSize(g)
        ph = max(ph, g.top + g.h)
        let buf = UnsafeMutablePointer<Float>.allocate(capacity: ph * pw)
        let dbuf = UnsafeMutablePointer<Float>.allocate(capacity: ph * pw)
        defer { buf.deallocate(); dbuf.deallocate() }
        for s in 0..<n {
            for c in 0..<inChannels {
                pad(x + (s * inChannels + c) * hw, into: buf, g, pw: pw, ph: ph)
                if dx != nil { dbuf.update(repeating: 0, count: ph * pw) }
                let dyc = dy + (s * inChannels + c) * ohw
                let wc = w + c * kk
                let dwc = dw + c * kk
                for oy in 0..<g.oh {
                    let d = dyc + oy * g.ow
                    for i in 0..<g.kh {
                        let off = (oy * g.stride + i) * pw
                        for j in 0..<g.kw {
                            let src = buf + off + j, dst = dbuf + off + j
                            let wv = wc[i * g.kw + j]
                            var acc: Float = 0
                            if g.stride == 1 {
                                for ox in 0..<g.ow { acc += d[ox] * src[ox] }
                                if dx != nil { for ox in 0..<g.ow { dst[ox] += wv * d[ox] } }
                            } else {
                                for ox in 0..<g.ow { acc += d[ox] * src[ox * g.stride] }
                                if dx != nil { for ox in 0..<g.ow { dst[ox * g.stride] += wv * d[ox] } }
                            }
                            dwc[i * g.kw + j] += acc
                        }
                    }
                }
                if let dx {
                    let dxc = dx + (s * inChannels + c) * hw
                    for y in 0..<g.h { (dxc + y * g.w).update(from: dbuf + (y + g.top) * pw + g.left, count: g.w) }
                }
            }
        }
    }
}

/// Unfolds `g.c` channels of one sample into `[c·kh·kw, oh·ow]` columns (zeros where the window hits padding).
func im2col(_ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, _ g: ConvGeometry) {
    let p = g.oh * g.ow
    var row = 0
    for c in 0..<g.c {
        let xc = x + c * g.h * g.w
        for i in 0..<g.kh {
            for j in 0..<g.kw {
                let dst = col + row * p
                for oy in 0..<g.oh {
                    let iy = oy * g.stride - g.top + i
                    let d = dst + oy * g.ow
                    if iy < 0 || iy >= g.h {
                        d.update(repeating: 0, count: g.ow)
                        continue
                    }
                    let src = xc + iy * g.w
                    var ix = j - g.left
                    for ox in 0..<g.ow {
                        d[ox] = (ix >= 0 && ix < g.w) ? src[ix] : 0
                        ix += g.stride
                    }
                }
                row += 1
            }
        }
    }
}

/// Adjoint of ``im2col``: scatters-and-adds columns back into `g.c` channels of one sample.
func col2im(_ col: UnsafePointer<Float>, _ x: UnsafeMutablePointer<Float>, _ g: ConvGeometry) {
    let p = g.oh * g.ow
    var row = 0
    for c in 0..<g.c {
        let xc = x + c * g.h * g.w
        for i in 0..<g.kh {
            for j in 0..<g.kw {
                let srcRow = col + row * p
                for oy in 0..<g.oh {
                    let iy = oy * g.stride - g.top + i
                    if iy < 0 || iy >= g.h { continue }
                    let dst = xc + iy * g.w
                    let s = srcRow + oy * g.ow
                    var ix = j - g.left
                    for ox in 0..<g.ow {
                        if ix >= 0 && ix < g.w { dst[ix] += s[ox] }
                        ix += g.stride
                    }
                }
                row += 1
            }
        }
    }
}
