import BottleneckCore
import Foundation

/// Generators for damaged feature stores, `.npy` files and datasets (issue 27, findings 8-10), built
/// at test time so no blob is committed.
public enum HostileStores {
    // MARK: .npy

    /// A `.npy` file whose header dictionary is exactly `dict` (padded as NumPy pads it), followed by `data`.
    public static func npy(dict: String, data: [UInt8] = [], version: UInt8 = 1) -> [UInt8] {
        var text = Array(dict.utf8)
        let prefix = version == 1 ? 10 : 12
        while (prefix + text.count + 1) % 64 != 0 { text.append(0x20) }
        text.append(0x0A)
        var out: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0]
        let n = text.count
        if version == 1 { out += [UInt8(n & 0xFF), UInt8(n >> 8)] } else {
            out += [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24)]
        }
        return out + text + data
    }

    /// A float32 `.npy` whose shape product overflows `Int` (2^62 x 4 rows of 4 bytes).
    public static let overflowingShapeNpy = npy(dict: "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }",
                                                data: [UInt8](repeating: 0, count: 64))

    /// Valid `.npy` files of every supported dtype and a few shapes, for the truncation/flip tests.
    public static func validNpyFiles() -> [(name: String, bytes: [UInt8])] {
        func le<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] { values.flatMap { v in (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } } }
        let floats: [Float] = (0..<24).map { Float($0) * 0.5 - 3 }
        return [
            ("float32 2x12", Array(NumpyArray(float32: floats, shape: [2, 12]).encoded())),
            ("int64 labels", Array(NumpyArray(int64: [0, 1, 2, -1, 1], shape: [5]).encoded())),
            ("float64 3x2", npy(dict: "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }",
                                data: le((0..<6).map { Double($0).bitPattern }))),
            ("int32 scalar", npy(dict: "{'descr': '<i4', 'fortran_order': False, 'shape': (), }", data: le([Int32(7)]))),
            ("uint8 version 2", npy(dict: "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 2), }",
                                    data: (0..<12).map { UInt8($0) }, version: 2)),
        ]
    }

    // MARK: feature stores

    /// The files of a small, valid feature store (as `extract` writes them): `rows` images in
    /// classes `a`/`b`, `dimension` features each, one failed image, split-free.
    public struct Store {
        public var features: [Float]
        public var dimension: Int
        public var labels: [Int]
        public var classes: [String]
        /// `index.csv` lines after the header.
        public var indexLines: [String]
        /// Overrides `labels.npy` bytes (e.g. float labels).
        public var labelsFile: [UInt8]?
        /// Overrides `features.npy` bytes.
        public var featuresFile: [UInt8]?

        /// A consistent store of `rows` rows alternating classes a and b, plus one failure line.
        public init(rows: Int = 6, dimension: Int = 4) {
            self.dimension = dimension
            features = (0..<(rows * dimension)).map { Float($0 % 17) * 0.25 }
            labels = (0..<rows).map { $0 % 2 }
            classes = ["a", "b"]
            indexLines = (0..<rows).map { "\($0),\($0 % 2 == 0 ? "a" : "b")/img_\($0).ppm,,\($0 % 2 == 0 ? "a" : "b"),ok" }
            indexLines.insert(",a/broken.jpg,,a,error: not an image", at: 1)
        }

        /// `meta.json` text consistent with the arrays.
        public var meta: String {
            """
            {"format": "bottleneck-features-1", "model": "raw-pixels", "dimension": \(dimension), "extracted": \(labels.count), \
            "image_count": \(indexLines.count), "failures": \(indexLines.filter { $0.contains(",error: ") }.count)}

            """
        }

        /// The store's files by name.
        public var files: [String: [UInt8]] {
            [
                "features.npy": featuresFile ?? Array(NumpyArray(float32: features, shape: [labels.count, dimension]).encoded()),
                "labels.npy": labelsFile ?? Array(NumpyArray(int64: labels, shape: [labels.count]).encoded()),
                "classes.json": Array(("[" + classes.map { "\"\($0)\"" }.joined(separator: ", ") + "]\n").utf8),
                "index.csv": Array((["row,path,split,label,status"] + indexLines).map { $0 + "\n" }.joined().utf8),
                "meta.json": Array(meta.utf8),
            ]
        }

        /// Writes the store into `dir` (created if needed), with `replacing` files swapped in.
        public func write(to dir: URL, replacing: [String: [UInt8]] = [:]) throws {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for (name, bytes) in files.merging(replacing, uniquingKeysWith: { $1 }) {
                try Data(bytes).write(to: dir.appendingPathComponent(name))
            }
        }
    }

    // MARK: datasets

    /// Creates a directory whose name is the raw `name` bytes (not necessarily UTF-8) inside `parent`.
    public static func makeDirectory(in parent: URL, rawName name: [UInt8]) throws -> [UInt8] {
        let path = Array(parent.path.utf8) + [0x2F] + name
        guard mkdir(path.map { CChar(bitPattern: $0) } + [0], 0o755) == 0 else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        return path
    }

    /// Writes `bytes` to a file named by raw bytes `name` inside the directory at raw path `parent`.
    public static func writeFile(inRawDirectory parent: [UInt8], rawName name: [UInt8], bytes: Data) throws {
        let path = (parent + [0x2F] + name).map { CChar(bitPattern: $0) } + [0]
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw POSIXError(.EIO) }
    }

    /// Why `directory` cannot be made unreadable to this process, or nil after arranging that
    /// `opendir` on it fails while `body` runs. Permissions alone do not stop root, so as root the
    /// effective user is switched to `nobody` for the duration of `body` (and back afterwards);
    /// everything `body` must read or write has to be accessible to other users.
    public static func withUnreadableDirectory(_ directory: URL, _ body: () throws -> Void) throws -> String? {
        guard chmod(directory.path, 0) == 0 else { return "chmod failed: \(String(cString: strerror(errno)))" }
        defer { chmod(directory.path, 0o755) }
        let root = geteuid() == 0
        if root { guard seteuid(65534) == 0 else { return "running as root and cannot switch the effective user to nobody" } }
        defer { if root { _ = seteuid(0) } }
        if let d = opendir(directory.path) {
            closedir(d)
            return "opendir still succeeds on a mode-000 directory (file system ignores permissions)"
        }
        try body()
        return nil
    }
}
