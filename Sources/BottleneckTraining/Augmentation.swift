import BottleneckCore
import Foundation

/// Training-time augmentations applied to decoded images, seeded for reproducibility.
public struct AugmentationSet: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// Random horizontal flip with probability 1/2 (`RandomHorizontalFlip`).
    public static let flip = AugmentationSet(rawValue: 1)
    /// torchvision `RandomResizedCrop(size, scale: (0.08, 1), ratio: (3/4, 4/3))`.
    public static let crop = AugmentationSet(rawValue: 2)

    /// Parses a comma-separated list (`"flip,crop"`, `"none"` or empty for no augmentation).
    public init(parsing text: String) throws {
        var set: AugmentationSet = []
        for part in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) where !part.isEmpty {
            switch part {
            case "flip": set.insert(.flip)
            case "crop": set.insert(.crop)
            case "none": break
            default: throw TrainingError.invalidConfiguration("unknown augmentation '\(part)' (use flip, crop or none)")
            }
        }
        self = set
    }
}

/// A crop rectangle in source pixels.
public struct CropBox: Sendable, Equatable {
    /// Top row and left column.
    public var top: Int, left: Int
    /// Height and width in pixels (≥ 1).
    public var height: Int, width: Int

    /// Creates a box.
    public init(top: Int, left: Int, height: Int, width: Int) {
        self.top = top
        self.left = left
        self.height = height
        self.width = width
    }
}

/// Random crop-and-resize and flip, following torchvision's `RandomResizedCrop.get_params` and
/// `RandomHorizontalFlip`, driven by ``SplitMix64`` instead of Python's RNG (same distribution, different stream).
public enum Augment {
    /// torchvision's `RandomResizedCrop.get_params`: up to 10 tries of an area fraction uniform in `scale` and a
    /// log-uniform aspect ratio in `ratio`, falling back to the largest centred crop with a ratio in range.
    public static func randomResizedCropBox(width: Int, height: Int, rng: inout SplitMix64,
                                            scale: ClosedRange<Double> = 0.08...1,
                                            ratio: ClosedRange<Double> = (3.0 / 4)...(4.0 / 3)) -> CropBox {
        let area = Double(width * height)
        let logLo = log(ratio.lowerBound), logHi = log(ratio.upperBound)
        for _ in 0..<10 {
            let target = area * (scale.lowerBound + (scale.upperBound - scale.lowerBound) * rng.uniformDouble())
            let aspect = exp(logLo + (logHi - logLo) * rng.uniformDouble())
            let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
            if w > 0 && w <= width && h > 0 && h <= height {
                let top = rng.below(height - h + 1)
                let left = rng.below(width - w + 1)
                return CropBox(top: top, left: left, height: h, width: w)
            }
        }
        let inRatio = Double(width) / Double(height)
        var w = width, h = height
        if inRatio < ratio.lowerBound {
            h = Int((Double(w) / ratio.lowerBound).rounded(.toNearestOrEven))
        } else if inRatio > ratio.upperBound {
            w = Int((Double(h) * ratio.upperBound).rounded(.toNearestOrEven))
        }
        return CropBox(top: (height - h) / 2, left: (width - w) / 2, height: h, width: w)
    }

    /// Resizes `box` of an interleaved RGB8 image (`width`×`height`, row-major) to `size`×`size`, optionally
    /// mirrored, and writes normalised CHW floats `(v/255 − mean[c])/std[c]` into `dst` (`3·size²` values).
    ///
    /// Resampling is Pillow's separable bilinear ("triangle") filter with its antialiasing support widening
    /// on downscale, evaluated in float without Pillow's intermediate uint8 rounding (an augmentation needs
    /// the filter's shape, not bit parity). Cost: O(size · (box.width + size) · 3) per pass.
    public static func resizedCrop(pixels: UnsafeBufferPointer<UInt8>, width: Int, height: Int, box: CropBox,
                                   size: Int, flip: Bool, mean: [Float], std: [Float], into dst: UnsafeMutablePointer<Float>) {
        precondition(pixels.count >= width * height * 3 && box.width > 0 && box.height > 0)
        let hx = weights(inStart: box.left, inSize: box.width, outSize: size, limit: width)
        let vy = weights(inStart: box.top, inSize: box.height, outSize: size, limit: height)
        // Horizontal pass over the rows the vertical pass needs: [rows, size, 3].
        let rowLo = vy.map { $0.start }.min()!, rowHi = vy.map { $0.start + $0.w.count }.max()!
        let rows = rowHi - rowLo
        var mid = [Float](repeating: 0, count: rows * size * 3)
        mid.withUnsafeMutableBufferPointer { m in
            for r in 0..<rows {
                let src = pixels.baseAddress! + (rowLo + r) * width * 3
                for ox in 0..<size {
                    let f = hx[flip ? size - 1 - ox : ox]
                    var a0: Float = 0, a1: Float = 0, a2: Float = 0
                    for (k, wk) in f.w.enumerated() {
                        let s = src + (f.start + k) * 3
                        a0 += wk * Float(s[0]); a1 += wk * Float(s[1]); a2 += wk * Float(s[2])
                    }
                    let d = m.baseAddress! + (r * size + ox) * 3
                    d[0] = a0; d[1] = a1; d[2] = a2
                }
            }
            let plane = size * size
            let scale = (0..<3).map { 1 / (255 * std[$0]) }, shift = (0..<3).map { mean[$0] / std[$0] }
            for oy in 0..<size {
                let f = vy[oy]
                for ox in 0..<size {
                    var acc: (Float, Float, Float) = (0, 0, 0)
                    for (k, wk) in f.w.enumerated() {
                        let s = m.baseAddress! + ((f.start - rowLo + k) * size + ox) * 3
                        acc.0 += wk * s[0]; acc.1 += wk * s[1]; acc.2 += wk * s[2]
                    }
                    // Clamp to the uint8 range as Pillow's output would be.
                    let i = oy * size + ox
                    dst[i] = min(max(acc.0, 0), 255) * scale[0] - shift[0]
                    dst[plane + i] = min(max(acc.1, 0), 255) * scale[1] - shift[1]
                    dst[2 * plane + i] = min(max(acc.2, 0), 255) * scale[2] - shift[2]
                }
            }
        }
    }

    /// Mirrors a `[C, H, W]` float image left-right in place.
    public static func flipHorizontally(_ chw: UnsafeMutablePointer<Float>, channels: Int, height: Int, width: Int) {
        for r in 0..<(channels * height) {
            let row = chw + r * width
            var a = 0, b = width - 1
            while a < b { swap(&row[a], &row[b]); a += 1; b -= 1 }
        }
    }

    /// Pillow's `precompute_coeffs` for the bilinear filter over an input window `[inStart, inStart + inSize)`;
    /// like Pillow, taps may reach outside the window up to the image edge `[0, limit)`.
    static func weights(inStart: Int, inSize: Int, outSize: Int, limit: Int) -> [(start: Int, w: [Float])] {
        let scale = Double(inSize) / Double(outSize)
        let fscale = max(scale, 1)
        let support = 1.0 * fscale
        return (0..<outSize).map { o in
            let center = Double(inStart) + (Double(o) + 0.5) * scale
            let lo = max(Int(center - support + 0.5), 0)
            let hi = min(Int(center + support + 0.5), limit)
            var w = (lo..<hi).map { i -> Double in max(0, 1 - abs((Double(i) - center + 0.5) / fscale)) }
            let total = w.reduce(0, +)
            if total > 0 { w = w.map { $0 / total } }
            return (lo, w.map(Float.init))
        }
    }
}

extension SplitMix64 {
    /// Uniform in [0, 1) with 53 bits.
    mutating func uniformDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
    /// Uniform integer in `0..<n`.
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
