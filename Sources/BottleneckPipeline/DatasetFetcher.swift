import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import BottleneckCore

/// Downloads, verifies and lays out a catalog dataset as `DIR/train|val|test/<class>/` (or
/// `DIR/<class>/` where there is no official split). Archives are kept in `archives`
/// (default `DIR/.downloads`), so a user without network access can place them there by hand.
public struct DatasetFetcher {
    /// The dataset.
    public var spec: DatasetSpec
    /// Where the laid-out images go.
    public var destination: URL
    /// Where archives are looked for and downloaded to.
    public var archives: URL
    /// Progress messages.
    public var log: (String) -> Void

    /// Creates a fetcher; `archives` defaults to `destination/.downloads`.
    public init(spec: DatasetSpec, destination: URL, archives: URL? = nil, log: @escaping (String) -> Void = { _ in }) {
        self.spec = spec
        self.destination = destination.standardizedFileURL
        self.archives = (archives ?? destination.appendingPathComponent(".downloads")).standardizedFileURL
        self.log = log
    }

    /// Files not yet present in ``archives``.
    public var missingFiles: [DatasetFile] {
        spec.files.filter { !FileManager.default.fileExists(atPath: archives.appendingPathComponent($0.filename).path) }
    }

    /// Downloads every missing file. - Throws: ``PipelineError/io(path:reason:)`` when a download fails (no network, HTTP error).
    public func download(timeout: TimeInterval = 30) throws {
        try FileManager.default.createDirectory(at: archives, withIntermediateDirectories: true)
        for f in missingFiles {
            guard let url = URL(string: f.url) else { throw PipelineError.invalidArgument("bad URL in manifest: \(f.url)") }
            log("downloading \(f.url)")
            final class Box: @unchecked Sendable { var tmp: URL?; var error: Error?; var status = 0 }
            let box = Box()
            let done = DispatchSemaphore(value: 0)
            let config = URLSessionConfiguration.default
            config.timeoutIntervalForRequest = timeout
            let task = URLSession(configuration: config).downloadTask(with: url) { tmp, response, error in
                box.error = error
                box.status = (response as? HTTPURLResponse)?.statusCode ?? 0
                if let tmp = tmp {
                    let keep = FileManager.default.temporaryDirectory.appendingPathComponent("bn-dl-\(UUID().uuidString)")
                    try? FileManager.default.moveItem(at: tmp, to: keep)
                    box.tmp = keep
                }
                done.signal()
            }
            task.resume()
            done.wait()
            guard box.error == nil, box.status == 200, let tmp = box.tmp else {
                if let t = box.tmp { try? FileManager.default.removeItem(at: t) }
                throw PipelineError.io(path: f.url, reason: box.error.map { "\($0.localizedDescription)" } ?? "HTTP status \(box.status)")
            }
            let dest = archives.appendingPathComponent(f.filename)
            try? FileManager.default.removeItem(at: dest)
            try FileManager.default.moveItem(at: tmp, to: dest)
        }
    }

    /// Checks every file's SHA-256 where the manifest has one.
    /// - Throws: ``PipelineError/malformedStore(path:reason:)`` on a mismatch or a missing file.
    public func verify() throws {
        for f in spec.files {
            let path = archives.appendingPathComponent(f.filename)
            guard FileManager.default.fileExists(atPath: path.path) else {
                throw PipelineError.io(path: path.path, reason: "missing; download \(f.url) and put it here")
            }
            guard let want = f.sha256 else { log("\(f.filename): no published SHA-256 to check against (\(f.note ?? ""))"); continue }
            let got = try SHA256.hex(fileAt: path)
            guard got == want else {
                throw PipelineError.malformedStore(path: path.path, reason: "SHA-256 \(got) does not match the manifest's \(want); delete it and download again")
            }
            log("\(f.filename): SHA-256 ok")
        }
    }

    /// Extracts the archives into a staging folder and lays the images out under ``destination``.
    public func extractAndLayOut() throws {
        let staging = destination.appendingPathComponent(".staging")
        try? FileManager.default.removeItem(at: staging)
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        for f in spec.files { try Self.extract(archives.appendingPathComponent(f.filename), into: staging, log: log) }
        try Self.layOut(recipe: spec.recipe, staging: staging, destination: destination)
        try? FileManager.default.removeItem(at: staging)
    }

    /// What to download and where to put it, for machines without network access.
    public var instructions: String {
        var s = "Download these files of \(spec.title) (\(spec.homepage)) and put them in \(archives.path)/:\n"
        for f in spec.files {
            s += "  \(f.url)\n      -> \(archives.appendingPathComponent(f.filename).path)"
            if let h = f.sha256 { s += "\n      sha256 \(h)" }
            if let m = f.md5 { s += "\n      md5 \(m)" }
            s += "\n"
        }
        s += "then run again:  bottleneck datasets fetch \(spec.name) --to \(destination.path)"
        s += "  (or --from DIR if the files are elsewhere)\n"
        s += "Splits: \(spec.splits)\nBy hand instead:\n" + spec.manual.map { "  - \($0)" }.joined(separator: "\n")
        return s
    }

    static func run(_ tool: String, _ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + args
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw PipelineError.io(path: args.first ?? tool, reason: "\(tool) \(args.joined(separator: " ")) failed with status \(p.terminationStatus)")
        }
    }

    /// Unpacks `.zip`, `.tgz`, `.tar.gz` and `.tar` archives (and copies anything else) into `dir`,
    /// then unpacks any archive found one level inside (Caltech-101 nests a tarball in its zip).
    static func extract(_ file: URL, into dir: URL, log: (String) -> Void) throws {
        let name = file.lastPathComponent.lowercased()
        log("extracting \(file.lastPathComponent)")
        if name.hasSuffix(".zip") { try run("unzip", ["-q", "-o", file.path, "-d", dir.path]) }
        else if name.hasSuffix(".tgz") || name.hasSuffix(".tar.gz") || name.hasSuffix(".tar") { try run("tar", ["-xf", file.path, "-C", dir.path]) }
        else { try FileManager.default.copyItem(at: file, to: dir.appendingPathComponent(file.lastPathComponent)); return }
        if let nested = FileManager.default.enumerator(atPath: dir.path) {
            for case let rel as String in nested where rel.hasSuffix("101_ObjectCategories.tar.gz") {
                try run("tar", ["-xzf", dir.appendingPathComponent(rel).path, "-C", dir.path])
            }
        }
    }

    /// The first directory under `root` (breadth-first) satisfying `match`.
    static func findDirectory(_ root: URL, _ match: (URL) -> Bool) -> URL? {
        var queue = [root]
        while !queue.isEmpty {
            let d = queue.removeFirst()
            if match(d) { return d }
            let kids = ((try? FileManager.default.contentsOfDirectory(atPath: d.path)) ?? []).sorted()
            for k in kids where !k.hasPrefix(".") {
                var isDir: ObjCBool = false
                let u = d.appendingPathComponent(k)
                if FileManager.default.fileExists(atPath: u.path, isDirectory: &isDir), isDir.boolValue { queue.append(u) }
            }
        }
        return nil
    }

    /// Moves `src` to `dst`, creating parent folders.
    static func place(_ src: URL, _ dst: URL) throws {
        try FileManager.default.createDirectory(at: dst.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: dst)
        try FileManager.default.moveItem(at: src, to: dst)
    }

    static func lines(_ url: URL) throws -> [[String]] {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw PipelineError.io(path: url.path, reason: "missing or unreadable: is the archive complete?")
        }
        return text.split(whereSeparator: \.isNewline).map { $0.split(separator: " ").map(String.init) }.filter { !$0.isEmpty && !$0[0].hasPrefix("#") }
    }

    static let oxford17Classes = ["Daffodil", "Snowdrop", "LilyValley", "Bluebell", "Crocus", "Iris", "Tigerlily", "Tulip", "Fritillary",
                                  "Sunflower", "Daisy", "ColtsFoot", "Dandelion", "Cowslip", "Buttercup", "Windflower", "Pansy"]

    /// Applies a layout recipe to extracted archives in `staging`.
    static func layOut(recipe: String, staging: URL, destination: URL) throws {
        let fm = FileManager.default
        func exists(_ u: URL) -> Bool { fm.fileExists(atPath: u.path) }
        func fail(_ why: String) -> PipelineError { .invalidDataset(path: staging.path, reason: why) }
        switch recipe {
        case "tree":
            guard let root = findDirectory(staging, { exists($0.appendingPathComponent("train")) }) else { throw fail("no folder with a train/ subfolder") }
            for s in ["train", "val", "test"] where exists(root.appendingPathComponent(s)) {
                try place(root.appendingPathComponent(s), destination.appendingPathComponent(s))
            }
        case "class-folders":
            guard let root = findDirectory(staging, { $0.lastPathComponent == "101_ObjectCategories" }) else { throw fail("no 101_ObjectCategories folder") }
            for c in try fm.contentsOfDirectory(atPath: root.path).sorted() where !c.hasPrefix(".") && c != "BACKGROUND_Google" {
                try place(root.appendingPathComponent(c), destination.appendingPathComponent(c))
            }
        case "oxford17":
            guard let jpg = findDirectory(staging, { exists($0.appendingPathComponent("image_0001.jpg")) }) else { throw fail("no image_0001.jpg") }
            for n in 1...1360 {
                let name = String(format: "image_%04d.jpg", n)
                let k = (n - 1) / 80
                let cls = String(format: "%02d_%@", k + 1, oxford17Classes[k])
                let src = jpg.appendingPathComponent(name)
                guard exists(src) else { throw fail("\(name) missing from 17flowers.tgz") }
                try place(src, destination.appendingPathComponent(cls).appendingPathComponent(name))
            }
        case "pets":
            guard let ann = findDirectory(staging, { exists($0.appendingPathComponent("trainval.txt")) }),
                  let img = findDirectory(staging, { $0.lastPathComponent == "images" }) else { throw fail("need annotations/trainval.txt and images/") }
            for (list, split) in [("trainval.txt", "train"), ("test.txt", "test")] {
                for parts in try lines(ann.appendingPathComponent(list)) {
                    let name = parts[0]
                    guard let us = name.lastIndex(of: "_") else { continue }
                    let breed = String(name[..<us])
                    let src = img.appendingPathComponent(name + ".jpg")
                    guard exists(src) else { throw fail("images/\(name).jpg listed in \(list) is missing") }
                    try place(src, destination.appendingPathComponent(split).appendingPathComponent(breed).appendingPathComponent(name + ".jpg"))
                }
            }
        case "cub":
            guard let root = findDirectory(staging, { exists($0.appendingPathComponent("train_test_split.txt")) }) else { throw fail("no train_test_split.txt") }
            var isTrain: [String: Bool] = [:]
            for p in try lines(root.appendingPathComponent("train_test_split.txt")) where p.count >= 2 { isTrain[p[0]] = p[1] == "1" }
            for p in try lines(root.appendingPathComponent("images.txt")) where p.count >= 2 {
                guard let train = isTrain[p[0]] else { throw fail("image id \(p[0]) has no split") }
                let src = root.appendingPathComponent("images").appendingPathComponent(p[1])
                guard exists(src) else { throw fail("images/\(p[1]) is missing") }
                try place(src, destination.appendingPathComponent(train ? "train" : "test").appendingPathComponent(p[1]))
            }
        default:
            throw PipelineError.invalidArgument("the \(recipe) layout needs its MATLAB split files read by hand; follow the manual steps")
        }
    }
}
