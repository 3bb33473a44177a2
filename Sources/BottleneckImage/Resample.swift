import Foundation

/// Resampling filter for the shorter-side resize (Pillow's `Image.Resampling.BILINEAR` / `BICUBIC`).
public enum Interpolation: String, Codable, Sendable {
    /// Triangle filter, support 1 (scaled by the reduction factor when downscaling).
    case bilinear
    /// Keys cubic with a = -0.5, support 2 (scaled by the reduction factor when downscaling).
    case bicubic
}

/// A re-implementation of Pillow's `ImagingResample` for 8-bit images (two separable passes,
/// horizontal first unless `runsVerticalPassFirst`, with 22-bit fixed-point weights and clipping
/// to uint8 between the passes),
/// restricted to an output window so that a center crop never pays for pixels it throws away.
/// Every output pixel depends only on its own coefficient row, so the window equals Pillow's full
/// resize cropped afterwards, bit for bit.
enum PillowResample {
    /// 32 - 8 - 2 bits: Pillow's headroom for 8-bit samples times weights summing to 1 (plus negative lobes).
    static let precisionBits = 22

    /// Fixed-point weights for a window of output positions along one axis.
    struct Axis {
        /// Taps per output position (Pillow's `ksize`).
        var ksize: Int
        /// Per output position in the window: first input index and number of taps.
        var first: [Int]
        var count: [Int]
        /// `window.count * ksize` weights scaled by 2^22.
        var weights: [Int32]
    }

    static func filter(_ kind: Interpolation, _ x: Double) -> Double {
        let x = abs(x)
        switch kind {
        case .bilinear:
            return x < 1 ? 1 - x : 0
        case .bicubic:
            let a = -0.5
            if x < 1 { return ((a + 2) * x - (a + 3)) * x * x + 1 }
            if x < 2 { return (((x - 5) * x + 8) * x - 4) * a }
            return 0
        }
    }

    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for output positions `window` of a resize
    /// from `inSize` to `outSize` over the whole input.
    static func axis(inSize: Int, outSize: Int, window: Range<Int>, kind: Interpolation) -> Axis {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = max(scale, 1)
        let support = (kind == .bilinear ? 1.0 : 2.0) * filterScale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var first = [Int](), count = [Int]()
        var weights = [Int32](repeating: 0, count: window.count * ksize)
        var k = [Double](repeating: 0, count: ksize)
        for (slot, xx) in window.enumerated() {
            let center = (Double(xx) + 0.5) * scale
            let ss = 1 / filterScale
            let xmin = max(Int(center - support + 0.5), 0)
            let xmax = min(Int(center + support + 0.5), inSize) - xmin
            var ww = 0.0
            for x in 0..<xmax {
                let w = filter(kind, (Double(x + xmin) - center + 0.5) * ss)
                k[x] = w
                ww += w
            }
            for x in 0..<xmax {
                let v = ww != 0 ? k[x] / ww : k[x]
                let scaled = v * Double(1 << precisionBits)
                weights[slot * ksize + x] = Int32(v < 0 ? scaled - 0.5 : scaled + 0.5)
            }
            first.append(xmin)
            count.append(max(xmax, 0))
        }
        return Axis(ksize: ksize, first: first, count: count, weights: weights)
    }

    @inline(__always)
    static func clip8(_ v: Int32) -> UInt8 {
        if v >= Int32(1) << (precisionBits + 8) { return 255 }
        if v <= 0 { return 0 }
        return UInt8(truncatingIfNeeded: v >> Int32(precisionBits))
    }

    /// Whether Pillow runs the vertical pass first: when both passes run and the height shrinks by more
    /// than twice as many pixels as the width does (Pillow 13, the reference environment's; earlier
    /// versions always ran the horizontal pass first). Found by comparing both orders with Pillow's
    /// output over random and boundary sizes. The order changes results by up to one level per pixel.
    static func runsVerticalPassFirst(width: Int, height: Int, outWidth: Int, outHeight: Int) -> Bool {
        outWidth != width && outHeight < height && height - outHeight > 2 * (width - outWidth)
    }

    /// Resizes `src` (interleaved RGB, `width x height`) to `outWidth x outHeight` and returns only the
    /// window `cropX..<cropX+cropWidth`, `cropY..<cropY+cropHeight` of the result, written row-major
    /// RGB into `dst` (`cropWidth * cropHeight * 3` bytes).
    ///
    /// Cost: O((rows used) x cropWidth x ksizeX + cropHeight x cropWidth x ksizeY) per channel.
    static func resizeWindow(_ src: UnsafePointer<UInt8>, width: Int, height: Int,
                             outWidth: Int, outHeight: Int,
                             cropX: Int, cropY: Int, cropWidth: Int, cropHeight: Int,
                             kind: Interpolation, into dst: UnsafeMutablePointer<UInt8>) {
        if runsVerticalPassFirst(width: width, height: height, outWidth: outWidth, outHeight: outHeight) {
            resizeWindowVerticalFirst(src, width: width, height: height, outWidth: outWidth, outHeight: outHeight,
                                      cropX: cropX, cropY: cropY, cropWidth: cropWidth, cropHeight: cropHeight, kind: kind, into: dst)
            return
        }
        let needH = outWidth != width, needV = outHeight != height
        let cols = cropX..<(cropX + cropWidth), rows = cropY..<(cropY + cropHeight)
        let vAxis = needV ? axis(inSize: height, outSize: outHeight, window: rows, kind: kind) : nil
        // Input rows the vertical pass will read.
        let yFirst = vAxis.map { $0.first[0] } ?? cropY
        let yEnd = vAxis.map { $0.first[cropHeight - 1] + $0.count[cropHeight - 1] } ?? (cropY + cropHeight)
        let half = Int32(1) << Int32(precisionBits - 1)

        // Horizontal pass (or a strided view of the input when the width is unchanged).
        var temp = [UInt8]()
        let midStride: Int
        if needH {
            let hAxis = axis(inSize: width, outSize: outWidth, window: cols, kind: kind)
            temp = [UInt8](repeating: 0, count: (yEnd - yFirst) * cropWidth * 3)
            midStride = cropWidth * 3
            hAxis.weights.withUnsafeBufferPointer { kw in
                temp.withUnsafeMutableBufferPointer { out in
                    for y in yFirst..<yEnd {
                        let line = src + y * width * 3
                        let o = out.baseAddress! + (y - yFirst) * midStride
                        // A 4-byte load per RGB pixel (the 4th lane is ignored) needs one readable byte past
                        // the pixel, which every row but the image's last has.
                        if y + 1 < height {
                            for xx in 0..<cropWidth {
                                let k = kw.baseAddress! + xx * hAxis.ksize
                                var p = UnsafeRawPointer(line + hAxis.first[xx] * 3)
                                var acc = SIMD4<Int32>(repeating: half)
                                for t in 0..<hAxis.count[xx] {
                                    acc &+= SIMD4<Int32>(truncatingIfNeeded: p.loadUnaligned(as: SIMD4<UInt8>.self)) &* k[t]
                                    p += 3
                                }
                                o[xx * 3] = clip8(acc[0])
                                o[xx * 3 + 1] = clip8(acc[1])
                                o[xx * 3 + 2] = clip8(acc[2])
                            }
                        } else {
                            for xx in 0..<cropWidth {
                                let k = kw.baseAddress! + xx * hAxis.ksize
                                var p = line + hAxis.first[xx] * 3
                                var s0 = half, s1 = half, s2 = half
                                for t in 0..<hAxis.count[xx] {
                                    let w = k[t]
                                    s0 &+= Int32(p[0]) &* w
                                    s1 &+= Int32(p[1]) &* w
                                    s2 &+= Int32(p[2]) &* w
                                    p += 3
                                }
                                o[xx * 3] = clip8(s0)
                                o[xx * 3 + 1] = clip8(s1)
                                o[xx * 3 + 2] = clip8(s2)
                            }
                        }
                    }
                }
            }
        } else {
            midStride = width * 3
        }

        func verticalPass(_ mid: UnsafePointer<UInt8>) {
            let rowBytes = cropWidth * 3
            guard let v = vAxis else {
                for r in 0..<cropHeight {
                    (dst + r * rowBytes).update(from: mid + (r + cropY - yFirst) * midStride, count: rowBytes)
                }
                return
            }
            // Row-at-a-time accumulation keeps the inner loop contiguous so it vectorizes.
            let acc = UnsafeMutablePointer<Int32>.allocate(capacity: rowBytes)
            defer { acc.deallocate() }
            v.weights.withUnsafeBufferPointer { kw in
                for r in 0..<cropHeight {
                    let k = kw.baseAddress! + r * v.ksize
                    let base = mid + (v.first[r] - yFirst) * midStride
                    acc.update(repeating: half, count: rowBytes)
                    for t in 0..<v.count[r] {
                        let w = k[t]
                        let line = base + t * midStride
                        for i in 0..<rowBytes { acc[i] &+= Int32(line[i]) &* w }
                    }
                    let o = dst + r * rowBytes
                    for i in 0..<rowBytes { o[i] = clip8(acc[i]) }
                }
            }
        }
        if needH {
            temp.withUnsafeBufferPointer { verticalPass($0.baseAddress!) }
        } else {
            verticalPass(src + yFirst * width * 3 + cropX * 3)
        }
    }

    /// `resizeWindow` for the vertical-pass-first order: the vertical pass on the input columns the
    /// window's horizontal taps read, clipped to uint8, then the horizontal pass on those rows.
    static func resizeWindowVerticalFirst(_ src: UnsafePointer<UInt8>, width: Int, height: Int, outWidth: Int, outHeight: Int,
                                          cropX: Int, cropY: Int, cropWidth: Int, cropHeight: Int,
                                          kind: Interpolation, into dst: UnsafeMutablePointer<UInt8>) {
        let v = axis(inSize: height, outSize: outHeight, window: cropY..<(cropY + cropHeight), kind: kind)
        let h = axis(inSize: width, outSize: outWidth, window: cropX..<(cropX + cropWidth), kind: kind)
        let xFirst = h.first[0], xEnd = h.first[cropWidth - 1] + h.count[cropWidth - 1]
        let midBytes = (xEnd - xFirst) * 3
        let half = Int32(1) << Int32(precisionBits - 1)
        var mid = [UInt8](repeating: 0, count: cropHeight * midBytes)
        var acc = [Int32](repeating: 0, count: midBytes)
        for r in 0..<cropHeight {
            for i in 0..<midBytes { acc[i] = half }
            for t in 0..<v.count[r] {
                let w = v.weights[r * v.ksize + t]
                let line = src + (v.first[r] + t) * width * 3 + xFirst * 3
                for i in 0..<midBytes { acc[i] &+= Int32(line[i]) &* w }
            }
            for i in 0..<midBytes { mid[r * midBytes + i] = clip8(acc[i]) }
        }
        for r in 0..<cropHeight {
            for xx in 0..<cropWidth {
                var s0 = half, s1 = half, s2 = half
                for t in 0..<h.count[xx] {
                    let w = h.weights[xx * h.ksize + t], p = r * midBytes + (h.first[xx] - xFirst + t) * 3
                    s0 &+= Int32(mid[p]) &* w
                    s1 &+= Int32(mid[p + 1]) &* w
                    s2 &+= Int32(mid[p + 2]) &* w
                }
                let o = dst + (r * cropWidth + xx) * 3
                o[0] = clip8(s0); o[1] = clip8(s1); o[2] = clip8(s2)
            }
        }
    }
}
