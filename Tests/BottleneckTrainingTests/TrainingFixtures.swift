import BottleneckCore
import BottleneckTraining
import Foundation
import XCTest

/// Mirrors the generation protocol of Tests/Reference/training/make_grads.py (see its header).
enum TrainingFixtures {
    static func uniform(_ rng: inout SplitMix64, _ n: Int) -> [Float] { (0..<n).map { _ in rng.nextUniform() } }
    static func symmetric(_ rng: inout SplitMix64, _ n: Int, _ scale: Float) -> [Float] {
        (0..<n).map { _ in rng.nextSymmetric(scale: scale) }
    }

    /// Fills parameters and buffers in sorted key order with the script's per-kind rule.
    static func fill(_ layer: Layer, _ rng: inout SplitMix64) {
        for p in layer.allParameters.sorted(by: { $0.name < $1.name }) {
            let leaf = p.name.split(separator: ".").last.map(String.init) ?? p.name
            let n = p.value.count
            if leaf == "weight" && p.shape.count >= 2 {
                let fanIn = p.shape.dropFirst().reduce(1, *)
                p.value = symmetric(&rng, n, Float(1.0 / Double(fanIn).squareRoot()))
            } else if leaf == "weight" || leaf == "running_var" {
                p.value = uniform(&rng, n).map { 0.5 + $0 }
            } else {
                p.value = symmetric(&rng, n, 0.1)
            }
        }
    }

    static func url(_ name: String) throws -> URL {
        guard let u = Bundle.module.url(forResource: name, withExtension: "npy", subdirectory: "Fixtures") else {
            throw XCTSkip("fixture \(name).npy missing: rerun Tests/Reference/training/make_grads.py")
        }
        return u
    }

    static func load(_ name: String) throws -> [Float] { try NumpyArray(contentsOf: url(name)).floats }

    /// Trainable gradients flattened in sorted key order (the script's `.grads` layout).
    static func flatGrads(_ layer: Layer) -> [Float] {
        layer.trainableParameters.sorted { $0.name < $1.name }.flatMap { $0.grad }
    }

    /// Asserts `max|a − ref| ≤ tol · max(max|ref|, floor)`: error relative to the reference's scale.
    static func assertClose(_ a: [Float], _ ref: [Float], tol: Float, floor: Float = 1e-3, _ what: String,
                            file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, ref.count, "\(what): length", file: file, line: line)
        guard a.count == ref.count else { return }
        var diff: Float = 0, scale: Float = 0
        for i in 0..<a.count { let d = abs(a[i] - ref[i]); diff = d.isNaN ? .infinity : max(diff, d); scale = max(scale, abs(ref[i])) }
        XCTAssertLessThanOrEqual(diff, tol * max(scale, floor), "\(what): max abs diff \(diff), scale \(scale)",
                                 file: file, line: line)
    }
}
