import Foundation
import BottleneckImage

/// Anything that maps a batch of preprocessed images to one feature vector per image.
///
/// The extractor feeds `batch` images laid out N x 3 x C x C (CHW per image, C the crop size of
/// ``preset``) and expects N x ``featureDimension`` floats back, row-major. Implementations are
/// called from one thread at a time (the extractor's network stage) and may use threads inside,
/// unless they declare ``supportsConcurrentSlices``.
public protocol FeatureBackbone: AnyObject {
    /// True when `features` may run on several threads at once, each call inside
    /// `TensorThreads.withSingleThreadedKernels`, and a batch computed in slices this way equals
    /// one call on the whole batch bit for bit. The extractor then runs one worker per thread, each
    /// decoding images and running the backbone on slices of decoded batches, instead of decoder
    /// threads feeding a multi-threaded backbone on top of them. Default: false.
    var supportsConcurrentSlices: Bool { get }
    /// Length D of each feature vector.
    var featureDimension: Int { get }
    /// Preprocessing the backbone expects (resize, crop, normalisation).
    var preset: PreprocessPreset { get }
    /// What produced the features: `model`, `cut` or `layer`, `pool`, `weights_sha256`.
    /// Written verbatim into `meta.json` and part of the resume fingerprint, so two backbones
    /// with equal identities must produce equal features.
    var identity: [String: String] { get }
    /// Computes features for `batch` images at `input` (N x 3 x C x C) into `output` (N x D).
    /// - Throws: when the backbone cannot process the batch; extraction stops with the error.
    func features(_ input: UnsafePointer<Float>, batch: Int, into output: UnsafeMutablePointer<Float>) throws
}

extension FeatureBackbone {
    /// Default: one call at a time.
    public var supportsConcurrentSlices: Bool { false }
}

/// The raw-pixel baseline: each preprocessed channel is area-averaged down to a `grid` x `grid`
/// image and the 3 x grid x grid values are the feature vector (768-d for the default 16).
///
/// It needs no weights, so the whole pipeline is usable and testable without a CNN, and it is the
/// "no transfer" baseline that shows how much a pretrained network's features add. Averaging uses
/// integer cell bounds `[i*C/grid, (i+1)*C/grid)`, so any crop size works. Cost: O(3·C²) per image.
public final class RawPixelBackbone: FeatureBackbone {
    /// The `--model` name that selects this backbone.
    public static let modelName = "raw-pixels"
    /// Output grid side; D = 3 * grid * grid.
    public let grid: Int
    /// Preprocessing applied before averaging.
    public let preset: PreprocessPreset
    /// Crop side C of the preprocessed input.
    public let inputSide: Int

    /// Creates the baseline for inputs produced by `preset`, pooled to `grid` x `grid` per channel.
    /// - Precondition: `1 <= grid <= crop side`.
    public init(preset: PreprocessPreset = .imagenet, grid: Int = 16) {
        self.preset = preset
        self.grid = grid
        let count = Preprocessor(preset: preset).outputCount
        self.inputSide = Int(Double(count / 3).squareRoot().rounded())
        precondition(inputSide * inputSide * 3 == count, "preset output is not 3 x C x C")
        precondition(grid >= 1 && grid <= inputSide, "grid \(grid) must be in 1...\(inputSide)")
    }

    /// True: each image is averaged on its own, reading only the input.
    public var supportsConcurrentSlices: Bool { true }

    /// 3 * grid * grid.
    public var featureDimension: Int { 3 * grid * grid }

    /// `model=raw-pixels`, `layer=<grid>x<grid>`, `pool=area`, `weights_sha256=none`.
    public var identity: [String: String] {
        ["model": RawPixelBackbone.modelName, "layer": "\(grid)x\(grid)", "pool": "area", "weights_sha256": "none"]
    }

    /// Area-averages each image of the batch; never throws.
    public func features(_ input: UnsafePointer<Float>, batch: Int, into output: UnsafeMutablePointer<Float>) throws {
        let c = inputSide, g = grid
        let bounds = (0...g).map { $0 * c / g }
        for n in 0..<batch {
            let image = input + n * 3 * c * c
            let out = output + n * featureDimension
            for ch in 0..<3 {
                let plane = image + ch * c * c
                for gy in 0..<g {
                    let y0 = bounds[gy], y1 = bounds[gy + 1]
                    for gx in 0..<g {
                        let x0 = bounds[gx], x1 = bounds[gx + 1]
                        // Accumulate in Double so the value does not depend on summation order subtleties.
                        var sum = 0.0
                        for y in y0..<y1 {
                            let row = plane + y * c
                            for x in x0..<x1 { sum += Double(row[x]) }
                        }
                        out[(ch * g + gy) * g + gx] = Float(sum / Double((y1 - y0) * (x1 - x0)))
                    }
                }
            }
        }
    }
}
