"""Fit-time benchmark: BottleneckHeads (via `bottleneck train`) vs scikit-learn on identical data, same run.

Run (from the repository root, after `swift build -c release --product bottleneck`):
    Benchmarks/heads/run.sh            # or: /opt/refvenv/bin/python Benchmarks/heads/bench.py [--store DIR]

Synthetic data: 5,000 train + 1,000 test rows x 2,048 features x 10 classes, generated with
numpy.random.default_rng(0) (class means N(0, 0.1^2) per feature, unit Gaussian noise, ReLU, like pooled
CNN activations) and written as a feature store (features.npy, labels.npy, index.csv, classes.json,
meta.json) that both sides read. With --store DIR a real feature store (train/val splits) is used instead.
Both sides time: StandardScaler fit + transform on the train rows and the head's fit (not file loading).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, ".build", "release", "bottleneck")


def write_synthetic_store(d, n_train=5000, n_test=1000, dim=2048, k=10):
    rng = np.random.default_rng(0)
    n = n_train + n_test
    y = np.arange(n) % k
    rng.shuffle(y)
    means = rng.normal(0, 0.1, (k, dim))
    X = np.maximum(means[y] + rng.normal(0, 1, (n, dim)), 0).astype(np.float32)
    np.save(os.path.join(d, "features.npy"), X)
    np.save(os.path.join(d, "labels.npy"), y.astype(np.int64))
    with open(os.path.join(d, "classes.json"), "w") as f:
        json.dump([f"c{i}" for i in range(k)], f)
    with open(os.path.join(d, "index.csv"), "w") as f:
        f.write("row,path,split,label,status\n")
        for i in range(n):
            split = "train" if i < n_train else "test"
            f.write(f"{i},{split}/c{y[i]}/{i:05d}.jpg,{split},c{y[i]},ok\n")
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"format": "bottleneck-features-1", "model": "synthetic", "weights_sha256": "none",
                   "layer": "none", "pool": "none", "preset": "none", "dimension": dim}, f)


def load_store(d, eval_split):
    X = np.load(os.path.join(d, "features.npy"))
    y = np.load(os.path.join(d, "labels.npy"))
    rows = {"train": [], eval_split: []}
    import csv
    with open(os.path.join(d, "index.csv")) as f:
        for r in csv.DictReader(f):
            if r["row"] and r["split"] in rows and y[int(r["row"])] >= 0:
                rows[r["split"]].append(int(r["row"]))
    tr, te = np.array(rows["train"]), np.array(rows[eval_split])
    return X[tr], y[tr], X[te], y[te]


def sk_fit(name, Xtr32, ytr, Xte32, yte, C, repeats, grid=None):
    Xtr, Xte = Xtr32.astype(np.float64), Xte32.astype(np.float64)
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        sc = StandardScaler().fit(Xtr)
        Str = sc.transform(Xtr)
        if name == "logreg":
            m = LogisticRegression(C=C)
        elif name == "linear-svm":
            m = LinearSVC(C=C, dual=True)
        else:
            m = SVC(C=C)
        import warnings
        if grid:
            from sklearn.model_selection import GridSearchCV, StratifiedKFold
            m = GridSearchCV(m, {"C": grid}, cv=StratifiedKFold(5))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(Str, ytr)
        t = time.perf_counter() - t0
        best = t if best is None else min(best, t)
    acc = float((m.predict(sc.transform(Xte)) == yte).mean())
    return best, acc, (m.best_params_["C"] if grid else C)


def ours_fit(name, store, C, eval_split, repeats, grid=None):
    best, acc = None, None
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "m.json")
        for _ in range(repeats):
            cs = ",".join(map(str, grid)) if grid else str(C)
            out = subprocess.run([BIN, "train", store, "--head", name, "--C", cs, "--cv", "5", "--out", model, "--timing-json"],
                                 check=True, capture_output=True, text=True).stdout
            info = json.loads(out.strip().splitlines()[-1])
            t, chosen = info["fit_seconds"], info["C"]
            best = t if best is None else min(best, t)
        subprocess.run([BIN, "evaluate", model, store, "--split", eval_split, "--out", tmp], check=True, capture_output=True)
        with open(os.path.join(tmp, "report.json")) as f:
            acc = json.load(f)["accuracy"]
    return best, acc, chosen


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", help="real feature store with train and val/test splits")
    ap.add_argument("--eval-split", default="test")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--heads", default="logreg:1,linear-svm:0.01,rbf-svm:1")
    ap.add_argument("--grid", help="comma-separated C grid: both sides pick C by 5-fold stratified CV (sklearn GridSearchCV)")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} not found: run swift build -c release --product bottleneck first")
    tmpdir = None
    store = args.store
    if store is None:
        tmpdir = tempfile.TemporaryDirectory()
        store = tmpdir.name
        write_synthetic_store(store)
    Xtr, ytr, Xte, yte = load_store(store, args.eval_split)
    print(f"data: {store if args.store else 'synthetic'}  train {Xtr.shape}  {args.eval_split} {Xte.shape}  "
          f"classes {len(np.unique(ytr))}  sklearn {sklearn.__version__}  nproc {os.cpu_count()}")
    grid = [float(c) for c in args.grid.split(",")] if args.grid else None
    if grid:
        print(f"C grid {grid}, 5-fold StratifiedKFold (unshuffled) on both sides; times include the CV")
    print(f"{'head':<12}{'sk C':>7}{'our C':>7}{'sklearn s':>11}{'ours s':>9}{'speedup':>9}{'sk acc':>9}{'our acc':>9}")
    for spec in args.heads.split(","):
        name, C = spec.split(":")
        C = float(C)
        ts, accs, cs = sk_fit(name, Xtr, ytr, Xte, yte, C, args.repeats, grid)
        to, acco, co = ours_fit(name, store, C, args.eval_split, args.repeats, grid)
        print(f"{name:<12}{cs:>7g}{co:>7g}{ts:>11.3f}{to:>9.3f}{ts / to:>8.2f}x{accs:>9.4f}{acco:>9.4f}", flush=True)


if __name__ == "__main__":
    main()
