import Foundation
import XCTest
import BottleneckTestSupport
@testable import BottleneckPipeline

/// Runs the built `bottleneck` executable as a subprocess: the kill-and-resume acceptance test
/// (a real SIGKILL mid-run) and the command's exit statuses.
final class CommandLineTests: XCTestCase {
    /// The `bottleneck` binary built alongside this test bundle (same configuration).
    func binary() throws -> URL {
        var candidates: [URL] = []
        if let exe = Bundle.main.executableURL { candidates.append(exe.deletingLastPathComponent()) }
        candidates.append(Bundle(for: CommandLineTests.self).bundleURL.deletingLastPathComponent())
        candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
        for dir in candidates {
            // On Linux the xctest file sits in .build/<triple>/<config>/; on macOS inside a bundle's Contents/MacOS.
            for up in 0..<4 {
                var d = dir
                for _ in 0..<up { d.deleteLastPathComponent() }
                let b = d.appendingPathComponent("bottleneck")
                var isDir: ObjCBool = false
                if FileManager.default.fileExists(atPath: b.path, isDirectory: &isDir), !isDir.boolValue,
                   FileManager.default.isExecutableFile(atPath: b.path) { return b }
            }
        }
        throw XCTSkip("bottleneck executable not found next to the test bundle (build it with `swift build` first)")
    }

    struct Run { var status: Int32; var reason: Process.TerminationReason; var stderr: String }

    func start(_ args: [String], env: [String: String] = [:]) throws -> (Process, Pipe) {
        let p = Process()
        p.executableURL = try binary()
        p.arguments = args
        var e = ProcessInfo.processInfo.environment
        for (k, v) in env { e[k] = v }
        p.environment = e
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        return (p, err)
    }

    func run(_ args: [String], env: [String: String] = [:]) throws -> Run {
        let (p, err) = try start(args, env: env)
        let data = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, reason: p.terminationReason, stderr: String(decoding: data, as: UTF8.self))
    }

    func testKillNineThenResumeIsByteIdenticalToACleanRun() throws {
        let root = try TestData.tempDir("cli-kill")
        let work = try TestData.tempDir("cli-kill-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: work) }
        try TestData.makeClassTree(root, prefix: "train", classes: ["a", "b"], perClass: 12)
        try TestData.makeClassTree(root, prefix: "val", classes: ["a", "b"], perClass: 6, seed: 3)
        try Data("broken".utf8).write(to: root.appendingPathComponent("train/b/broken.jpg"))
        let common = ["extract", root.path, "--model", "raw-pixels", "--batch", "4", "--threads", "1", "--quiet"]

        let clean = work.appendingPathComponent("clean")
        let c = try run(common + ["--out", clean.path])
        XCTAssertEqual(c.status, 0, c.stderr)

        let out = work.appendingPathComponent("killed")
        let (p, _) = try start(common + ["--out", out.path], env: ["BOTTLENECK_EXTRACT_BATCH_DELAY_MS": "150"])
        let journal = out.appendingPathComponent(".partial/journal.jsonl")
        let deadline = Date().addingTimeInterval(60)
        var batches = 0
        while Date() < deadline && p.isRunning {
            let text = (try? String(contentsOf: journal, encoding: .utf8)) ?? ""
            batches = max(0, text.split(separator: "\n").count - 1)
            if batches >= 3 { break }
            usleep(5_000)
        }
        XCTAssertTrue(p.isRunning, "the run finished before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal)
        XCTAssertEqual(p.terminationStatus, SIGKILL)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("meta.json").path))
        XCTAssertGreaterThanOrEqual(batches, 3)

        let r = try run(common.filter { $0 != "--quiet" } + ["--out", out.path, "--resume"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("recovered from the interrupted run"), r.stderr)
        XCTAssertEqual(try TestData.storeFiles(out), try TestData.storeFiles(clean))
        XCTAssertEqual(try TestData.metaWithoutTiming(out), try TestData.metaWithoutTiming(clean))

        let again = try run(common.filter { $0 != "--quiet" } + ["--out", out.path])
        XCTAssertEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("up to date"), again.stderr)
    }

    func testExitStatusWarnsOnFailuresAndFailsWhenEverythingFails() throws {
        let root = try TestData.tempDir("cli-exit")
        let work = try TestData.tempDir("cli-exit-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: work) }
        try TestData.makeClassTree(root, classes: ["a"], perClass: 3)
        try Data("x".utf8).write(to: root.appendingPathComponent("a/bad.jpg"))
        let mixed = try run(["extract", root.path, "--model", "raw-pixels", "--out", work.appendingPathComponent("m").path])
        XCTAssertEqual(mixed.status, 0, mixed.stderr)
        XCTAssertTrue(mixed.stderr.contains("warning: 1 image(s) could not be extracted"), mixed.stderr)
        XCTAssertTrue(mixed.stderr.contains("a/bad.jpg"), mixed.stderr)
        let strict = try run(["extract", root.path, "--model", "raw-pixels", "--strict", "--out", work.appendingPathComponent("s").path])
        XCTAssertEqual(strict.status, 1)

        let bad = try TestData.tempDir("cli-allbad")
        defer { try? FileManager.default.removeItem(at: bad) }
        for i in 0..<3 { try Data("nope \(i)".utf8).write(to: bad.appendingPathComponent("x\(i).jpg")) }
        let all = try run(["extract", bad.path, "--model", "raw-pixels", "--out", work.appendingPathComponent("b").path])
        XCTAssertEqual(all.status, 1)
        XCTAssertTrue(all.stderr.contains("every image failed"), all.stderr)
    }

    func testShardAndMergeCommands() throws {
        let root = try TestData.tempDir("cli-shard")
        let work = try TestData.tempDir("cli-shard-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: work) }
        try TestData.makeClassTree(root, classes: ["a", "b", "c"], perClass: 4)
        let base = ["extract", root.path, "--model", "raw-pixels", "--quiet", "--batch", "5"]
        XCTAssertEqual(try run(base + ["--out", work.appendingPathComponent("single").path]).status, 0)
        var dirs: [String] = []
        for i in 0..<3 {
            let d = work.appendingPathComponent("s\(i)").path
            XCTAssertEqual(try run(base + ["--shard", "\(i)/3", "--out", d]).status, 0)
            dirs.append(d)
        }
        let m = try run(["merge"] + dirs + ["--out", work.appendingPathComponent("merged").path])
        XCTAssertEqual(m.status, 0, m.stderr)
        XCTAssertEqual(try TestData.storeFiles(work.appendingPathComponent("merged")), try TestData.storeFiles(work.appendingPathComponent("single")))
        let badShard = try run(base + ["--shard", "3/3"])
        XCTAssertNotEqual(badShard.status, 0)
        XCTAssertTrue(badShard.stderr.contains("0 <= i < n"), badShard.stderr)
    }

    /// Issue 27 finding 10: values that used to abort on allocation are refused by validation
    /// (exit 64, the range in the message), and a combination over the batch-buffer budget is
    /// refused before anything is allocated.
    func testOutOfRangeValuesAreRefusedWithoutACrash() throws {
        let root = try TestData.tempDir("cli-ranges")
        defer { try? FileManager.default.removeItem(at: root) }
        try TestData.makeClassTree(root, classes: ["a"], perClass: 1)
        let extract = ["extract", root.path, "--model", "raw-pixels", "--quiet", "--out", root.path + "-out"]
        defer { try? FileManager.default.removeItem(atPath: root.path + "-out") }
        let cases: [([String], String)] = [
            (extract + ["--batch", "100000000000"], "--batch 100000000000 is out of range: use 1...1024"),
            (extract + ["--threads", "5000"], "--threads 5000 is out of range: use 1...1024"),
            (["train", root.path, "--head", "logreg", "--out", "/dev/null", "--cv", "1000000000"], "--cv 1000000000 is out of range"),
            (["train", root.path, "--head", "logreg", "--out", "/dev/null", "--C", "1e300"], "--C must be a comma-separated list"),
            (["evaluate", "m.json", root.path, "--top-k", "1e300"], "--top-k must be a comma-separated list of integers in 1...1000"),
            (["predict", "m.json", root.path, "--batch", "99999999999"], "--batch 99999999999 is out of range"),
            (["classify", root.path, "--batch", "99999999999"], "--batch 99999999999 is out of range"),
        ]
        for (args, message) in cases {
            let r = try run(args)
            XCTAssertEqual(r.reason, .exit, "\(args): \(r.stderr)")
            XCTAssertEqual(r.status, 64, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
        }
        let budget = try run(extract + ["--batch", "1024", "--threads", "1024"])
        XCTAssertEqual(budget.reason, .exit, budget.stderr)
        XCTAssertNotEqual(budget.status, 0)
        XCTAssertTrue(budget.stderr.contains("MiB batch-buffer budget"), budget.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root.path + "-out/meta.json"))
    }

    /// Issue 27 finding 8: an entry that cannot be examined is a failure (warned, counted by --strict).
    func testUnexaminableEntriesCountTowardsStrict() throws {
        let root = try TestData.tempDir("cli-links")
        let work = try TestData.tempDir("cli-links-out")
        defer { try? FileManager.default.removeItem(at: root); try? FileManager.default.removeItem(at: work) }
        try TestData.makeClassTree(root, classes: ["a", "b"], perClass: 2)
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("c").path, withDestinationPath: "/nonexistent/bn-class")
        let base = ["extract", root.path, "--model", "raw-pixels", "--threads", "1"]
        let lenient = try run(base + ["--out", work.appendingPathComponent("l").path])
        XCTAssertEqual(lenient.status, 0, lenient.stderr)
        XCTAssertTrue(lenient.stderr.contains("  c: broken symbolic link"), lenient.stderr)
        let index = try String(contentsOf: work.appendingPathComponent("l/index.csv"), encoding: .utf8)
        XCTAssertTrue(index.contains(",c,,,error: broken symbolic link (its target does not exist)\n"), index)
        let strict = try run(base + ["--strict", "--out", work.appendingPathComponent("s").path])
        XCTAssertEqual(strict.status, 1, strict.stderr)
    }

    /// Issue 27 findings 9-10 end to end: `train` on a store whose index.csv names a row past the
    /// end of features.npy exits with an error naming the line, not a signal.
    func testTrainRefusesAnInconsistentStore() throws {
        let dir = try TestData.tempDir("cli-store")
        defer { try? FileManager.default.removeItem(at: dir) }
        var store = HostileStores.Store(rows: 10)
        store.indexLines[4] = "99,b/img_3.ppm,,b,ok"
        try store.write(to: dir)
        let r = try run(["train", dir.path, "--head", "logreg", "--out", dir.appendingPathComponent("m.json").path])
        XCTAssertEqual(r.reason, .exit, r.stderr)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("index.csv: line 6: row 99 is past the end of features.npy (10 rows)"), r.stderr)
    }
}
