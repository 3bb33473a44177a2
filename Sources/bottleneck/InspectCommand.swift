import ArgumentParser
import BottleneckImage
import Foundation

/// `bottleneck inspect IMG...`: header facts per image, without decoding pixels.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print format, stored size, color model, bit depth and EXIF orientation of images.",
        discussion: "Reads only the headers. Exits with status 1 if any file could not be inspected (each error is printed).")

    @Argument(help: "Image files (JPEG, PNG, PPM/PGM; other formats are reported as unsupported).")
    var images: [String] = []

    @Flag(help: "Also decode each image fully, so damaged pixel data is reported too.")
    var decode = false

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("Pass at least one image file, e.g. `bottleneck inspect photo.jpg`.") }
    }

    func run() throws {
        var failed = 0
        for path in images {
            let url = URL(fileURLWithPath: path)
            do {
                let info = try ImageDecoder.inspect(contentsOf: url)
                if decode { _ = try ImageDecoder.decode(contentsOf: url) }
                var flags: [String] = []
                if info.progressive { flags.append("progressive") }
                if info.interlaced { flags.append("interlaced") }
                let oriented = info.orientedSize
                let shown = info.orientation == 1 ? "" : " (displayed \(oriented.width)x\(oriented.height))"
                print("\(path): \(info.format.rawValue) \(info.width)x\(info.height) \(info.colorModel) \(info.bitDepth)-bit "
                      + "orientation \(info.orientation)\(shown)" + (flags.isEmpty ? "" : " " + flags.joined(separator: " ")))
            } catch {
                failed += 1
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            }
        }
        if failed > 0 {
            FileHandle.standardError.write(Data("\(failed) of \(images.count) file(s) failed\n".utf8))
            throw ExitCode(1)
        }
    }
}
