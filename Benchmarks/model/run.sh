#!/bin/sh
# Forward-pass speed of every architecture with synthetic weights (no weight files needed).
# Usage (repository root): Benchmarks/model/run.sh [THREADS] [BATCH]  -> one JSON line per model.
# Peers (PyTorch eager, ONNX Runtime) side by side: Benchmarks/peers/run.sh
set -e
THREADS=${1:-2}
BATCH=${2:-8}
swift build -c release --product bottleneck >/dev/null
for m in $(.build/release/bottleneck models --json | sed -n 's/.*"model":"\([^"]*\)".*/\1/p'); do
    .build/release/bottleneck bench --model "$m" --batch "$BATCH" --threads "$THREADS" --cut 1 --iterations 3 --json
done
