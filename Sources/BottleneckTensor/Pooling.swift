/// Pooling kernels on NHWC activations, vectorised over channels.
public enum Pooling2D {
    /// Output size of a max/avg pool (PyTorch floor mode, `ceil_mode=False`).
    public static func outputSize(height: Int, width: Int, kernel: Int, stride: Int, padding: Int)
        -> (height: Int, width: Int) {
        (windowOutput(height, pad: 2 * padding, kernel: kernel, stride: stride),
         windowOutput(width, pad: 2 * padding, kernel: kernel, stride: stride))
    }

    /// Max pooling (`F.max_pool2d` with symmetric `padding`, padded cells never win). Output pixels lie
    /// `outputStride` floats apart (default `channels`; larger writes a channel slice of a wider tensor).
    public static func maxPool(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int, channels: Int,
                               kernel: Int, stride: Int, padding: Int, output: UnsafeMutablePointer<Float>,
                               outputStride: Int? = nil, options: EngineOptions = .default) {
        window(input: input, batch: batch, height: height, width: width, channels: channels, kernel: kernel,
               stride: stride, padding: padding, output: output, outputStride: outputStride ?? channels, isMax: true,
               countIncludePad: false, options: options)
    }

    /// Average pooling (`F.avg_pool2d`); `countIncludePad` as in PyTorch (default true there);
    /// `outputStride` as in `maxPool`.
    public static func avgPool(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int, channels: Int,
                               kernel: Int, stride: Int, padding: Int, countIncludePad: Bool = true,
                               output: UnsafeMutablePointer<Float>, outputStride: Int? = nil,
                               options: EngineOptions = .default) {
        window(input: input, batch: batch, height: height, width: width, channels: channels, kernel: kernel,
               stride: stride, padding: padding, output: output, outputStride: outputStride ?? channels, isMax: false,
               countIncludePad: countIncludePad, options: options)
    }

    private static func window(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int, channels c: Int,
                               kernel: Int, stride: Int, padding: Int, output: UnsafeMutablePointer<Float>, outputStride: Int,
                               isMax: Bool, countIncludePad: Bool, options: EngineOptions) {
        precondition(outputStride >= c, "Pooling2D: output pixels closer than the channels")
        let (oh, ow) = outputSize(height: height, width: width, kernel: kernel, stride: stride, padding: padding)
        parallelRanges(batch * oh, grain: 1, threads: options.workers) { range in
            for rowIndex in range {
                let img = rowIndex / oh, oy = rowIndex - img * oh
                let y0 = oy * stride - padding
                let yLo = max(0, y0), yHi = min(height, y0 + kernel)
                for ox in 0..<ow {
                    let x0 = ox * stride - padding
                    let xLo = max(0, x0), xHi = min(width, x0 + kernel)
                    let cells: Int
                    if countIncludePad {
                        cells = (min(y0 + kernel, height + padding) - y0) * (min(x0 + kernel, width + padding) - x0)
                    } else {
                        cells = (yHi - yLo) * (xHi - xLo)
                    }
                    reduceWindow(input + img * height * width * c, width: width, channels: c, ys: yLo..<yHi, xs: xLo..<xHi,
                                 isMax: isMax, divisor: Float(cells), into: output + (rowIndex * ow + ox) * outputStride)
                }
            }
        }
    }

    /// Reduces the pixels `ys x xs` of one image into `dst[0..<channels]` (max, or sum / divisor).
    @inline(__always)
    static func reduceWindow(_ image: UnsafePointer<Float>, width: Int, channels c: Int, ys: Range<Int>, xs: Range<Int>,
                             isMax: Bool, divisor: Float, into dst: UnsafeMutablePointer<Float>) {
        let vec = c & ~7
        var ch = 0
        while ch < vec {
            var acc = SIMD8<Float>(repeating: isMax ? -.infinity : 0)
            for y in ys {
                for x in xs {
                    let v = SIMD8<Float>.load(UnsafeRawPointer(image + (y * width + x) * c + ch))
                    if isMax { acc = acc.replacing(with: v, where: v .> acc) } else { acc += v }
                }
            }
            if !isMax { acc /= SIMD8(repeating: divisor) }
            SIMD8<Float>.store(acc, to: UnsafeMutableRawPointer(dst + ch))
            ch += 8
        }
        while ch < c {
            var acc: Float = isMax ? -.infinity : 0
            for y in ys { for x in xs { let v = image[(y * width + x) * c + ch]; acc = isMax ? max(acc, v) : acc + v } }
            dst[ch] = isMax ? acc : acc / divisor
            ch += 1
        }
    }

    /// Adaptive average pooling to `outH x outW` (`F.adaptive_avg_pool2d`): output cell i covers input
    /// rows `floor(i * H / outH) ..< ceil((i + 1) * H / outH)`, and likewise for columns.
    public static func adaptiveAvgPool(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int, channels: Int,
                                       outHeight: Int, outWidth: Int, output: UnsafeMutablePointer<Float>,
                                       options: EngineOptions = .default) {
        parallelRanges(batch * outHeight, grain: 1, threads: options.workers) { range in
            for rowIndex in range {
                let img = rowIndex / outHeight, oy = rowIndex - img * outHeight
                let ys = (oy * height / outHeight)..<((oy + 1) * height + outHeight - 1) / outHeight
                for ox in 0..<outWidth {
                    let xs = (ox * width / outWidth)..<((ox + 1) * width + outWidth - 1) / outWidth
                    reduceWindow(input + img * height * width * channels, width: width, channels: channels, ys: ys, xs: xs,
                                 isMax: false, divisor: Float(ys.count * xs.count),
                                 into: output + (rowIndex * outWidth + ox) * channels)
                }
            }
        }
    }

    /// Global average or max over all pixels: NHWC `[N][H][W][C]` to `[N][C]`.
    public static func global(input: UnsafePointer<Float>, batch: Int, height: Int, width: Int, channels: Int,
                              max isMax: Bool, output: UnsafeMutablePointer<Float>, options: EngineOptions = .default) {
        parallelRanges(batch, grain: 1, threads: options.workers) { range in
            for img in range {
                reduceWindow(input + img * height * width * channels, width: width, channels: channels,
                             ys: 0..<height, xs: 0..<width, isMax: isMax, divisor: Float(height * width),
                             into: output + img * channels)
            }
        }
    }
}

/// Layout conversions between PyTorch's NCHW and the kernels' NHWC.
public enum Layout {
    /// Copies `pixels` NHWC pixels of `channels` floats from dense `src` to `dst`, whose pixels lie
    /// `dstStride` floats apart (a channel slice of a wider tensor), in parallel over pixels.
    public static func copyPixels(_ src: UnsafePointer<Float>, pixels: Int, channels: Int,
                                  into dst: UnsafeMutablePointer<Float>, dstStride: Int, options: EngineOptions = .default) {
        parallelRanges(pixels, grain: 256, threads: options.workers) { range in
            for p in range { (dst + p * dstStride).update(from: src + p * channels, count: channels) }
        }
    }

    /// `[N][C][H][W]` to `[N][H][W][C]`.
    ///
    /// Three channels (every network input) take a loop with the channel count a constant, which
    /// the compiler turns into interleaving shuffles instead of a strided scalar copy per element.
    public static func nchwToNhwc(_ src: UnsafePointer<Float>, batch: Int, channels: Int, height: Int, width: Int,
                                  into dst: UnsafeMutablePointer<Float>, options: EngineOptions = .default) {
        guard channels == 3 else {
            transposeEachImage(src, batch: batch, rows: channels, columns: height * width, into: dst, options: options)
            return
        }
        let hw = height * width
        parallelRanges(batch * height, grain: 1, threads: options.workers) { range in
            for r in range {
                let n = r / height, y = r - n * height
                let o = dst + (n * height + y) * width * 3
                let p0 = src + n * 3 * hw + y * width, p1 = p0 + hw, p2 = p1 + hw
                for x in 0..<width { o[3 * x] = p0[x]; o[3 * x + 1] = p1[x]; o[3 * x + 2] = p2[x] }
            }
        }
    }

    /// `[N][H][W][C]` to `[N][C][H][W]`.
    public static func nhwcToNchw(_ src: UnsafePointer<Float>, batch: Int, height: Int, width: Int, channels: Int,
                                  into dst: UnsafeMutablePointer<Float>, options: EngineOptions = .default) {
        transposeEachImage(src, batch: batch, rows: height * width, columns: channels, into: dst, options: options)
    }

    /// For each of `batch` images, the row-major `rows x columns` matrix at `src` written transposed
    /// (`columns x rows`) at `dst`. `src` and `dst` must not overlap.
    static func transposeEachImage(_ src: UnsafePointer<Float>, batch: Int, rows: Int, columns: Int,
                                   into dst: UnsafeMutablePointer<Float>, options: EngineOptions) {
        let size = rows * columns
        parallelRanges(batch * columns, grain: 1, threads: options.workers) { range in
            for r in range {
                let n = r / columns, column = r - n * columns
                let o = dst + r * rows
                let i = src + n * size + column
                for k in 0..<rows { o[k] = i[k * columns] }
            }
        }
    }
}
