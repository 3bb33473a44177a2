/// Where fine-tuning with K trainable stages cuts an architecture: a frozen prefix (run by `Network`),
/// the trainable stages (a `TrainingGraph`), ending at the feature stage the new head reads.
public struct FineTuningSplit: Sendable, Equatable {
    /// Index of the last frozen stage (the prefix's output feeds the trainable stages, or the head).
    public let prefixStage: Int
    /// Indices of the trainable stages, in order (empty for K = 0).
    public let trainableStages: Range<Int>
    /// Index of the stage whose output (a feature vector) the new head reads: the stage before the
    /// classifier, or the last stage of a network without one.
    public let featureStage: Int
}

/// Why an architecture cannot be fine-tuned at the requested depth.
public struct FineTuningDepthError: Error, CustomStringConvertible, Equatable {
    /// What is wrong and what would work.
    public let description: String
}

extension Architecture {
    /// The stage whose output the classifier reads (the last one without a classifier); nil when that
    /// output is not a feature vector.
    public var featureStage: Int? {
        let index = hasClassifier ? stages.count - 2 : stages.count - 1
        guard index >= 0, case .vector = stageShapes(height: inputSize, width: inputSize)[index] else { return nil }
        return index
    }

    /// Whether `stage` counts toward the fine-tuning depth K: it has parameters and is not a lone channel
    /// projection (one 1x1 convolution, such as EfficientNet-Lite's `head` or MobileNetV2's last
    /// `features` stage), which trains together with the stage before it. Pooling stages ride along too.
    func countsTowardFineTuningDepth(_ stage: Stage) -> Bool {
        guard stage.layers.contains(where: { !Self.parameters(of: $0).isEmpty }) else { return false }
        if stage.layers.count == 1, case let .conv(_, _, _, kernel, _, _, _, _, _, kernelWidth) = stage.layers[0],
           kernel == 1, (kernelWidth ?? 1) == 1 {
            return false
        }
        return true
    }

    /// The largest K `fineTuningSplit(unfreeze:)` accepts: the counted stages after the first.
    public var maximumFineTuningDepth: Int {
        guard let feature = featureStage, feature >= 1 else { return 0 }
        return stages[1...feature].filter(countsTowardFineTuningDepth).count
    }

    /// The split for K = `unfreeze` trainable stages, counted back from the feature stage over the stages
    /// that `countsTowardFineTuningDepth` (ResNet: residual groups `layer4`, `layer3`...; EfficientNet-Lite:
    /// MBConv blocks, `head` coming with the last; VGG: `fc7`, `fc6`, then convolutions; Inception-v3: its
    /// Mixed blocks). Every stage after the first trainable one trains. K = 0 trains only the new head.
    /// - Throws: `FineTuningDepthError` when the architecture has no feature-vector stage or K is negative
    ///   or above `maximumFineTuningDepth`.
    public func fineTuningSplit(unfreeze: Int) throws -> FineTuningSplit {
        guard let feature = featureStage else {
            throw FineTuningDepthError(description: "\(name): the stage before the classifier does not output a feature vector")
        }
        guard unfreeze >= 0, unfreeze <= maximumFineTuningDepth else {
            throw FineTuningDepthError(description:
                "\(name) has \(maximumFineTuningDepth) trainable stages; --unfreeze must be between 0 and \(maximumFineTuningDepth), got \(unfreeze)")
        }
        var first = feature + 1, counted = 0
        while counted < unfreeze {
            first -= 1
            if countsTowardFineTuningDepth(stages[first]) { counted += 1 }
        }
        return FineTuningSplit(prefixStage: first - 1, trainableStages: first..<(feature + 1), featureStage: feature)
    }
}
