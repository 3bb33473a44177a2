import BottleneckCore
import Foundation

/// Where the features a model was trained on came from; filled by the CLI, checked by `predict`.
public struct BackboneInfo: Codable, Sendable, Equatable {
    /// Model zoo name (e.g. `efficientnet_lite0`).
    public var model: String
    /// SHA-256 (hex) of the weights file.
    public var weightsSHA256: String
    /// Where the network was cut (layer or stage name).
    public var cut: String
    /// Pooling applied to the cut activations (e.g. `avg`).
    public var pool: String
    /// Preprocessing preset name.
    public var preprocessing: String
    /// Any further key/value facts (feature-store meta).
    public var extra: [String: String]

    /// Reads the identity fields of a feature store's `meta.json` (keys `model`, `weights_sha256`,
    /// `cut` or `layer`, `pool`, `preset`); every other scalar goes to ``extra``.
    public init(storeMeta meta: [String: String]) {
        let known: Set<String> = ["model", "weights_sha256", "cut", "layer", "pool", "preset"]
        var extra: [String: String] = [:]
        // Timing and counts differ between runs over the same backbone; keep only stable facts.
        let volatile: Set<String> = ["wall_seconds", "image_count", "extracted", "failures", "skipped"]
        for (k, v) in meta where !known.contains(k) && !volatile.contains(k) { extra[k] = v }
        self.init(model: meta["model"] ?? "", weightsSHA256: meta["weights_sha256"] ?? "",
                  cut: meta["cut"].map { "cut \($0)" } ?? meta["layer"].map { "layer \($0)" } ?? "",
                  pool: meta["pool"] ?? "", preprocessing: meta["preset"] ?? "", extra: extra)
    }

    /// Differences in the fields that determine the feature space (model, weights, cut, pool, preprocessing),
    /// as human-readable lines; empty when compatible.
    public func mismatches(with other: BackboneInfo) -> [String] {
        var out: [String] = []
        func cmp(_ name: String, _ a: String, _ b: String) { if a != b { out.append("\(name): model has '\(a)', features have '\(b)'") } }
        cmp("model", model, other.model); cmp("weights_sha256", weightsSHA256, other.weightsSHA256)
        cmp("cut/layer", cut, other.cut); cmp("pool", pool, other.pool); cmp("preprocessing", preprocessing, other.preprocessing)
        return out
    }

    /// Creates backbone info.
    public init(model: String, weightsSHA256: String, cut: String, pool: String, preprocessing: String,
                extra: [String: String] = [:]) {
        self.model = model; self.weightsSHA256 = weightsSHA256; self.cut = cut; self.pool = pool
        self.preprocessing = preprocessing; self.extra = extra
    }

    enum CodingKeys: String, CodingKey {
        case model, weightsSHA256 = "weights_sha256", cut, pool, preprocessing, extra
    }
}

/// A complete trained classifier: scaler, head, class names, training metrics and backbone provenance.
/// Saved as one JSON file (format version ``currentFormat``).
public struct ClassifierModel: Codable, Sendable, Equatable {
    /// Current file format version.
    public static let currentFormat = 1

    /// File format version.
    public var format: Int
    /// Class names; label index = position.
    public var classNames: [String]
    /// Feature standardisation fitted on the training rows.
    public var scaler: StandardScaler
    /// The fitted head.
    public var head: TrainedHead
    /// How the head was configured (after grid search: the chosen C/gamma).
    public var config: HeadConfig
    /// Grid-search outcome, when one was run.
    public var gridSearch: GridSearchResult?
    /// Metrics on the training rows and, if a holdout was used, on it (keys `train`, `holdout`).
    public var trainingMetrics: [String: ClassificationReport]
    /// Provenance of the features.
    public var backbone: BackboneInfo?
    /// Feature-store paths of the rows held out from training (stratified `--holdout`), so they can be
    /// evaluated later on a store without splits; nil when the store's own split was used.
    public var holdoutPaths: [String]?

    /// Creates a model container.
    public init(classNames: [String], scaler: StandardScaler, head: TrainedHead, config: HeadConfig,
                gridSearch: GridSearchResult? = nil, trainingMetrics: [String: ClassificationReport] = [:],
                backbone: BackboneInfo? = nil, holdoutPaths: [String]? = nil) {
        self.format = ClassifierModel.currentFormat
        self.classNames = classNames; self.scaler = scaler; self.head = head; self.config = config
        self.gridSearch = gridSearch; self.trainingMetrics = trainingMetrics; self.backbone = backbone
        self.holdoutPaths = holdoutPaths
    }

    /// Feature dimension expected by ``predict(_:)``.
    public var dimension: Int { scaler.dimension }

    /// Consistency checks applied on load, so that prediction never indexes outside an array: this
    /// module is compiled with `-Ounchecked`, so every length and index a saved file declares is
    /// checked here explicitly. Checked: format; at least two distinct class names; scaler lengths,
    /// finite means and positive finite scales; the head's class count and feature dimension; every
    /// matrix's declared rows x cols against its stored values (overflow-checked); intercept and
    /// coefficient counts; every parameter finite; kernel SVM pairs covering each class pair once
    /// with support indices inside the support-vector matrix and Platt parameters finite.
    /// - Throws: ``HeadError/invalidModel(path:reason:)`` naming `path` and the first problem found.
    public func validate(path: String = "<model>") throws {
        func bad(_ r: String) -> HeadError { .invalidModel(path: path, reason: r) }
        func finite(_ values: [Double], _ what: String) throws {
            if let i = values.firstIndex(where: { !$0.isFinite }) { throw bad("\(what)[\(i)] is \(values[i]), not a finite number") }
        }
        func matrix(_ m: Matrix, _ what: String, rows: Int?, cols: Int) throws {
            guard let n = CheckedSize.multiply(m.rows, m.cols), n == m.values.count else {
                throw bad("\(what) declares \(m.rows) x \(m.cols) but stores \(m.values.count) values")
            }
            if let rows, m.rows != rows { throw bad("\(what) has \(m.rows) rows, expected \(rows)") }
            guard m.cols == cols else { throw bad("\(what) has \(m.cols) columns but the scaler has \(cols) features") }
            try finite(m.values, what)
        }
        guard format == ClassifierModel.currentFormat else { throw bad("unsupported format \(format) (expected \(ClassifierModel.currentFormat))") }
        guard classNames.count >= 2 else { throw bad("needs at least two classes, has \(classNames.count)") }
        guard Set(classNames).count == classNames.count else { throw bad("class names are not distinct") }
        let d = scaler.dimension, k = classNames.count
        guard d >= 1 else { throw bad("scaler has no features") }
        guard scaler.scale.count == d else { throw bad("scaler has \(d) means but \(scaler.scale.count) scales") }
        try finite(scaler.mean, "scaler mean")
        if let i = scaler.scale.firstIndex(where: { !($0 > 0 && $0.isFinite) }) {
            throw bad("scaler scale[\(i)] is \(scaler.scale[i]); scales must be positive finite numbers")
        }
        guard head.classCount == k else { throw bad("head has \(head.classCount) classes but \(k) class names") }
        switch head {
        case .logreg(let m):
            try matrix(m.coef, "logistic regression coef", rows: k == 2 ? 1 : k, cols: d)
            guard m.intercept.count == m.coef.rows else { throw bad("logistic regression has \(m.intercept.count) intercepts for \(m.coef.rows) rows") }
            try finite(m.intercept, "logistic regression intercept")
        case .linearSVM(let m):
            try matrix(m.coef, "linear SVM coef", rows: k == 2 ? 1 : k, cols: d)
            guard m.intercept.count == m.coef.rows else { throw bad("linear SVM has \(m.intercept.count) intercepts for \(m.coef.rows) rows") }
            try finite(m.intercept, "linear SVM intercept")
        case .kernelSVM(let m):
            try matrix(m.supportVectors, "support vectors", rows: nil, cols: d)
            guard let pairCount = CheckedSize.multiply(k, k - 1).map({ $0 / 2 }), m.pairs.count == pairCount else {
                throw bad("kernel SVM has \(m.pairs.count) pair machines, expected \(k) x \(k - 1) / 2")
            }
            guard m.gamma > 0, m.gamma.isFinite else { throw bad("gamma \(m.gamma) must be a positive finite number") }
            var seen = Set<[Int]>()
            for (i, p) in m.pairs.enumerated() {
                let what = "kernel SVM pair \(i) (classes \(p.classA), \(p.classB))"
                guard p.classA >= 0, p.classA < p.classB, p.classB < k, seen.insert([p.classA, p.classB]).inserted else {
                    throw bad("\(what): classes must satisfy 0 <= a < b < \(k) and each pair appear once")
                }
                guard p.supportIndices.count == p.coefficients.count else {
                    throw bad("\(what): \(p.supportIndices.count) support indices but \(p.coefficients.count) coefficients")
                }
                if let j = p.supportIndices.firstIndex(where: { $0 < 0 || $0 >= m.supportVectors.rows }) {
                    throw bad("\(what): support index \(p.supportIndices[j]) is outside the \(m.supportVectors.rows) support vectors")
                }
                try finite(p.coefficients, "\(what) coefficients")
                try finite([p.rho], "\(what) rho")
                guard (p.probA == nil) == (p.probB == nil) else { throw bad("\(what): has only one of probA and probB") }
                if let a = p.probA, let b = p.probB { try finite([a, b], "\(what) Platt parameters") }
            }
        }
    }

    /// Scaled features for raw rows `x` (checks dimension and finiteness).
    public func transform(_ x: Matrix) throws -> Matrix { try scaler.transform(x) }

    /// Predicted class index per raw feature row.
    public func predict(_ x: Matrix) throws -> [Int] { try head.predict(transform(x)) }

    /// Per-class ranking scores per raw feature row (see ``TrainedHead/classScores(_:)``).
    public func classScores(_ x: Matrix) throws -> Matrix { try head.classScores(transform(x)) }

    /// Writes the model as JSON atomically.
    public func save(to url: URL) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        do { try AtomicFile.write(try enc.encode(self), to: url) } catch let e as HeadError { throw e } catch {
            throw HeadError.io(path: url.path, reason: "cannot write model: \(error)")
        }
    }

    /// Reads and validates a model written by ``save(to:)``.
    /// - Throws: ``HeadError/io(path:reason:)`` or ``HeadError/invalidModel(path:reason:)``.
    public static func load(from url: URL) throws -> ClassifierModel {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw HeadError.io(path: url.path, reason: "cannot read model: \(error.localizedDescription)")
        }
        let dec = JSONDecoder()
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let model: ClassifierModel
        do { model = try dec.decode(ClassifierModel.self, from: data) } catch {
            throw HeadError.invalidModel(path: url.path, reason: "not a Bottleneck classifier model (\(error))")
        }
        try model.validate(path: url.path)
        return model
    }
}
