#!/bin/sh
# Fit-time benchmark of the classifier heads against scikit-learn (see bench.py for details).
# Usage: Benchmarks/heads/run.sh [--store FEATURE_STORE --eval-split val] [--repeats N] [--heads logreg:1,linear-svm:0.01,rbf-svm:1]
set -e
cd "$(dirname "$0")/../.."
swift build -c release --product bottleneck >/dev/null
exec /opt/refvenv/bin/python Benchmarks/heads/bench.py "$@"
