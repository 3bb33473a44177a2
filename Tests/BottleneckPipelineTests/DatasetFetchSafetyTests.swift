import Foundation
import XCTest
import BottleneckCore
import BottleneckTestSupport
@testable import BottleneckPipeline

/// Hostile dataset archives: nothing outside `--to` is read, moved, written or deleted, checksums
/// are checked before extraction, and every refusal names the archive and the member or list line.
final class DatasetFetchSafetyTests: XCTestCase {
    /// A sandbox: `base/` holds everything, the destination is nested so that `..` paths from the
    /// archive's lists still land inside `base` (and the test never touches anything outside it).
    struct Sandbox {
        let base: URL
        var destination: URL { base.appendingPathComponent("l1/l2/out") }
        var downloads: URL { base.appendingPathComponent("downloads") }
        /// Reached from `out/.staging/CUB_200_2011/images/` by `../../../../victim/secret.txt`.
        var innerVictim: URL { base.appendingPathComponent("l1/l2/victim/secret.txt") }
        /// Reached from `out/train/` by the same relative path: the file the old code deleted.
        var outerVictim: URL { base.appendingPathComponent("victim/secret.txt") }

        init(_ name: String) throws {
            base = try TestData.tempDir(name)
            for (url, text) in [(innerVictim, "inner secret"), (outerVictim, "outer secret")] {
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(text.utf8).write(to: url)
            }
            try FileManager.default.createDirectory(at: downloads, withIntermediateDirectories: true)
        }

        /// Every path under `base` outside the destination, with file contents (symlinks by target).
        func outsideSnapshot() throws -> [String: String] {
            var out: [String: String] = [:]
            func visit(_ dir: URL) throws {
                for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) {
                    let url = dir.appendingPathComponent(name)
                    if url.path == destination.path { continue }
                    let rel = String(url.path.dropFirst(base.path.count))
                    var st = stat()
                    guard lstat(url.path, &st) == 0 else { continue }
                    switch st.st_mode & S_IFMT {
                    case S_IFREG: out[rel] = String(decoding: (try? Data(contentsOf: url)) ?? Data(), as: UTF8.self)
                    case S_IFLNK: out[rel] = "-> " + ((try? FileManager.default.destinationOfSymbolicLink(atPath: url.path)) ?? "?")
                    case S_IFDIR: out[rel] = "dir"; try visit(url)
                    default: out[rel] = "special"
                    }
                }
            }
            try visit(base)
            return out
        }

        func remove() { try? FileManager.default.removeItem(at: base) }
    }

    func spec(_ filename: String, recipe: String, sha256: String? = nil, md5: String? = nil) -> DatasetSpec {
        DatasetSpec(name: "t", title: "t", homepage: "https://example.invalid", classes: 2, images: 3,
                    files: [DatasetFile(url: "https://example.invalid/\(filename)", filename: filename, sha256: sha256, md5: md5, note: "test archive")],
                    recipe: recipe, splits: "", manual: [])
    }

    /// A CUB-200-2011-shaped archive: three images, `images.txt` with `extraImagesLines` appended.
    static func cubArchive(extraImagesLines: String = "", extraSplitLines: String = "") -> [UInt8] {
        let files = ["001.Black_footed_Albatross/a.jpg", "001.Black_footed_Albatross/b.jpg", "002.Laysan_Albatross/c.jpg"]
        var members: [HostileArchives.TarMember] = [.directory("CUB_200_2011/")]
        for f in files { members.append(.file("CUB_200_2011/images/" + f, "image \(f)")) }
        members.append(.file("CUB_200_2011/images.txt", "1 \(files[0])\n3 \(files[1])\n4 \(files[2])\n" + extraImagesLines))
        members.append(.file("CUB_200_2011/train_test_split.txt", "1 1\n2 1\n3 0\n4 1\n" + extraSplitLines))
        return HostileArchives.gzip(HostileArchives.tar(members))
    }

    /// Whether anything (even a dangling symlink) exists at `url`.
    func exists(_ url: URL) -> Bool { var st = stat(); return lstat(url.path, &st) == 0 }

    func fetcher(_ box: Sandbox, _ spec: DatasetSpec, log: @escaping (String) -> Void = { _ in }) -> DatasetFetcher {
        DatasetFetcher(spec: spec, destination: box.destination, archives: box.downloads, log: log)
    }

    /// The reported attack: a list line `2 ../../../../victim/secret.txt` in `images.txt`. Before the
    /// fix the fetch moved the inner victim into the outer victim's place (deleting it) and succeeded.
    func testMemberListPathOutsideTheArchiveIsRefusedAndNothingOutsideIsTouched() throws {
        let box = try Sandbox("cub-traversal")
        defer { box.remove() }
        try Data(Self.cubArchive(extraImagesLines: "2 ../../../../victim/secret.txt\n")).write(to: box.downloads.appendingPathComponent("CUB_200_2011.tgz"))
        let before = try box.outsideSnapshot()
        var log: [String] = []
        XCTAssertThrowsError(try fetcher(box, spec("CUB_200_2011.tgz", recipe: "cub"), log: { log.append($0) }).extractAndLayOut()) {
            let text = "\($0)"
            XCTAssertTrue(text.contains("images.txt line 4"), text)
            XCTAssertTrue(text.contains("'../../../../victim/secret.txt'") && text.contains("'..'"), text)
        }
        XCTAssertEqual(try String(contentsOf: box.innerVictim, encoding: .utf8), "inner secret")
        XCTAssertEqual(try String(contentsOf: box.outerVictim, encoding: .utf8), "outer secret")
        XCTAssertEqual(try box.outsideSnapshot(), before)
        XCTAssertFalse(exists(box.destination.appendingPathComponent(".staging")), "staging folder left behind")
        XCTAssertTrue(log.contains { $0.contains("NOT VERIFIED") && $0.contains("no published checksum") }, "\(log)")
    }

    /// Absolute list paths are refused the same way (an absolute path would ignore the archive root).
    func testAbsoluteMemberListPathIsRefused() throws {
        let box = try Sandbox("cub-absolute")
        defer { box.remove() }
        try Data(Self.cubArchive(extraImagesLines: "2 \(box.innerVictim.path)\n")).write(to: box.downloads.appendingPathComponent("CUB_200_2011.tgz"))
        let before = try box.outsideSnapshot()
        XCTAssertThrowsError(try fetcher(box, spec("CUB_200_2011.tgz", recipe: "cub")).extractAndLayOut()) {
            XCTAssertTrue("\($0)".contains("is an absolute path"), "\($0)")
        }
        XCTAssertEqual(try box.outsideSnapshot(), before)
    }

    /// A well-formed CUB archive still lays out (the checks refuse nothing legitimate).
    func testValidCUBArchiveLaysOut() throws {
        let box = try Sandbox("cub-valid")
        defer { box.remove() }
        let bytes = Self.cubArchive()
        try Data(bytes).write(to: box.downloads.appendingPathComponent("CUB_200_2011.tgz"))
        let md5 = MD5.hex(Data(bytes)), sha = SHA256.hex(Data(bytes))
        var log: [String] = []
        try fetcher(box, spec("CUB_200_2011.tgz", recipe: "cub", sha256: sha, md5: md5), log: { log.append($0) }).extractAndLayOut()
        let scan = try DatasetScanner.scan(box.destination)
        XCTAssertEqual(scan.entries.map(\.path), ["test/001.Black_footed_Albatross/b.jpg", "train/001.Black_footed_Albatross/a.jpg",
                                                  "train/002.Laysan_Albatross/c.jpg"])
        XCTAssertTrue(log.contains("CUB_200_2011.tgz: SHA-256 ok, MD5 ok"), "\(log)")
        XCTAssertFalse(exists(box.destination.appendingPathComponent(".staging")))
    }

    /// The catalog's MD5 (CUB publishes only an MD5) is checked before anything is extracted.
    func testChecksumMismatchIsRefusedBeforeExtraction() throws {
        for (sha, md5) in [(nil, String(repeating: "0", count: 32)), (String(repeating: "0", count: 64), nil)] as [(String?, String?)] {
            let box = try Sandbox("cub-md5")
            defer { box.remove() }
            let archive = box.downloads.appendingPathComponent("CUB_200_2011.tgz")
            try Data(Self.cubArchive()).write(to: archive)
            let f = fetcher(box, spec("CUB_200_2011.tgz", recipe: "cub", sha256: sha, md5: md5))
            XCTAssertThrowsError(try f.verify()) {
                XCTAssertEqual($0 as? PipelineError, .invalidDataset(path: archive.path, reason:
                    "\(sha == nil ? "MD5" : "SHA-256") \(sha == nil ? MD5.hex(try! Data(contentsOf: archive)) : SHA256.hex(try! Data(contentsOf: archive))) does not match the catalog's \(sha ?? md5!); nothing was extracted; delete the file and download it again"))
            }
            XCTAssertThrowsError(try f.extractAndLayOut())
            XCTAssertFalse(exists(box.destination.appendingPathComponent(".staging")))
            XCTAssertFalse(exists(box.destination.appendingPathComponent("train")), "extracted despite a checksum mismatch")
        }
    }

    func testMD5MatchesRFC1321() {
        XCTAssertEqual(MD5.hex(Data()), "d41d8cd98f00b204e9800998ecf8427e")
        XCTAssertEqual(MD5.hex(Data("abc".utf8)), "900150983cd24fb0d6963f7d28e17f72")
        XCTAssertEqual(MD5.hex(Data("12345678901234567890123456789012345678901234567890123456789012345678901234567890".utf8)),
                       "57edf4a22be3c955ac49da2e2107b67a")
        // Chunked updates across the 64-byte block boundary agree with one update.
        let data = Data((0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        var m = MD5()
        for start in stride(from: 0, to: data.count, by: 37) { m.update(data[start..<min(start + 37, data.count)]) }
        XCTAssertEqual(m.finalize(), MD5.hex(data))
    }

    /// Tar members that could write outside the staging folder are refused before `tar` runs, with
    /// the member named; nothing outside the destination changes.
    func testHostileTarMembersAreRefusedBeforeExtraction() throws {
        let good: [HostileArchives.TarMember] = [.file("data/train/a/1.jpg", "x"), .file("data/train/b/2.jpg", "y")]
        let cases: [(String, [HostileArchives.TarMember], String)] = [
            ("dotdot", [.file("../../../../victim/secret.txt", "overwritten")], "has a '..' component"),
            ("inner dotdot", [.file("data/../../x.txt", "x")], "has a '..' component"),
            ("absolute", [.file("/tmp/bottleneck-absolute-member.txt", "x")], "is an absolute path"),
            ("escaping symlink", [.symlink("data/link", to: "../../../../victim"), .file("data/link/secret.txt", "overwritten")],
             "is a symlink to '../../../../victim'"),
            ("absolute symlink", [.symlink("data/etc", to: "/etc")], "is a symlink to '/etc'"),
            ("escaping hard link", [.hardlink("data/hard", to: "../../../../victim/secret.txt")], "is a hard link to '../../../../victim/secret.txt'"),
            ("device", [.characterDevice("data/null")], "is a character device"),
            ("fifo", [.fifo("data/pipe")], "is a FIFO"),
            ("long dotdot name", [.file(String(repeating: "d/", count: 60) + String(repeating: "../", count: 70) + "x.txt", "x")], "has a '..' component"),
        ]
        for (label, bad, expected) in cases {
            for gz in [true, false] {
                let box = try Sandbox("tar-hostile")
                defer { box.remove() }
                let tar = HostileArchives.tar(good + bad)
                let name = gz ? "t.tgz" : "t.tar"
                try Data(gz ? HostileArchives.gzip(tar) : tar).write(to: box.downloads.appendingPathComponent(name))
                let before = try box.outsideSnapshot()
                XCTAssertThrowsError(try fetcher(box, spec(name, recipe: "tree")).extractAndLayOut(), label) {
                    let text = "\($0)"
                    XCTAssertTrue(text.contains("refusing to extract") && text.contains(expected) && text.contains(name), "\(label): \(text)")
                }
                XCTAssertEqual(try box.outsideSnapshot(), before, label)
                XCTAssertFalse(exists(box.destination.appendingPathComponent("train")), label)
                XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/bottleneck-absolute-member.txt"), label)
            }
        }
    }

    /// Symlinks that only descend (relative, no `..`) cannot leave the tree and are accepted; the
    /// images they would stand for are not laid out as links.
    func testInnerSymlinkIsAcceptedButNotLaidOutAsAFile() throws {
        let box = try Sandbox("tar-inner-link")
        defer { box.remove() }
        let members: [HostileArchives.TarMember] = [.file("data/train/a/1.jpg", "x"), .directory("data/train/b/"),
                                                   .symlink("data/train/b/2.jpg", to: "other.jpg"), .file("data/train/b/other.jpg", "y")]
        try Data(HostileArchives.tar(members)).write(to: box.downloads.appendingPathComponent("t.tar"))
        try fetcher(box, spec("t.tar", recipe: "tree")).extractAndLayOut()
        XCTAssertEqual(try String(contentsOf: box.destination.appendingPathComponent("train/b/other.jpg"), encoding: .utf8), "y")
    }

    /// Zip members: `..`, absolute names and symlinks are refused before `unzip` runs; a clean zip extracts.
    func testHostileZipMembersAreRefusedAndACleanZipExtracts() throws {
        let good: [HostileArchives.ZipMember] = [.stored("data/train/a/1.jpg", Array("x".utf8)), .stored("data/train/b/2.jpg", Array("y".utf8))]
        let cases: [(String, [HostileArchives.ZipMember], String)] = [
            ("dotdot", [.stored("../../../../victim/secret.txt", Array("overwritten".utf8))], "has a '..' component"),
            ("absolute", [.stored("/tmp/bottleneck-absolute-zip-member.txt", Array("x".utf8))], "is an absolute path"),
            ("backslash", [.stored("..\\..\\evil.txt", Array("x".utf8))], "contains a backslash"),
            ("symlink", [.symlink("data/link", to: "../../../../victim")], "is a symbolic link"),
        ]
        for (label, bad, expected) in cases {
            let box = try Sandbox("zip-hostile")
            defer { box.remove() }
            try Data(HostileArchives.zip(good + bad)).write(to: box.downloads.appendingPathComponent("t.zip"))
            let before = try box.outsideSnapshot()
            XCTAssertThrowsError(try fetcher(box, spec("t.zip", recipe: "tree")).extractAndLayOut(), label) {
                XCTAssertTrue("\($0)".contains(expected) && "\($0)".contains("t.zip"), "\(label): \($0)")
            }
            XCTAssertEqual(try box.outsideSnapshot(), before, label)
            XCTAssertFalse(FileManager.default.fileExists(atPath: "/tmp/bottleneck-absolute-zip-member.txt"), label)
        }
        let box = try Sandbox("zip-clean")
        defer { box.remove() }
        try Data(HostileArchives.zip(good)).write(to: box.downloads.appendingPathComponent("t.zip"))
        try fetcher(box, spec("t.zip", recipe: "tree")).extractAndLayOut()
        XCTAssertEqual(try DatasetScanner.scan(box.destination).entries.map(\.path), ["train/a/1.jpg", "train/b/2.jpg"])
    }

    /// Archives made by the system tools (GNU long names, pax headers, directories, inner links) are
    /// listed exactly as `tar` sees them.
    func testListerAgreesWithGNUTarOnRealArchives() throws {
        let box = try Sandbox("tar-real")
        defer { box.remove() }
        let src = box.base.appendingPathComponent("src")
        let long = String(repeating: "long_folder_name_", count: 8)
        try FileManager.default.createDirectory(at: src.appendingPathComponent("top/\(long)"), withIntermediateDirectories: true)
        try Data("a".utf8).write(to: src.appendingPathComponent("top/\(long)/image with spaces.jpg"))
        try Data("b".utf8).write(to: src.appendingPathComponent("top/plain.jpg"))
        try FileManager.default.createSymbolicLink(atPath: src.appendingPathComponent("top/alias.jpg").path, withDestinationPath: "plain.jpg")
        for format in ["gnu", "pax", "ustar", "oldgnu"] {
            let archive = box.base.appendingPathComponent("t-\(format).tgz")
            do {
                try DatasetFetcher.run("tar", ["-czf", archive.path, "--format=\(format)", "-C", src.path, "top"])
            } catch { if format == "ustar" || format == "oldgnu" { continue }; throw error }  // ustar cannot store the long name
            let members = try DatasetFetcher.listGzippedTar(archive, maxUnpackedBytes: 1 << 20)
            let listed = members.map(\.name).map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }.sorted()
            XCTAssertEqual(listed, ["top", "top/\(long)", "top/\(long)/image with spaces.jpg", "top/alias.jpg", "top/plain.jpg"].sorted(), format)
            XCTAssertEqual(members.first { $0.name == "top/alias.jpg" }?.kind, .symlink(target: "plain.jpg"), format)
            XCTAssertNoThrow(try ArchivePath.checkMembers(members, archive: archive.path), format)
        }
        // Info-ZIP's zip (extra fields UT/ux on every entry; the symlink stored as the file it points to).
        let zip = box.base.appendingPathComponent("t.zip")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["zip", "-qr", zip.path, "top"]
        p.currentDirectoryURL = src
        do { try p.run() } catch { throw XCTSkip("zip not installed") }
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw XCTSkip("zip failed (status \(p.terminationStatus))") }
        let zipped = try ArchiveLister.zipMembers(zip, maxUnpackedBytes: 1 << 20)
        XCTAssertEqual(zipped.map(\.name).map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }.sorted(),
                       ["top", "top/\(long)", "top/\(long)/image with spaces.jpg", "top/alias.jpg", "top/plain.jpg"].sorted())
        XCTAssertTrue(zipped.allSatisfy { $0.kind == .file || $0.kind == .directory }, "\(zipped)")
    }

    /// A member declaring more bytes than the unpacked-size limit is refused at its header, before
    /// its data would be read or written.
    func testUnpackedSizeLimitStopsAtTheHeader() throws {
        let box = try Sandbox("tar-huge")
        defer { box.remove() }
        var header = HostileArchives.tarHeader(name: "data/train/a/huge.jpg", type: 0x30, size: 0, linkTarget: "")
        // GNU base-256 size field: 2^40 bytes, with no data behind it.
        header.replaceSubrange(124..<136, with: [0x80, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0])
        for i in 148..<156 { header[i] = 0x20 }
        let sum = header.reduce(0) { $0 + Int($1) }
        header.replaceSubrange(148..<156, with: Array(String(format: "%06o", sum).utf8) + [0, 0x20])
        try Data(header + [UInt8](repeating: 0, count: 1024)).write(to: box.downloads.appendingPathComponent("t.tar"))
        var f = fetcher(box, spec("t.tar", recipe: "tree"))
        f.maxUnpackedBytes = 1 << 30
        XCTAssertThrowsError(try f.extractAndLayOut()) {
            XCTAssertTrue("\($0)".contains("past the unpacked-size limit of 1073741824 bytes"), "\($0)")
        }
    }

    /// Seeded truncations and byte flips of valid tar and zip archives: the listers return or throw,
    /// never crash or hang.
    func testListersSurviveDamagedArchives() throws {
        let box = try Sandbox("lister-fuzz")
        defer { box.remove() }
        let members: [HostileArchives.TarMember] = [.directory("data/"), .file("data/train/a/1.jpg", [UInt8](repeating: 7, count: 700)),
                                                   .symlink("data/l", to: "train"), .file("data/" + String(repeating: "n", count: 150), "long")]
        let tar = HostileArchives.tar(members)
        for c in Mutations.cases(of: tar, count: 2000, seed: 27) {
            var at = 0
            let stream = ByteStream(path: c.label) { n in
                let end = min(c.bytes.count, at + n)
                defer { at = end }
                return Data(c.bytes[at..<end])
            }
            _ = try? ArchiveLister.tarMembers(stream, maxUnpackedBytes: 1 << 20)
        }
        let zip = HostileArchives.zip([.stored("data/train/a/1.jpg", Array("x".utf8)), .symlink("data/l", to: "train")])
        let file = box.base.appendingPathComponent("fuzz.zip")
        for c in Mutations.cases(of: zip, count: 600, seed: 27) {
            try Data(c.bytes).write(to: file)
            _ = try? ArchiveLister.zipMembers(file, maxUnpackedBytes: 1 << 20)
        }
    }
}

/// The reported command line, end to end: exit status and the victim files.
extension CommandLineTests {
    func testDatasetsFetchRefusesATamperedCUBArchive() throws {
        let box = try DatasetFetchSafetyTests.Sandbox("cli-cub")
        defer { box.remove() }
        let bytes = DatasetFetchSafetyTests.cubArchive(extraImagesLines: "2 ../../../../victim/secret.txt\n")
        try Data(bytes).write(to: box.downloads.appendingPathComponent("CUB_200_2011.tgz"))
        let r = try run(["datasets", "fetch", "cub200", "--from", box.downloads.path, "--to", box.destination.path])
        XCTAssertEqual(r.reason, .exit)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("MD5") && r.stderr.contains("97eceeb196236b17998738112f37df78") && r.stderr.contains("nothing was extracted"), r.stderr)
        XCTAssertFalse(r.stderr.contains("is ready"), r.stderr)
        XCTAssertEqual(try String(contentsOf: box.innerVictim, encoding: .utf8), "inner secret")
        XCTAssertEqual(try String(contentsOf: box.outerVictim, encoding: .utf8), "outer secret")
    }
}
