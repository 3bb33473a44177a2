import Foundation

/// Mean softmax cross-entropy over a batch (PyTorch `F.cross_entropy`, reduction "mean").
public enum SoftmaxCrossEntropy {
    /// Loss and dLoss/dLogits for row-major `[N, classes]` logits and N integer labels in `0..<classes`.
    /// The gradient is `(softmax − onehot)/N`. Computed with a max shift and double accumulators.
    /// - Throws: ``TrainingError`` when the sizes disagree or a label is out of range.
    public static func lossAndGradient(logits: [Float], classes k: Int, labels: [Int]) throws -> (loss: Double, gradient: [Float]) {
        guard k > 0, logits.count == labels.count * k else {
            throw TrainingError.shapeMismatch(layer: "cross-entropy", expected: "[\(labels.count), \(k)]", got: [logits.count])
        }
        guard labels.allSatisfy({ $0 >= 0 && $0 < k }) else {
            throw TrainingError.invalidConfiguration("cross-entropy: labels must be in 0..<\(k), got \(labels)")
        }
        let n = labels.count
        var grad = [Float](repeating: 0, count: logits.count)
        var loss = 0.0
        for s in 0..<n {
            let row = logits[(s * k)..<((s + 1) * k)]
            let mx = row.max()!
            let z = row.reduce(0.0) { $0 + exp(Double($1 - mx)) }
            loss += log(z) - Double(row[s * k + labels[s]] - mx)
            for j in 0..<k {
                let p = exp(Double(row[s * k + j] - mx)) / z
                grad[s * k + j] = Float((p - (j == labels[s] ? 1 : 0)) / Double(n))
            }
        }
        return (loss / Double(n), grad)
    }
}

/// Index of the largest value of each row of row-major `[N, classes]` scores.
func argmaxRows(_ scores: [Float], classes k: Int) -> [Int] {
    (0..<(scores.count / k)).map { r in
        var best = 0
        for j in 1..<k where scores[r * k + j] > scores[r * k + best] { best = j }
        return best
    }
}
