import BottleneckCore
import BottleneckImage
import Foundation
import XCTest

/// Preprocessing against torchvision `Resize(256, interp) + CenterCrop(224) + ToTensor + Normalize`
/// on the same files (references from Tests/Reference/image/make_fixtures.py).
/// Acceptance tolerance: max abs <= 2e-2 and mean abs <= 2e-3. PNG inputs decode exactly, so for them
/// the resize must reproduce Pillow's uint8 output bit for bit and the tensor must be identical.
final class PreprocessParityTests: XCTestCase {
    func testTensorsMatchTorchvision() throws {
        let cases: [(file: String, preset: PreprocessPreset)] = [
            ("photo_500x375.jpg", .imagenet), ("photo_500x375.jpg", .lite), ("photo_300x420.png", .imagenet),
        ]
        for (file, preset) in cases {
            let stem = (file as NSString).deletingPathExtension
            let expected = try NumpyArray(contentsOf: try Fixture.url("preprocess", "\(stem).\(preset.name).npy"))
            XCTAssertEqual(expected.shape, [3, 224, 224])
            let image = try ImageDecoder.decode(contentsOf: try Fixture.url("preprocess", file))
            let tensor = Preprocessor(preset: preset).tensor(image)
            let (mx, mean) = differences(tensor, expected.floats)
            print("preprocess parity \(file) \(preset.name): max abs \(mx), mean abs \(mean)")
            XCTAssertLessThanOrEqual(mx, 2e-2, "\(file) \(preset.name)")
            XCTAssertLessThanOrEqual(mean, 2e-3, "\(file) \(preset.name)")
            if file.hasSuffix(".png") { XCTAssertEqual(mx, 0, "\(file) \(preset.name): PNG path must be bit-exact") }
        }
    }

    func testResizedCropIsPillowExact() throws {
        let cases: [(file: String, preset: PreprocessPreset)] = [
            ("photo_300x420.png", .lite), ("photo_180x120.png", .imagenet), ("photo_180x120.png", .lite),
            ("photo_256x300.png", .imagenet), ("photo_256x300.png", .lite),
        ]
        for (file, preset) in cases {
            let stem = (file as NSString).deletingPathExtension
            let expected = try NumpyArray(contentsOf: try Fixture.url("preprocess", "\(stem).\(preset.name).crop.npy"))
            let image = try ImageDecoder.decode(contentsOf: try Fixture.url("preprocess", file))
            let crop = Preprocessor(preset: preset).resizedCrop(image)
            XCTAssertEqual(expected.shape, [224, 224, 3])
            var differing = 0
            for (a, b) in zip(crop.pixels, expected.bytes) where a != b { differing += 1 }
            XCTAssertEqual(differing, 0, "\(file) \(preset.name): \(differing) bytes differ from Pillow's resize+crop")
        }
    }

    func testResizedSizeFollowsTorchvision() {
        let p = Preprocessor(preset: .imagenet)
        XCTAssertTrue(p.resizedSize(width: 500, height: 375) == (341, 256))
        XCTAssertTrue(p.resizedSize(width: 375, height: 500) == (256, 341))
        XCTAssertTrue(p.resizedSize(width: 100, height: 100) == (256, 256))
        XCTAssertTrue(p.resizedSize(width: 333, height: 999) == (256, 768))
        XCTAssertEqual(p.outputCount, 3 * 224 * 224)
    }

    func testPresetsByName() {
        XCTAssertEqual(PreprocessPreset.named("imagenet"), .imagenet)
        XCTAssertEqual(PreprocessPreset.named("lite")?.interpolation, .bicubic)
        XCTAssertNil(PreprocessPreset.named("nope"))
        XCTAssertEqual(PreprocessPreset.all.count, 3)
        let inception = PreprocessPreset.named("inception")
        XCTAssertEqual(inception?.resizesToExactSize, true)
        XCTAssertTrue(Preprocessor(preset: .inception).resizedSize(width: 366, height: 500) == (299, 299))
        // A preset recorded before resizesToExactSize existed decodes as a cropping one.
        let old = #"{"name":"x","resizeShorter":256,"cropSize":224,"interpolation":"bilinear","mean":[0,0,0],"std":[1,1,1]}"#
        XCTAssertEqual(try JSONDecoder().decode(PreprocessPreset.self, from: Data(old.utf8)).resizesToExactSize, false)
    }
}
