import Foundation

/// The 1000 ImageNet-1k class names in class-index order, as torchvision publishes them
/// (`ResNet50_Weights.IMAGENET1K_V1.meta["categories"]`): index 309 is "bee", 310 is "ant".
public enum ImageNetLabels {
    /// Number of classes.
    public static let count = 1000

    /// All names, index = class id. Loaded once from the bundled `imagenet_classes.txt`.
    /// - Throws: ``WeightsError`` if the resource is missing or does not hold 1000 lines.
    public static func all() throws -> [String] {
        try cached.get()
    }

    /// The name of class `index` (0..<1000), or nil when out of range or the resource is missing.
    public static func name(_ index: Int) -> String? {
        guard let names = try? all(), names.indices.contains(index) else { return nil }
        return names[index]
    }

    private static let cached: Result<[String], Error> = Result { () throws -> [String] in
        guard let dir = Bundle.module.url(forResource: "Resources", withExtension: nil) else {
            throw WeightsError.io(path: "BottleneckModels.bundle/Resources", reason: "resource folder missing from the installation")
        }
        let url = dir.appendingPathComponent("imagenet_classes.txt")
        guard let data = FileManager.default.contents(atPath: url.path) else { throw WeightsError.fileNotFound(path: url.path) }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let names = lines.last == "" ? Array(lines.dropLast()) : lines
        guard names.count == count else {
            throw WeightsError.malformed(path: url.path, reason: "expected \(count) class names, found \(names.count)")
        }
        return names
    }
}
