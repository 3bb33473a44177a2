import BottleneckCore
@testable import BottleneckModels
import BottleneckTensor
import BottleneckTraining
import Foundation
import XCTest

/// Mirrors the generation protocol of Tests/Reference/training/make_grads.py (see its header).
enum TrainingFixtures {
    static func uniform(_ rng: inout SplitMix64, _ n: Int) -> [Float] { (0..<n).map { _ in rng.nextUniform() } }
    static func symmetric(_ rng: inout SplitMix64, _ n: Int, _ scale: Float) -> [Float] {
        (0..<n).map { _ in rng.nextSymmetric(scale: scale) }
    }

    /// Values for `specs` in sorted key order with the script's per-kind rule; keys in `fixed` take the given
    /// values instead and draw nothing from `rng`.
    static func fill(_ specs: [ParameterSpec], _ rng: inout SplitMix64, fixed: [String: [Float]] = [:]) -> StateDict {
        var state = StateDict()
        for p in specs.sorted(by: { $0.name < $1.name }) {
            if let values = fixed[p.name] { state.set(p.name, shape: p.shape, values: values); continue }
            let leaf = p.name.split(separator: ".").last.map(String.init) ?? p.name
            let n = p.count
            let values: [Float]
            if leaf == "weight" && p.shape.count >= 2 {
                let fanIn = p.shape.dropFirst().reduce(1, *)
                values = symmetric(&rng, n, Float(1.0 / Double(fanIn).squareRoot()))
            } else if leaf == "weight" || leaf == "running_var" {
                values = uniform(&rng, n).map { 0.5 + $0 }
            } else {
                values = symmetric(&rng, n, 0.1)
            }
            state.set(p.name, shape: p.shape, values: values)
        }
        return state
    }

    /// A training graph of `layers` on per-image inputs of shape `input`, its parameters filled as `fill` does.
    static func graph(_ layers: [LayerSpec], input: ActivationShape, _ rng: inout SplitMix64,
                      fixed: [String: [Float]] = [:]) throws -> TrainingGraph {
        let state = fill(layers.flatMap(Architecture.parameters(of:)), &rng, fixed: fixed)
        let graph = try TrainingGraph(layers: layers, input: input, weights: StateDictFile(state: state), sourceName: "fixture",
                                      head: nil, options: .default)
        graph.computesInputGradient = true
        return graph
    }

    static func url(_ name: String, extension ext: String = "npy") throws -> URL {
        guard let u = Bundle.module.url(forResource: name, withExtension: ext, subdirectory: "Fixtures") else {
            throw XCTSkip("fixture \(name).\(ext) missing: rerun the generator under Tests/Reference/training/")
        }
        return u
    }

    static func load(_ name: String) throws -> [Float] { try NumpyArray(contentsOf: url(name)).floats }

    /// Trainable gradients flattened in sorted key order (the script's `.grads` layout), leaving out `excluded`.
    static func flatGrads(_ graph: TrainingGraph, excluding excluded: Set<String> = []) -> [Float] {
        graph.trainableParameters.filter { !excluded.contains($0.name) }.sorted { $0.name < $1.name }.flatMap { $0.grad }
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
