import BottleneckCore
import Foundation
import XCTest
import BottleneckHeads

/// One scikit-learn fixture set written by Tests/Reference/heads/make_fixtures.py.
struct SKFixture {
    let name: String
    let xTrain: Matrix, xTest: Matrix
    let yTrain: [Int], yTest: [Int]
    let ref: [String: Any]
    var classCount: Int { (yTrain.max() ?? 0) + 1 }

    static func load(_ name: String) throws -> SKFixture {
        func url(_ file: String, _ ext: String) throws -> URL {
            guard let u = Bundle.module.url(forResource: "\(name)_\(file)", withExtension: ext, subdirectory: "Fixtures") else {
                throw XCTSkip("fixture \(name)_\(file).\(ext) missing; run Tests/Reference/heads/make_fixtures.py")
            }
            return u
        }
        func matrix(_ f: String) throws -> Matrix {
            let a = try NumpyArray(contentsOf: try url(f, "npy"))
            return Matrix(rows: a.shape[0], cols: a.shape[1], float32: a.floats)
        }
        let ref = try JSONSerialization.jsonObject(with: Data(contentsOf: try url("ref", "json"))) as! [String: Any]
        return SKFixture(name: name, xTrain: try matrix("Xtr"), xTest: try matrix("Xte"),
                         yTrain: try NumpyArray(contentsOf: try url("ytr", "npy")).ints,
                         yTest: try NumpyArray(contentsOf: try url("yte", "npy")).ints, ref: ref)
    }

    /// Train/test features standardised with a scaler fitted on the training rows.
    func scaled() throws -> (StandardScaler, Matrix, Matrix) {
        let s = try StandardScaler.fit(xTrain)
        return (s, try s.transform(xTrain), try s.transform(xTest))
    }

    static let all = ["synth", "digits", "cancer"]
}

func doubles(_ a: Any?) -> [Double] { (a as! [Any]).map { ($0 as! NSNumber).doubleValue } }
func ints(_ a: Any?) -> [Int] { (a as! [Any]).map { ($0 as! NSNumber).intValue } }
func matrix2(_ a: Any?) -> [[Double]] { (a as! [Any]).map { doubles($0) } }

/// max |a - b| over all elements.
func maxAbsDiff(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count, "length \(a.count) vs \(b.count)")
    return zip(a, b).map { abs($0 - $1) }.max() ?? 0
}
