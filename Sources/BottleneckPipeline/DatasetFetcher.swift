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

    /// Checks every file against the checksums the catalog publishes for it (SHA-256 and/or MD5,
    /// both when both are given), in one read per file. A file with no published checksum cannot
    /// be verified: that is said in the log, and it is used as is (checksums are never invented).
    /// - Throws: ``PipelineError/io(path:reason:)`` for a missing or unreadable file,
    ///   ``PipelineError/invalidDataset(path:reason:)`` on a mismatch.
    public func verify() throws {
        for f in spec.files {
            let path = archives.appendingPathComponent(f.filename)
            guard FileManager.default.fileExists(atPath: path.path) else {
                throw PipelineError.io(path: path.path, reason: "missing; download \(f.url) and put it here")
            }
            guard f.sha256 != nil || f.md5 != nil else {
                log("\(f.filename): NOT VERIFIED: the catalog has no published checksum for it (\(f.note ?? "none known")); using it as is")
                continue
            }
            let got = try Self.digests(of: path, sha256: f.sha256 != nil, md5: f.md5 != nil)
            for (algorithm, want, have) in [("SHA-256", f.sha256, got.sha256), ("MD5", f.md5, got.md5)] {
                guard let want, let have else { continue }
                guard have == want.lowercased() else {
                    throw PipelineError.invalidDataset(path: path.path, reason: "\(algorithm) \(have) does not match the catalog's \(want); nothing was extracted; delete the file and download it again")
                }
            }
            log("\(f.filename): " + [f.sha256 != nil ? "SHA-256 ok" : nil, f.md5 != nil ? "MD5 ok" : nil].compactMap { $0 }.joined(separator: ", "))
        }
    }

    /// SHA-256 and/or MD5 (lowercase hex) of the file at `url`, read once in 4 MiB chunks.
    static func digests(of url: URL, sha256: Bool, md5: Bool) throws -> (sha256: String?, md5: String?) {
        guard let fh = FileHandle(forReadingAtPath: url.path) else { throw PipelineError.io(path: url.path, reason: "cannot open for reading") }
        defer { try? fh.close() }
        var s = SHA256(), m = MD5()
        while true {
            let chunk: Data
            do { chunk = try fh.read(upToCount: 4 << 20) ?? Data() } catch {
                throw PipelineError.io(path: url.path, reason: "read failed: \(error.localizedDescription)")
            }
            if chunk.isEmpty { break }
            if sha256 { s.update(chunk) }
            if md5 { m.update(chunk) }
        }
        return (sha256 ? s.finalize() : nil, md5 ? m.finalize() : nil)
    }

    /// Verifies the archives (``verify()``), then extracts them into `destination/.staging` and lays
    /// the images out under ``destination``. Archives are listed before extraction and refused if any
    /// member could land outside the staging folder; every path read from a list file inside them is
    /// checked to stay inside the extracted tree, and every move target inside ``destination``.
    /// Nothing outside ``destination`` is written, moved or deleted. The staging folder is removed
    /// on success and on failure.
    public func extractAndLayOut() throws {
        let staging = destination.appendingPathComponent(".staging")
        guard !Self.isInside(archives.path, staging.path) else {
            throw PipelineError.invalidArgument("the archives folder \(archives.path) lies inside the staging folder \(staging.path), which is emptied before extraction; keep the archives elsewhere")
        }
        try verify()
        do {
            try FileManager.default.createDirectory(at: destination, withIntermediateDirectories: true)
            try Self.removeEntry(staging)
            try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: false)
        } catch let e as PipelineError { throw e } catch {
            throw PipelineError.io(path: staging.path, reason: "cannot create the staging folder: \(error.localizedDescription)")
        }
        defer { try? Self.removeEntry(staging) }
        for f in spec.files { try Self.extract(archives.appendingPathComponent(f.filename), into: staging, maxUnpackedBytes: maxUnpackedBytes, log: log) }
        try Self.layOut(recipe: spec.recipe, staging: staging, destination: destination)
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

    /// Runs `tool` (found on PATH) with stdin closed; stderr's tail goes into the error.
    static func run(_ tool: String, _ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [tool] + args
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        p.standardError = err
        do { try p.run() } catch { throw PipelineError.io(path: args.first ?? tool, reason: "cannot run \(tool): \(error.localizedDescription)") }
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw PipelineError.io(path: args.first ?? tool, reason: "\(tool) \(args.joined(separator: " ")) failed with status \(p.terminationStatus): \(message.suffix(500))")
        }
    }

    /// Most bytes an archive may unpack to (sum of its members' sizes). The largest catalog dataset
    /// (CUB-200-2011) unpacks to about 1.2 GB; the limit bounds the disk a hostile archive can fill.
    public static let defaultMaxUnpackedBytes = 16 << 30
    /// The unpacked-size limit this fetcher applies (default ``defaultMaxUnpackedBytes``).
    public var maxUnpackedBytes = DatasetFetcher.defaultMaxUnpackedBytes

    /// Unpacks `.zip`, `.tgz`, `.tar.gz` and `.tar` archives (and copies anything else) into `dir`,
    /// then unpacks the archive Caltech-101 nests inside its zip. Each archive is listed with
    /// Bottleneck's own readers and refused before extraction if a member is absolute, has a `..`
    /// component, is a link that could point outside, a device or FIFO, or the members add up to more
    /// than `maxUnpackedBytes`; after extraction the tree is checked again (``auditTree(_:archive:)``).
    static func extract(_ file: URL, into dir: URL, maxUnpackedBytes: Int, nested: Bool = false, log: (String) -> Void) throws {
        let name = file.lastPathComponent.lowercased()
        log("extracting \(file.lastPathComponent)")
        if name.hasSuffix(".zip") {
            try ArchivePath.checkMembers(try ArchiveLister.zipMembers(file, maxUnpackedBytes: maxUnpackedBytes), archive: file.path)
            try run("unzip", ["-qq", "-o", file.path, "-d", dir.path])
        } else if name.hasSuffix(".tgz") || name.hasSuffix(".tar.gz") {
            try ArchivePath.checkMembers(try listGzippedTar(file, maxUnpackedBytes: maxUnpackedBytes), archive: file.path, offsetsDecompressed: true)
            try run("tar", ["-xzf", file.path, "-C", dir.path, "--no-same-owner", "--no-same-permissions"])
        } else if name.hasSuffix(".tar") {
            guard let fh = FileHandle(forReadingAtPath: file.path) else { throw PipelineError.io(path: file.path, reason: "cannot open for reading") }
            defer { try? fh.close() }
            let stream = ByteStream(path: file.path) { try fh.read(upToCount: $0) ?? Data() }
            try ArchivePath.checkMembers(try ArchiveLister.tarMembers(stream, maxUnpackedBytes: maxUnpackedBytes), archive: file.path)
            try run("tar", ["-xf", file.path, "-C", dir.path, "--no-same-owner", "--no-same-permissions"])
        } else {
            try FileManager.default.copyItem(at: file, to: dir.appendingPathComponent(file.lastPathComponent))
            return
        }
        try auditTree(dir, archive: file)
        guard !nested else { return }
        var inner: [URL] = []
        try walk(dir) { url, st in
            if (st.st_mode & S_IFMT) == S_IFREG, url.lastPathComponent.hasSuffix("101_ObjectCategories.tar.gz") { inner.append(url) }
        }
        for url in inner { try extract(url, into: dir, maxUnpackedBytes: maxUnpackedBytes, nested: true, log: log) }
    }

    /// The members of a `.tar.gz`, listed from `gzip -dc`'s output (the same decompression `tar -xz` uses).
    static func listGzippedTar(_ file: URL, maxUnpackedBytes: Int) throws -> [ArchiveMember] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["gzip", "-dc", file.path]
        p.standardInput = FileHandle.nullDevice
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        do { try p.run() } catch { throw PipelineError.io(path: file.path, reason: "cannot run gzip: \(error.localizedDescription)") }
        let reader = out.fileHandleForReading
        let stream = ByteStream(path: file.path + " (decompressed)") { try reader.read(upToCount: $0) ?? Data() }
        let members: [ArchiveMember]
        do {
            members = try ArchiveLister.tarMembers(stream, maxUnpackedBytes: maxUnpackedBytes)
            // GNU tar pads archives to 10 KiB records; more after the end marker is not an archive tar would read.
            let trailing = stream.offset
            var extra = 0
            while true {
                let d = try reader.read(upToCount: 1 << 20) ?? Data()
                if d.isEmpty { break }
                extra += d.count
                if extra > 1 << 20 {
                    throw PipelineError.invalidDataset(path: file.path, reason: "more than 1 MiB of data after the tar end-of-archive marker at byte \(trailing) (decompressed)")
                }
            }
        } catch {
            p.terminate()
            p.waitUntilExit()
            throw error
        }
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw PipelineError.invalidDataset(path: file.path, reason: "not a valid gzip file (gzip -dc: \(message.trimmingCharacters(in: .whitespacesAndNewlines).suffix(300)))")
        }
        return members
    }

    /// Calls `body` with every entry under `dir` (depth first, sorted), never following symlinks.
    static func walk(_ dir: URL, _ body: (URL, stat) throws -> Void) throws {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() } catch {
            throw PipelineError.io(path: dir.path, reason: "cannot list: \(error.localizedDescription)")
        }
        for n in names {
            let url = dir.appendingPathComponent(n)
            guard let st = lstatEntry(url) else { throw PipelineError.io(path: url.path, reason: "cannot stat: \(String(cString: strerror(errno)))") }
            try body(url, st)
            if (st.st_mode & S_IFMT) == S_IFDIR { try walk(url, body) }
        }
    }

    /// `lstat` of `url`, or nil when it does not exist (or cannot be examined).
    static func lstatEntry(_ url: URL) -> stat? {
        var st = stat()
        return lstat(url.path, &st) == 0 ? st : nil
    }

    /// Refuses a tree that holds anything able to reach outside it after extraction: a symlink whose
    /// target is absolute or has a `..` component, a device, FIFO or socket.
    /// - Throws: ``PipelineError/invalidDataset(path:reason:)`` naming the entry and the archive.
    static func auditTree(_ dir: URL, archive: URL) throws {
        try walk(dir) { url, st in
            let rel = String(url.path.dropFirst(dir.path.count + 1))
            switch st.st_mode & S_IFMT {
            case S_IFREG, S_IFDIR: return
            case S_IFLNK:
                let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: url.path)) ?? ""
                if case .success = ArchivePath.components(target), !target.isEmpty { return }
                throw PipelineError.invalidDataset(path: archive.path, reason: "extracted '\(rel)' is a symlink to '\(target)', which could point outside; refusing to lay it out")
            default:
                throw PipelineError.invalidDataset(path: archive.path, reason: "extracted '\(rel)' is not a regular file, folder or safe symlink; refusing to lay it out")
            }
        }
    }

    /// Removes `url` if present without following it (a symlink is unlinked, not its target).
    static func removeEntry(_ url: URL) throws {
        guard let st = lstatEntry(url) else { return }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            do { try FileManager.default.removeItem(at: url) } catch {
                throw PipelineError.io(path: url.path, reason: "cannot remove: \(error.localizedDescription)")
            }
        } else if unlink(url.path) != 0 {
            throw PipelineError.io(path: url.path, reason: "cannot remove: \(String(cString: strerror(errno)))")
        }
    }

    /// The first real directory under `root` (breadth-first, sorted, symlinks not followed) satisfying `match`.
    static func findDirectory(_ root: URL, _ match: (URL) -> Bool) -> URL? {
        var queue = [root]
        while !queue.isEmpty {
            let d = queue.removeFirst()
            if match(d) { return d }
            let kids = ((try? FileManager.default.contentsOfDirectory(atPath: d.path)) ?? []).sorted()
            for k in kids where !k.hasPrefix(".") {
                let u = d.appendingPathComponent(k)
                if let st = lstatEntry(u), (st.st_mode & S_IFMT) == S_IFDIR { queue.append(u) }
            }
        }
        return nil
    }

    /// `realpath(3)` of an existing path.
    static func realPath(_ url: URL) -> String? {
        guard let p = realpath(url.path, nil) else { return nil }
        defer { free(p) }
        return String(cString: p)
    }

    /// Whether `path` is `root` or lies below it (both already resolved).
    static func isInside(_ path: String, _ root: String) -> Bool {
        root == "/" || path == root || path.hasPrefix(root + "/")
    }

    /// The entry `relative` (a path read from the list file `list`, at `line`) under `root`, which
    /// lies inside the extracted tree `staging`: refused unless it is a relative path without `..`,
    /// resolves (after any symlink) inside `staging`, and exists as a regular file (`directory`
    /// false) or a real directory.
    /// - Throws: ``PipelineError/invalidDataset(path:reason:)`` naming the list file and line.
    static func listedEntry(_ relative: String, under root: URL, staging: URL, list: String, line: Int?,
                            directory: Bool = false) throws -> (url: URL, components: [String]) {
        let whereListed = line.map { "\(list) line \($0)" } ?? list
        func refuse(_ why: String) -> PipelineError { .invalidDataset(path: staging.path, reason: "\(whereListed): '\(relative)' \(why)") }
        let parts: [String]
        switch ArchivePath.components(relative) {
        case .failure(let r): throw refuse("\(r.reason); paths in an archive's lists must stay inside the archive")
        case .success(let p): parts = p
        }
        guard !parts.isEmpty else { throw refuse("names no file") }
        let url = parts.reduce(root) { $0.appendingPathComponent($1) }
        guard let st = lstatEntry(url) else { throw refuse("is missing from the archive") }
        let kind = st.st_mode & S_IFMT
        guard kind == (directory ? S_IFDIR : S_IFREG) else { throw refuse("is not a \(directory ? "folder" : "regular file") (symlinks are not laid out)") }
        guard let real = realPath(url), let realStaging = realPath(staging), isInside(real, realStaging) else {
            throw refuse("resolves outside the extracted archive")
        }
        return (url, parts)
    }

    /// Moves `src` to `destination/<components>`, creating the folders in between. Refused (nothing
    /// moved) if a component is empty, `.` or `..`, or if an existing folder on the way is a symlink or
    /// not a folder, so the target cannot resolve outside `destination`. An existing entry at the
    /// target, which is then inside `destination`, is replaced.
    static func place(_ src: URL, to components: [String], under destination: URL) throws {
        func refuse(_ why: String) -> PipelineError {
            .invalidOutput(path: destination.path, reason: "cannot place '\(components.joined(separator: "/"))': \(why); nothing was moved")
        }
        guard let last = components.last, components.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && !$0.contains("/") }) else {
            throw refuse("not a plain relative path")
        }
        var dir = destination
        for c in components.dropLast() {
            dir.appendPathComponent(c)
            if let st = lstatEntry(dir) {
                guard (st.st_mode & S_IFMT) == S_IFDIR else { throw refuse("\(dir.path) exists and is not a real folder (a symlink could lead outside the destination)") }
            } else if mkdir(dir.path, 0o755) != 0 {
                throw PipelineError.io(path: dir.path, reason: "cannot create folder: \(String(cString: strerror(errno)))")
            }
        }
        let dst = dir.appendingPathComponent(last)
        try removeEntry(dst)
        guard rename(src.path, dst.path) == 0 else {
            throw PipelineError.io(path: dst.path, reason: "cannot move \(src.path) here: \(String(cString: strerror(errno)))")
        }
    }

    /// Longest list file read (`images.txt` of CUB is 400 KB); bounds memory for a hostile one.
    static let maxListFileBytes = 64 << 20

    /// Non-comment lines of a list file, split on spaces, with their 1-based line numbers.
    static func lines(_ url: URL) throws -> [(line: Int, fields: [String])] {
        guard let st = lstatEntry(url), (st.st_mode & S_IFMT) == S_IFREG else {
            throw PipelineError.io(path: url.path, reason: "missing or not a regular file: is the archive complete?")
        }
        guard Int(st.st_size) <= maxListFileBytes else {
            throw PipelineError.invalidDataset(path: url.path, reason: "list file of \(st.st_size) bytes (limit \(maxListFileBytes))")
        }
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw PipelineError.io(path: url.path, reason: "unreadable or not UTF-8 text: is the archive complete?")
        }
        return text.split(separator: "\n", omittingEmptySubsequences: false).enumerated().compactMap { i, l in
            let fields = l.split(whereSeparator: { $0 == " " || $0 == "\r" || $0 == "\t" }).map(String.init)
            return fields.isEmpty || fields[0].hasPrefix("#") ? nil : (i + 1, fields)
        }
    }

    static let oxford17Classes = ["Daffodil", "Snowdrop", "LilyValley", "Bluebell", "Crocus", "Iris", "Tigerlily", "Tulip", "Fritillary",
                                  "Sunflower", "Daisy", "ColtsFoot", "Dandelion", "Cowslip", "Buttercup", "Windflower", "Pansy"]

    /// Applies a layout recipe to extracted archives in `staging`, moving files into `destination`.
    /// Every source is resolved by ``listedEntry(_:under:staging:list:line:directory:)`` and every
    /// target placed by ``place(_:to:under:)``, so a hostile list file can neither pull a file from
    /// outside the archive nor push one outside `destination`.
    static func layOut(recipe: String, staging: URL, destination: URL) throws {
        func exists(_ u: URL) -> Bool { lstatEntry(u) != nil }
        func fail(_ why: String) -> PipelineError { .invalidDataset(path: staging.path, reason: why) }
        switch recipe {
        case "tree":
            guard let root = findDirectory(staging, { exists($0.appendingPathComponent("train")) }) else { throw fail("no folder with a train/ subfolder") }
            for s in ["train", "val", "test"] where exists(root.appendingPathComponent(s)) {
                let src = try listedEntry(s, under: root, staging: staging, list: "the archive's top folder", line: nil, directory: true)
                try place(src.url, to: src.components, under: destination)
            }
        case "class-folders":
            guard let root = findDirectory(staging, { $0.lastPathComponent == "101_ObjectCategories" }) else { throw fail("no 101_ObjectCategories folder") }
            let names: [String]
            do { names = try FileManager.default.contentsOfDirectory(atPath: root.path).sorted() } catch {
                throw PipelineError.io(path: root.path, reason: "cannot list: \(error.localizedDescription)")
            }
            for c in names where !c.hasPrefix(".") && c != "BACKGROUND_Google" {
                let src = try listedEntry(c, under: root, staging: staging, list: "101_ObjectCategories", line: nil, directory: true)
                try place(src.url, to: src.components, under: destination)
            }
        case "oxford17":
            guard let jpg = findDirectory(staging, { exists($0.appendingPathComponent("image_0001.jpg")) }) else { throw fail("no image_0001.jpg") }
            for n in 1...1360 {
                let name = String(format: "image_%04d.jpg", n)
                let k = (n - 1) / 80
                let cls = String(format: "%02d_%@", k + 1, oxford17Classes[k])
                let src = try listedEntry(name, under: jpg, staging: staging, list: "17flowers.tgz", line: nil)
                try place(src.url, to: [cls, name], under: destination)
            }
        case "pets":
            guard let ann = findDirectory(staging, { exists($0.appendingPathComponent("trainval.txt")) }),
                  let img = findDirectory(staging, { $0.lastPathComponent == "images" }) else { throw fail("need annotations/trainval.txt and images/") }
            for (list, split) in [("trainval.txt", "train"), ("test.txt", "test")] {
                for (line, parts) in try lines(ann.appendingPathComponent(list)) {
                    let name = parts[0]
                    guard let us = name.lastIndex(of: "_") else { continue }
                    let breed = String(name[..<us])
                    let src = try listedEntry(name + ".jpg", under: img, staging: staging, list: list, line: line)
                    guard src.components.count == 1 else { throw fail("\(list) line \(line): '\(name)' is not a plain image name") }
                    try place(src.url, to: [split, breed, name + ".jpg"], under: destination)
                }
            }
        case "cub":
            guard let root = findDirectory(staging, { exists($0.appendingPathComponent("train_test_split.txt")) }) else { throw fail("no train_test_split.txt") }
            var isTrain: [String: Bool] = [:]
            for (_, p) in try lines(root.appendingPathComponent("train_test_split.txt")) where p.count >= 2 { isTrain[p[0]] = p[1] == "1" }
            for (line, p) in try lines(root.appendingPathComponent("images.txt")) where p.count >= 2 {
                guard let train = isTrain[p[0]] else { throw fail("images.txt line \(line): image id \(p[0]) has no split") }
                let src = try listedEntry(p[1], under: root.appendingPathComponent("images"), staging: staging, list: "images.txt", line: line)
                try place(src.url, to: [train ? "train" : "test"] + src.components, under: destination)
            }
        default:
            throw PipelineError.invalidArgument("the \(recipe) layout needs its MATLAB split files read by hand; follow the manual steps")
        }
    }
}
