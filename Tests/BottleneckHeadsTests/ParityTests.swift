import Foundation
import XCTest
import BottleneckHeads

/// Parity with scikit-learn 1.9 on committed fixtures (see Tests/Reference/heads/make_fixtures.py).
final class ParityTests: XCTestCase {
    func testScalerMatchesStandardScaler() throws {
        for name in SKFixture.all {
            let f = try SKFixture.load(name)
            let (s, _, _) = try f.scaled()
            // Two-pass double accumulation vs NumPy's pairwise sums: agreement to ~1e-12 relative.
            XCTAssertLessThan(maxAbsDiff(s.mean, doubles(f.ref["scaler_mean"])), 1e-9, name)
            let refScale = doubles(f.ref["scaler_scale"])
            for (a, b) in zip(s.scale, refScale) { XCTAssertEqual(a, b, accuracy: 1e-10 * max(1, b), name) }
        }
    }

    /// Coefficients within 1e-3 relative (max |Δ| / max |coef|) of sklearn's lbfgs optimum, predictions identical.
    func testLogisticRegressionMatchesSklearn() throws {
        for name in SKFixture.all {
            let f = try SKFixture.load(name)
            let (_, xtr, xte) = try f.scaled()
            for case let r as [String: Any] in f.ref["logreg"] as! [Any] {
                let C = (r["C"] as! NSNumber).doubleValue
                let cw = ClassWeight(rawValue: r["class_weight"] as! String)!
                let m = try LogisticRegression.fit(xtr, labels: f.yTrain, classCount: f.classCount,
                                                   options: .init(C: C, classWeight: cw, maxIterations: 20000, tolerance: 1e-10))
                let refCoef = matrix2(r["coef"]).flatMap { $0 }
                let scale = refCoef.map(abs).max()!
                let tag = "\(name) C=\(C) \(cw)"
                print("parity logreg \(tag): rel coef diff \(maxAbsDiff(m.coef.values, refCoef) / scale), iters \(m.iterations) (sklearn \(r["n_iter"]!))")
                XCTAssertLessThan(maxAbsDiff(m.coef.values, refCoef) / scale, 1e-3, tag)
                XCTAssertLessThan(maxAbsDiff(m.intercept, doubles(r["intercept"])) / max(1, scale), 1e-3, tag)
                XCTAssertEqual(try m.predict(xte), ints(r["pred"]), tag)
                let proba = try m.predictProba(xte)
                XCTAssertLessThan(maxAbsDiff(proba.values, matrix2(r["proba"]).flatMap { $0 }), 1e-4, tag)
            }
        }
    }

    /// LinearSVC(dual=True): equal test accuracy, decision values within 1e-2, coefficients close.
    func testLinearSVMMatchesLinearSVC() throws {
        for name in SKFixture.all {
            let f = try SKFixture.load(name)
            let (_, xtr, xte) = try f.scaled()
            for case let r as [String: Any] in f.ref["linear_svc"] as! [Any] {
                let C = (r["C"] as! NSNumber).doubleValue
                let loss = LinearSVM.Loss(rawValue: r["loss"] as! String)!
                let cw = ClassWeight(rawValue: r["class_weight"] as! String)!
                let m = try LinearSVM.fit(xtr, labels: f.yTrain, classCount: f.classCount,
                                          options: .init(C: C, loss: loss, classWeight: cw, tolerance: 1e-8, maxIterations: 200_000))
                let tag = "\(name) C=\(C) \(loss) \(cw)"
                let pred = try m.predict(xte)
                let acc = Double(zip(pred, f.yTest).filter { $0 == $1 }.count) / Double(f.yTest.count)
                XCTAssertEqual(acc, (r["accuracy"] as! NSNumber).doubleValue, accuracy: 1e-12, tag)
                let dec = try m.decisionFunction(xte).values
                let refDec: [Double] = f.classCount == 2 ? doubles(r["decision"]) : matrix2(r["decision"]).flatMap { $0 }
                print("parity linear-svm \(tag): acc \(acc) max |Δdecision| \(maxAbsDiff(dec, refDec))")
                XCTAssertLessThan(maxAbsDiff(dec, refDec), 1e-2, tag)
                XCTAssertEqual(pred, ints(r["pred"]), tag)
            }
        }
    }

    /// SVC (libsvm): equal test accuracy, one-vs-one decision values within 1e-2, same support-vector counts.
    func testKernelSVMMatchesSVC() throws {
        for name in SKFixture.all {
            let f = try SKFixture.load(name)
            let (_, xtr, xte) = try f.scaled()
            for case let r as [String: Any] in f.ref["svc"] as! [Any] {
                let C = (r["C"] as! NSNumber).doubleValue
                let kernel: KernelSVM.Kernel = (r["kernel"] as! String) == "rbf" ? .rbf : .linear
                let cw = ClassWeight(rawValue: r["class_weight"] as! String)!
                let m = try KernelSVM.fit(xtr, labels: f.yTrain, classCount: f.classCount,
                                          options: .init(C: C, kernel: kernel, classWeight: cw, tolerance: 1e-4))
                let tag = "\(name) C=\(C) \(kernel) \(cw)"
                XCTAssertEqual(m.gamma, (r["gamma"] as! NSNumber).doubleValue, accuracy: 1e-12 * m.gamma, tag)
                let pred = try m.predict(xte)
                let acc = Double(zip(pred, f.yTest).filter { $0 == $1 }.count) / Double(f.yTest.count)
                XCTAssertEqual(acc, (r["accuracy"] as! NSNumber).doubleValue, accuracy: 1e-12, tag)
                let dec: [Double] = f.classCount == 2 ? try m.binaryDecision(xte) : try m.decisionFunction(xte).values
                let refDec = matrix2(r["decision"]).flatMap { $0 }
                print("parity kernel-svm \(tag): acc \(acc) max |Δdecision| \(maxAbsDiff(dec, refDec))")
                XCTAssertLessThan(maxAbsDiff(dec, refDec), 1e-2, tag)
                XCTAssertEqual(pred, ints(r["pred"]), tag)
                var nSV = [Int](repeating: 0, count: f.classCount)
                for row in m.supportRows { nSV[f.yTrain[row]] += 1 }
                let refSV = ints(r["n_support"])
                for c in 0..<f.classCount { XCTAssertLessThanOrEqual(abs(nSV[c] - refSV[c]), 2, "\(tag) nSV class \(c)") }
            }
        }
    }

    /// Platt probabilities: sklearn's internal CV folds come from libsvm's RNG, ours from SplitMix64, so only
    /// closeness (mean |Δp| < 0.05) and argmax agreement on ≥ 95% of rows are required.
    func testKernelSVMProbabilitiesCloseToSklearn() throws {
        for name in SKFixture.all {
            let f = try SKFixture.load(name)
            let (_, xtr, xte) = try f.scaled()
            let r = f.ref["svc_proba"] as! [String: Any]
            let m = try KernelSVM.fit(xtr, labels: f.yTrain, classCount: f.classCount, options: .init(C: 1, probability: true))
            let p = try m.predictProba(xte)
            let ref = matrix2(r["proba"])
            var agree = 0, diff = 0.0
            for i in 0..<p.rows {
                XCTAssertEqual(p.row(i).reduce(0, +), 1, accuracy: 1e-6)
                if p.row(i).indices.max(by: { p[i, $0] < p[i, $1] })! == ref[i].indices.max(by: { ref[i][$0] < ref[i][$1] })! { agree += 1 }
                for c in 0..<p.cols { diff += abs(p[i, c] - ref[i][c]) }
            }
            print("parity platt \(name): argmax agreement \(Double(agree) / Double(p.rows)), mean |Δp| \(diff / Double(p.values.count))")
            XCTAssertGreaterThanOrEqual(Double(agree) / Double(p.rows), 0.95, name)
            XCTAssertLessThan(diff / Double(p.values.count), 0.05, name)
        }
    }

    func testStratifiedKFoldMatchesSklearn() throws {
        for name in SKFixture.all {
            let f = try SKFixture.load(name)
            XCTAssertEqual(try StratifiedKFold.assign(labels: f.yTrain, folds: 5), ints(f.ref["folds5"]), name)
        }
        // Labels whose first appearance order differs from their numeric order.
        XCTAssertEqual(try StratifiedKFold.assign(labels: [2, 2, 0, 1, 0, 2, 1, 0, 1, 2], folds: 2),
                       [0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    }

    /// GridSearchCV(StratifiedKFold(5)) picks the same C (and gamma), with matching mean fold accuracies.
    func testGridSearchPicksSameAsGridSearchCV() throws {
        for name in SKFixture.all {
            let f = try SKFixture.load(name)
            let (_, xtr, _) = try f.scaled()
            let folds = try StratifiedKFold.assign(labels: f.yTrain, folds: 5)
            let grid = f.ref["grid"] as! [String: Any]
            var cases: [(String, HeadConfig, [Double?])] = []
            var lr = HeadConfig(kind: .logreg); lr.tolerance = 1e-10; lr.maxIterations = 20000
            cases.append(("logreg", lr, [nil]))
            var ls = HeadConfig(kind: .linearSVM); ls.tolerance = 1e-8; ls.maxIterations = 200_000
            cases.append(("linear_svc", ls, [nil]))
            var sv = HeadConfig(kind: .rbfSVM); sv.tolerance = 1e-4
            cases.append(("svc", sv, doubles((grid["svc"] as! [String: Any])["gammas"]).map { Optional($0) }))
            for (key, cfg, gammas) in cases {
                let g = grid[key] as! [String: Any]
                let res = try GridSearch.run(xtr, labels: f.yTrain, classCount: f.classCount, config: cfg,
                                             Cs: doubles(g["Cs"]), gammas: gammas, folds: folds)
                print("parity grid \(name) \(key): best C \(res.best.C) gamma \(res.best.gamma.map { String($0) } ?? "-"), max |Δmean| \(maxAbsDiff(res.candidates.map { $0.meanAccuracy }, doubles(g["mean_scores"])))")
                XCTAssertEqual(res.best.C, (g["best_C"] as! NSNumber).doubleValue, "\(name) \(key)")
                if let bg = g["best_gamma"] as? NSNumber { XCTAssertEqual(res.best.gamma!, bg.doubleValue, accuracy: 1e-12, name) }
                XCTAssertLessThan(maxAbsDiff(res.candidates.map { $0.meanAccuracy }, doubles(g["mean_scores"])), 0.011, "\(name) \(key)")
            }
        }
    }

    func testMetricsMatchSklearn() throws {
        for name in SKFixture.all {
            let f = try SKFixture.load(name)
            let (_, xtr, xte) = try f.scaled()
            let m = try LogisticRegression.fit(xtr, labels: f.yTrain, classCount: f.classCount,
                                               options: .init(C: 1, maxIterations: 20000, tolerance: 1e-10))
            let names = (0..<f.classCount).map { "c\($0)" }
            let rep = try ClassificationReport.compute(trueLabels: f.yTest, predicted: try m.predict(xte), classNames: names,
                                                       scores: try m.predictProba(xte), topK: [1, 2])
            let r = f.ref["metrics"] as! [String: Any]
            XCTAssertLessThan(maxAbsDiff(rep.perClass.map { $0.precision }, doubles(r["precision"])), 1e-12)
            XCTAssertLessThan(maxAbsDiff(rep.perClass.map { $0.recall }, doubles(r["recall"])), 1e-12)
            XCTAssertLessThan(maxAbsDiff(rep.perClass.map { $0.f1 }, doubles(r["f1"])), 1e-12)
            XCTAssertEqual(rep.perClass.map { $0.support }, ints(r["support"]))
            XCTAssertEqual(rep.macroF1, (r["macro_f1"] as! NSNumber).doubleValue, accuracy: 1e-12)
            XCTAssertEqual(rep.confusion, (r["confusion"] as! [Any]).map { ints($0) })
            XCTAssertEqual(rep.topK["2"]!, (r["top2"] as! NSNumber).doubleValue, accuracy: 1e-12, name)
            XCTAssertEqual(rep.topK["1"]!, rep.accuracy, accuracy: 1e-12)
        }
    }
}
