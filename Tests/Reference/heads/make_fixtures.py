"""scikit-learn reference fixtures for BottleneckHeads parity tests.

Rerun (from the repository root):
    /opt/refvenv/bin/python Tests/Reference/heads/make_fixtures.py

Writes into Tests/BottleneckHeadsTests/Fixtures/:
  <name>_Xtr.npy / _Xte.npy (float32 features), <name>_ytr.npy / _yte.npy (int64 labels),
  <name>_ref.json (scaler, logreg, LinearSVC, SVC results, StratifiedKFold folds, GridSearchCV picks).
Datasets: 'synth' = make_classification 300 x 20, 4 classes; 'digits' = sklearn's bundled
load_digits (real 8x8 digit images, 64 features, 10 classes; subsampled to 900 rows to keep
fixtures small); 'cancer' = bundled load_breast_cancer (binary, 30 features).
All sklearn fits use float64 copies of the float32 features, as the Swift side does.
"""
import json
import os

import numpy as np
import sklearn
from sklearn.datasets import load_breast_cancer, load_digits, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "BottleneckHeadsTests", "Fixtures")


def datasets():
    X, y = make_classification(n_samples=300, n_features=20, n_informative=10, n_redundant=4,
                               n_classes=4, n_clusters_per_class=1, class_sep=1.0, random_state=0)
    yield "synth", X.astype(np.float32), y
    d = load_digits()
    rng = np.random.RandomState(0)
    idx = np.sort(rng.choice(len(d.target), 900, replace=False))
    yield "digits", d.data[idx].astype(np.float32), d.target[idx]
    c = load_breast_cancer()
    yield "cancer", c.data.astype(np.float32), c.target


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, X32, y in datasets():
        Xtr32, Xte32, ytr, yte = train_test_split(X32, y, test_size=1 / 3, stratify=y, random_state=0)
        for suffix, arr in (("Xtr", Xtr32), ("Xte", Xte32)):
            np.save(os.path.join(OUT, f"{name}_{suffix}.npy"), np.ascontiguousarray(arr, dtype=np.float32))
        for suffix, arr in (("ytr", ytr), ("yte", yte)):
            np.save(os.path.join(OUT, f"{name}_{suffix}.npy"), arr.astype(np.int64))
        Xtr, Xte = Xtr32.astype(np.float64), Xte32.astype(np.float64)
        scaler = StandardScaler().fit(Xtr)
        Str, Ste = scaler.transform(Xtr), scaler.transform(Xte)
        ref = {"sklearn": sklearn.__version__, "scaler_mean": scaler.mean_.tolist(),
               "scaler_scale": scaler.scale_.tolist()}

        logreg = []
        for C, cw in ((0.01, None), (0.1, None), (1.0, None), (1.0, "balanced")):
            m = LogisticRegression(C=C, class_weight=cw, max_iter=20000, tol=1e-10).fit(Str, ytr)
            logreg.append({"C": C, "class_weight": cw or "none", "n_iter": int(m.n_iter_[0]),
                           "coef": m.coef_.tolist(), "intercept": m.intercept_.tolist(),
                           "pred": m.predict(Ste).tolist(), "proba": m.predict_proba(Ste).tolist()})
        ref["logreg"] = logreg
        # Metrics of the C=1 model on the test split (zero_division=0 as the Swift side).
        m1 = LogisticRegression(C=1.0, max_iter=20000, tol=1e-10).fit(Str, ytr)
        pred, proba = m1.predict(Ste), m1.predict_proba(Ste)
        labels = list(range(len(np.unique(ytr))))
        p, r, f, sup = precision_recall_fscore_support(yte, pred, labels=labels, zero_division=0)
        ref["metrics"] = {"precision": p.tolist(), "recall": r.tolist(), "f1": f.tolist(), "support": sup.tolist(),
                          "macro_f1": float(f.mean()), "confusion": confusion_matrix(yte, pred, labels=labels).tolist(),
                          "top2": float(top_k_accuracy_score(yte, proba, k=2, labels=labels)) if len(labels) > 2 else 1.0}

        lsvc = []
        for C, loss, cw in ((0.01, "squared_hinge", None), (0.1, "squared_hinge", None), (1.0, "squared_hinge", None),
                            (0.1, "hinge", None), (0.1, "squared_hinge", "balanced")):
            m = LinearSVC(C=C, loss=loss, dual=True, tol=1e-8, max_iter=200000, random_state=0, class_weight=cw).fit(Str, ytr)
            lsvc.append({"C": C, "loss": loss, "class_weight": cw or "none", "coef": m.coef_.tolist(), "intercept": m.intercept_.tolist(),
                         "pred": m.predict(Ste).tolist(), "decision": m.decision_function(Ste).tolist(),
                         "accuracy": float((m.predict(Ste) == yte).mean())})
        ref["linear_svc"] = lsvc

        svc = []
        for C, kernel, cw in ((1.0, "rbf", None), (10.0, "rbf", None), (0.1, "linear", None), (1.0, "rbf", "balanced")):
            m = SVC(C=C, kernel=kernel, gamma="scale", tol=1e-4, decision_function_shape="ovo", class_weight=cw).fit(Str, ytr)
            svc.append({"C": C, "kernel": kernel, "class_weight": cw or "none", "gamma": 1.0 / (Str.shape[1] * Str.var()),
                        "n_support": m.n_support_.tolist(), "intercept": m.intercept_.tolist(),
                        "pred": m.predict(Ste).tolist(), "decision": np.atleast_2d(m.decision_function(Ste).T).T.tolist(),
                        "accuracy": float((m.predict(Ste) == yte).mean())})
        ref["svc"] = svc

        # Platt probabilities: sklearn's internal CV folds are libsvm-random, so only
        # agreement of the argmax and rough closeness are meaningful.
        mp = SVC(C=1.0, gamma="scale", probability=True, random_state=0).fit(Str, ytr)
        ref["svc_proba"] = {"C": 1.0, "proba": mp.predict_proba(Ste).tolist()}

        skf = StratifiedKFold(n_splits=5)
        folds = np.empty(len(ytr), dtype=int)
        for k, (_, te) in enumerate(skf.split(Str, ytr)):
            folds[te] = k
        ref["folds5"] = folds.tolist()
        grid = {}
        Cs = [0.001, 0.01, 0.1, 1.0, 10.0]
        g = GridSearchCV(LogisticRegression(max_iter=20000, tol=1e-10), {"C": Cs}, cv=skf).fit(Str, ytr)
        grid["logreg"] = {"Cs": Cs, "best_C": g.best_params_["C"], "mean_scores": g.cv_results_["mean_test_score"].tolist()}
        g = GridSearchCV(LinearSVC(dual=True, tol=1e-8, max_iter=200000), {"C": Cs}, cv=skf).fit(Str, ytr)
        grid["linear_svc"] = {"Cs": Cs, "best_C": g.best_params_["C"], "mean_scores": g.cv_results_["mean_test_score"].tolist()}
        gam0 = 1.0 / (Str.shape[1] * Str.var())
        gammas = [gam0 * 0.1, gam0, gam0 * 10]
        g = GridSearchCV(SVC(tol=1e-4), {"C": [0.1, 1.0, 10.0], "gamma": gammas}, cv=skf).fit(Str, ytr)
        grid["svc"] = {"Cs": [0.1, 1.0, 10.0], "gammas": gammas, "best_C": g.best_params_["C"],
                       "best_gamma": g.best_params_["gamma"], "mean_scores": g.cv_results_["mean_test_score"].tolist()}
        ref["grid"] = grid
        with open(os.path.join(OUT, f"{name}_ref.json"), "w") as f:
            json.dump(ref, f)
        print(name, Xtr.shape, "logreg iters", [r["n_iter"] for r in logreg],
              "lsvc acc", [r["accuracy"] for r in lsvc], "svc acc", [r["accuracy"] for r in svc],
              "grid", {k: v["best_C"] for k, v in grid.items()})


if __name__ == "__main__":
    main()
