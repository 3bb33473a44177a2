import ArgumentParser
import Foundation
import BottleneckPipeline

/// `bottleneck datasets`: the catalog of standard small datasets.
struct DatasetsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "datasets",
        abstract: "List and fetch standard small image datasets (flowers, pets, birds, Caltech-101, ants/bees).",
        subcommands: [List.self, Fetch.self])

    /// `bottleneck datasets list`.
    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the datasets in the manifest.")

        @Flag(help: "Print the manifest as JSON (the content of Datasets/manifest.json).")
        var json = false

        func run() throws {
            if json { FileHandle.standardOutput.write(try DatasetCatalog.manifestJSON()); return }
            for d in DatasetCatalog.all {
                print("\(d.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(String(d.classes).leftPad(3)) classes \(String(d.images).leftPad(6)) images  \(d.title)")
                print("             splits: \(d.splits)")
            }
        }
    }

    /// `bottleneck datasets fetch NAME`.
    struct Fetch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download, verify and lay out a dataset as DIR/train|val|test/<class>/.",
            discussion: """
            Without network access it prints exactly what to download and where to put it; run it again afterwards. \
            Each file is checked against the checksums the catalog publishes (SHA-256 and/or MD5) before anything \
            is extracted; files with no published checksum are reported as NOT VERIFIED. Archives are listed first \
            and refused if a member is an absolute path, has a '..' component, is a link that could point outside, \
            or is a device; paths read from the archive's own lists (images.txt, split files) must stay inside it. \
            Nothing outside the destination is written, moved or deleted. Archives may unpack to at most 16 GiB. \
            Exit status: 0 ready, 1 verification or layout refused (the message names the file and the reason), \
            2 files missing and not downloadable (instructions printed).
            """)

        @Argument(help: "Dataset name (see `bottleneck datasets list`).")
        var name: String

        @Option(help: "Destination directory (default: datasets/<name> under the current directory).")
        var to: String?

        @Option(help: "Directory that already holds the downloaded files (default: <to>/.downloads).")
        var from: String?

        func validate() throws {
            guard DatasetCatalog.spec(named: name) != nil else {
                throw ValidationError("unknown dataset '\(name)'; available: \(DatasetCatalog.all.map(\.name).joined(separator: ", "))")
            }
        }

        func run() throws {
            let spec = DatasetCatalog.spec(named: name)!
            let dest = URL(fileURLWithPath: to ?? "datasets/\(spec.name)")
            let fetcher = DatasetFetcher(spec: spec, destination: dest, archives: from.map { URL(fileURLWithPath: $0) },
                                         log: { FileHandle.standardError.write(Data(("datasets: " + $0 + "\n").utf8)) })
            if !fetcher.missingFiles.isEmpty {
                do { try fetcher.download() } catch {
                    FileHandle.standardError.write(Data("datasets: cannot download (\(error)).\n\(fetcher.instructions)\n".utf8))
                    throw ExitCode(2)
                }
            }
            do { try fetcher.extractAndLayOut() } catch {
                FileHandle.standardError.write(Data("datasets: \(error)\n\(fetcher.instructions)\n".utf8))
                throw ExitCode(1)
            }
            FileHandle.standardError.write(Data("datasets: \(spec.name) is ready in \(dest.path) (\(spec.splits))\n".utf8))
        }
    }
}

private extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
