import BottleneckCore
import BottleneckImage
import Foundation
import XCTest

/// Decoded pixels against Pillow's `exif_transpose(Image.open(f)).convert("RGB")`
/// (reference .npy files from Tests/Reference/image/make_fixtures.py).
/// Tolerance: JPEG ±1 per channel (Pillow bundles libjpeg-turbo 3.x, we link Debian's 2.1.5); PNG and PPM exact.
final class DecodeParityTests: XCTestCase {
    func testEveryFixtureMatchesPillow() throws {
        let files = try Fixture.files("decode").filter { $0.pathExtension != "npy" }
        XCTAssertGreaterThanOrEqual(files.count, 30)
        var worstByFile: [String] = []
        for url in files {
            let name = url.lastPathComponent
            let expected = try NumpyArray(contentsOf: url.deletingPathExtension().appendingPathExtension("npy"))
            let image = try ImageDecoder.decode(contentsOf: url)
            XCTAssertEqual([image.height, image.width, 3], expected.shape, name)
            guard [image.height, image.width, 3] == expected.shape else { continue }
            var worst = 0
            for (a, b) in zip(image.pixels, expected.bytes) { worst = max(worst, abs(Int(a) - Int(b))) }
            let tolerance = ImageDecoder.sniff(try Data(contentsOf: url)) == .jpeg ? 1 : 0
            XCTAssertLessThanOrEqual(worst, tolerance, "\(name): max channel difference \(worst) vs Pillow")
            worstByFile.append("\(name)=\(worst)")
        }
        print("decode parity vs Pillow (max channel difference): \(worstByFile.joined(separator: " "))")
    }

    func testInspectReportsHeaders() throws {
        func info(_ f: String) throws -> ImageInfo { try ImageDecoder.inspect(contentsOf: try Fixture.url("decode", f)) }
        let cmyk = try info("jpeg_cmyk.jpg")
        XCTAssertEqual(cmyk.format, .jpeg)
        XCTAssertEqual(cmyk.colorModel, "CMYK")
        XCTAssertEqual(try info("jpeg_ycck.jpg").colorModel, "YCCK")
        XCTAssertEqual(try info("jpeg_gray.jpg").colorModel, "Gray")
        XCTAssertTrue(try info("jpeg_progressive.jpg").progressive)
        XCTAssertFalse(try info("jpeg_baseline.jpg").progressive)
        for o in 1...8 {
            let i = try info("jpeg_orient\(o).jpg")
            XCTAssertEqual(i.orientation, o)
            XCTAssertEqual(i.width, 45)
            XCTAssertEqual(i.height, 29)
        }
        let png = try info("png_interlaced_rgba16.png")
        XCTAssertEqual(png.format, .png)
        XCTAssertEqual(png.colorModel, "RGBA")
        XCTAssertEqual(png.bitDepth, 16)
        XCTAssertTrue(png.interlaced)
        XCTAssertEqual(try info("png_palette_trns.png").colorModel, "Palette")
        XCTAssertEqual(try info("png_gray_alpha8.png").colorModel, "GrayAlpha")
        XCTAssertEqual(try info("png_exif_orient6.png").orientation, 6)
        XCTAssertEqual(try info("ppm_rgb.ppm").format, .ppm)
    }

    func testSniffUsesContentNotExtension() throws {
        let jpeg = try Data(contentsOf: try Fixture.url("decode", "jpeg_baseline.jpg"))
        XCTAssertEqual(ImageDecoder.sniff(jpeg), .jpeg)
        // Same bytes under a .png name still decode as JPEG.
        let image = try ImageDecoder.decode(data: jpeg, name: "renamed.png")
        XCTAssertEqual(image.width, 45)
        XCTAssertEqual(ImageDecoder.sniff(Data("GIF89a....".utf8)), .gif)
        XCTAssertEqual(ImageDecoder.sniff(Data("RIFF\u{0}\u{0}\u{0}\u{0}WEBPVP8 ".utf8)), .webp)
        XCTAssertEqual(ImageDecoder.sniff(Data([0x49, 0x49, 0x2A, 0x00, 8, 0, 0, 0])), .tiff)
        XCTAssertEqual(ImageDecoder.sniff(Data("BM".utf8 + [UInt8](repeating: 0, count: 20))), .bmp)
        XCTAssertEqual(ImageDecoder.sniff(Data("hello world".utf8)), .unknown)
    }

    func testReducedDCTKeepsShorterSideAboveMinimum() throws {
        let url = try Fixture.url("preprocess", "photo_500x375.jpg")
        let exact = try ImageDecoder.decode(contentsOf: url)
        XCTAssertEqual(exact.width, 500)
        let half = try ImageDecoder.decode(contentsOf: url, options: DecodeOptions(reducedDCTMinimumShorterSide: 150))
        XCTAssertEqual([half.width, half.height], [250, 188])  // 1/4 would give 94 < 150
        let none = try ImageDecoder.decode(contentsOf: url, options: DecodeOptions(reducedDCTMinimumShorterSide: 256))
        XCTAssertEqual(none.width, 500)
    }

    func testPNGWriterRoundTrip() throws {
        var pixels = [UInt8](repeating: 0, count: 17 * 9 * 3)
        for i in pixels.indices { pixels[i] = UInt8(truncatingIfNeeded: i * 37 + i / 5) }
        let image = RGBImage(width: 17, height: 9, pixels: pixels)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("bn-pngwriter-\(getpid()).png")
        defer { try? FileManager.default.removeItem(at: url) }
        try PNGWriter.write(image, to: url)
        XCTAssertEqual(try ImageDecoder.decode(contentsOf: url), image)
    }
}
