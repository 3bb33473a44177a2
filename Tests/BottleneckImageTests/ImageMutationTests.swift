import BottleneckCore
import BottleneckImage
import BottleneckTestSupport
import Foundation
import XCTest

/// Seeded random truncations and byte flips of valid JPEG, PNG and PPM/PGM files through the
/// decoder and the header reader (in memory and through the file-backed bounded reader): every
/// case must return or throw an ``ImageDecodingError`` naming the input, never crash or hang.
final class ImageMutationTests: XCTestCase {
    static let fixtures = [
        "jpeg_baseline.jpg", "jpeg_progressive.jpg", "jpeg_exif6_xmp8.jpg", "jpeg_xmp_orient3.jpg", "jpeg_cmyk.jpg",
        "jpeg_gray.jpg", "png_rgb8.png", "png_interlaced_rgba16.png", "png_exif_orient6.png", "png_palette_trns.png",
        "png_gray16.png", "ppm_rgb.ppm", "pgm_gray.pgm",
    ]
    /// Cases per fixture: 13 fixtures x 400 = 5200 mutated files, each decoded and inspected twice.
    static let casesPerFixture = 400

    func testDecoderAndHeaderReaderSurviveMutations() throws {
        let dir = try Mutations.scratchDirectory("image-mutations")
        defer { try? FileManager.default.removeItem(at: dir) }
        // Small limits keep mutated dimensions from turning the run into a memory or time test.
        let options = DecodeOptions(maxPixels: 1 << 22, memoryBudget: DecodeMemoryBudget(capacity: 256 << 20))
        var outcomes: [String: Int] = [:]
        var total = 0
        for (f, file) in Self.fixtures.enumerated() {
            let original = [UInt8](try Data(contentsOf: try Fixture.url("decode", file)))
            for (i, mutation) in Mutations.cases(of: original, count: Self.casesPerFixture, seed: 2700 + UInt64(f)).enumerated() {
                let name = "\(file) \(mutation.label)"
                let data = Data(mutation.bytes)
                func check(_ what: String, _ body: () throws -> Void) {
                    do {
                        try body()
                        outcomes["\(what) ok", default: 0] += 1
                    } catch let error as ImageDecodingError {
                        outcomes["\(what) \(CorruptInputTests.kind(of: error).rawValue)", default: 0] += 1
                        XCTAssertTrue(error.description.hasPrefix(error.path + ": "), "\(name): \(error)")
                    } catch {
                        XCTFail("\(name): \(what) threw a non-image error \(error)")
                    }
                }
                check("decode") { _ = try ImageDecoder.decode(data: data, name: name, options: options) }
                check("inspect") { _ = try ImageDecoder.inspect(data: data, name: name) }
                if i % 4 == 1 {
                    // The file-backed path: bounded reads through the block cache.
                    let url = dir.appendingPathComponent("case-\(f)-\(i)")
                    try data.write(to: url)
                    check("inspect-file") { _ = try ImageDecoder.inspect(contentsOf: url) }
                    check("decode-file") { _ = try ImageDecoder.decode(contentsOf: url, options: options) }
                    try FileManager.default.removeItem(at: url)
                }
                total += 1
            }
        }
        XCTAssertEqual(total, Self.fixtures.count * Self.casesPerFixture)
        print("image mutations: \(total) cases: \(outcomes.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")
    }
}
