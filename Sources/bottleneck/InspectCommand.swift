import ArgumentParser
import BottleneckImage
import Foundation

/// `bottleneck inspect IMG...`: header facts per image, without decoding pixels.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print format, stored size, color model, bit depth and EXIF orientation of images.",
        discussion: """
            Reads only the headers: a bounded prefix and the marker segments or chunks before the image data, skipping what it does not need, so the cost does not grow with the file's size. With --decode the decoding limits apply (see --help of the limit options). Exits with status 1 if any file could not be inspected (each error is printed).
            """)

    @Argument(help: "Image files (JPEG, PNG, PPM/PGM; other formats are reported as unsupported).")
    var images: [String] = []

    @Flag(help: "Also decode each image fully, so damaged pixel data is reported too.")
    var decode = false

    @OptionGroup var limits: DecodeLimitOptions

    func validate() throws {
        guard !images.isEmpty else { throw ValidationError("Pass at least one image file, e.g. `bottleneck inspect photo.jpg`.") }
    }

    func run() throws {
        limits.apply()
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

/// Decoding limits on the command line; each overrides its environment variable, which overrides
/// the built-in default. Every command decodes under the environment's limits (applied at startup).
struct DecodeLimitOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Refuse image files larger than this, before reading them (default 256M; env \(DecodeLimitSettings.maxImageBytesVariable)).",
                               valueName: "size"))
    var maxImageBytes: ByteSizeArgument?

    @Option(help: ArgumentHelp("Memory all decoder threads together may use; decodes wait for room, and an image needing more than all of it is refused (default 2G; env \(DecodeLimitSettings.decodeMemoryVariable)).",
                               valueName: "size"))
    var decodeMemory: ByteSizeArgument?

    @Option(help: ArgumentHelp("Refuse JPEGs with more scans than this, before decoding; each scan is one pass over the image (default \(DecodeOptions.standardMaxJPEGScans); env \(DecodeLimitSettings.maxJPEGScansVariable)).",
                               valueName: "n"))
    var maxJpegScans: Int?

    func validate() throws {
        if let n = maxJpegScans, n < 1 { throw ValidationError("--max-jpeg-scans must be at least 1.") }
    }

    /// Makes these limits the process-wide defaults of every decode that follows.
    func apply() {
        if let b = maxImageBytes { DecodeOptions.defaultMaxFileBytes = b.bytes }
        if let b = decodeMemory { DecodeMemoryBudget.shared.capacity = b.bytes }
        if let n = maxJpegScans { DecodeOptions.defaultMaxJPEGScans = n }
    }
}

/// A byte count on the command line: digits with an optional K, M, G or T suffix (powers of 1024).
struct ByteSizeArgument: ExpressibleByArgument {
    var bytes: Int
    init?(argument: String) {
        guard let n = DecodeLimitSettings.parseByteSize(argument) else { return nil }
        bytes = n
    }
    static var defaultCompletionKind: CompletionKind { .default }
}
