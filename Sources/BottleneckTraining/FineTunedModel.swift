import BottleneckCore
import BottleneckHeads
import BottleneckModels
import Foundation

extension FineTuner {
    /// The trained head as a BottleneckHeads logistic-regression model on the fine-tuned pooled features.
    ///
    /// Two classes are stored in sklearn's binary form (one row `w₁ − w₀`, intercept `b₁ − b₀`; the sigmoid of
    /// that score equals the 2-way softmax); more classes keep one row per class.
    public func headAsLogisticRegression() throws -> LogisticRegression {
        let d = top.features, k = classCount
        let w = head.weight.value.map(Double.init), b = head.bias.value.map(Double.init)
        let rows: Int
        var coef: [Double], intercept: [Double]
        if k == 2 {
            rows = 1
            coef = (0..<d).map { w[d + $0] - w[$0] }
            intercept = [b[1] - b[0]]
        } else {
            rows = k
            coef = w
            intercept = b
        }
        let json: [String: Any] = [
            "C": 1.0, "classWeight": "none", "classCount": k,
            "coef": ["rows": rows, "cols": d, "values": coef], "intercept": intercept,
            "iterations": config.epochs, "converged": true,
        ]
        return try JSONDecoder().decode(LogisticRegression.self, from: JSONSerialization.data(withJSONObject: json))
    }

    /// Saves the fine-tuned model: `url` is a BottleneckHeads ``ClassifierModel`` JSON whose features are the
    /// output of the feature stage (``TrainableTop/featureStage``: `avgpool`, VGG's `fc7`) of the fine-tuned backbone, and `<url>.finetuned.safetensors` holds the
    /// trained stages' parameters and BatchNorm statistics under their checkpoint keys. To run it, load the base
    /// checkpoint, overlay the sidecar with ``OverlayWeights``, cut at the feature stage, and apply the model
    /// (`backbone.extra["finetuned_weights"]` names the sidecar file, relative to the model file).
    /// - Returns: the sidecar's URL.
    @discardableResult
    public func save(to url: URL, classNames: [String], baseWeightsSHA256: String, report: FineTuneReport? = nil) throws -> URL {
        guard classNames.count == classCount else {
            throw TrainingError.invalidConfiguration("\(classNames.count) class names for \(classCount) classes")
        }
        let sidecar = url.appendingPathExtension("finetuned.safetensors")
        let stages = StateDict(top.stageParameters)
        var meta = ["model": architecture.name, "unfreeze": "\(config.unfreeze)",
                    "stages": top.trainableStages.joined(separator: ","), "base_weights_sha256": baseWeightsSHA256]
        if let report { meta["prefix_path"] = report.path.rawValue }
        try StateDictFile(state: stages, metadata: meta).write(to: sidecar)
        var extra = ["finetuned_stages": top.trainableStages.joined(separator: ","), "unfreeze": "\(config.unfreeze)",
                     "epochs": "\(config.epochs)", "learning_rate": "\(config.learningRate)",
                     "augment": [config.augment.contains(.flip) ? "flip" : nil, config.augment.contains(.crop) ? "crop" : nil]
                        .compactMap { $0 }.joined(separator: ",")]
        if !top.trainableStages.isEmpty { extra["finetuned_weights"] = sidecar.lastPathComponent }
        if let last = report?.epochs.last?.validationAccuracy { extra["validation_accuracy"] = "\(last)" }
        // The features depend on the base checkpoint AND the trained stages, so the identity names both:
        // a store extracted with the base weights alone must not pass for this model's feature space.
        let identity = top.trainableStages.isEmpty ? baseWeightsSHA256
            : FineTunedIdentity.compose(base: baseWeightsSHA256, sidecarSHA256: try SHA256.hex(fileAt: sidecar))
        let backbone = BackboneInfo(model: architecture.name, weightsSHA256: identity, cut: "layer \(top.featureStage)", pool: "avg",
                                    preprocessing: architecture.presetName, extra: extra)
        let model = ClassifierModel(classNames: classNames, scaler: .identity(dimension: top.features),
                                    head: .logreg(try headAsLogisticRegression()), config: HeadConfig(kind: .logreg),
                                    backbone: backbone)
        try model.validate(path: url.path)
        try model.save(to: url)
        return sidecar
    }
}

/// The weights identity recorded for a fine-tuned backbone: base checkpoint plus trained-stage sidecar.
public enum FineTunedIdentity {
    /// `"<base>+finetuned:<sidecar SHA-256>"`.
    public static func compose(base: String, sidecarSHA256: String) -> String { "\(base)+finetuned:\(sidecarSHA256)" }
}
