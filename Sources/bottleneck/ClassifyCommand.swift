import ArgumentParser
import BottleneckModels
import Foundation

/// `bottleneck classify`: ImageNet top-k labels for photos.
struct ClassifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "classify",
        abstract: "Print the top ImageNet classes with probabilities for each image.",
        discussion: """
        Directories are searched recursively for .jpg/.jpeg/.png/.ppm/.pgm files. \
        With --json, one object per line: {"path": ..., "top": [{"index": 310, "label": "ant", "probability": 0.91}, ...]}. \
        Images that fail to decode are reported on stderr (and as {"path": ..., "error": ...} with --json); \
        the exit status is 1 if any failed.
        """)

    @Argument(help: "Image files or directories.")
    var paths: [String]

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "How many classes to show per image.")
    var top: Int = 5

    @Option(help: "Images per network call.")
    var batch: Int = 8

    @Flag(help: "JSON lines output.")
    var json = false

    func validate() throws {
        guard (1...1000).contains(top) else { throw ValidationError("--top must be between 1 and 1000") }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1") }
        try ValueRanges.check(batch, ValueRanges.batch, "--batch")
        if let arch = try? ModelZoo.architecture(modelOptions.checkpoint.model), !arch.hasClassifier {
            let last = arch.stageShapes(height: arch.inputSize, width: arch.inputSize).last!
            throw ValidationError("\(arch.name) has no classifier: it ends at its \(last) `\(arch.stageNames.last!)` features; use `bottleneck extract` or `bottleneck train` instead")
        }
        if modelOptions.stage.layer != nil || (modelOptions.stage.cut ?? 0) != 0 {
            throw ValidationError("classify needs the logits: leave out --cut/--layer (use `bottleneck extract` for features)")
        }
    }

    func run() throws {
        let files = try ImageClassifier.imageFiles(in: paths)
        guard !files.isEmpty else { throw ValidationError("no images found in \(paths.joined(separator: " "))") }
        let loaded = try modelOptions.loadModel(defaultCut: 0)
        let classifier = try ImageClassifier(network: loaded.network, preset: loaded.preset, labels: try ImageNetLabels.all())
        var failed = 0
        // Classify in slices so output streams while large folders are processed.
        var start = 0
        while start < files.count {
            let slice = Array(files[start..<min(files.count, start + batch * 4)])
            start += slice.count
            for (url, result) in classifier.classify(slice, top: top, batchSize: batch) {
                switch result {
                case .success(let preds):
                    if json {
                        let obj: [String: Any] = ["path": url.path, "top": preds.map {
                            ["index": $0.index, "label": $0.label, "probability": Double($0.probability)] as [String: Any]
                        }]
                        print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self))
                    } else {
                        print(url.path)
                        for p in preds { print(String(format: "  %6.2f%%  %4d  %@", Double(p.probability) * 100, p.index, p.label)) }
                    }
                case .failure(let error):
                    failed += 1
                    FileHandle.standardError.write(Data("error: \(url.path): \(error)\n".utf8))
                    if json {
                        let obj: [String: Any] = ["path": url.path, "error": "\(error)"]
                        print(String(decoding: try JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self))
                    }
                }
            }
        }
        if failed > 0 { throw ExitCode(1) }
    }
}
