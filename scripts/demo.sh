#!/usr/bin/env bash
# The main job end to end: extract bottleneck features -> train a classifier -> evaluate -> predict -> benchmark.
# Usage: bash scripts/demo.sh DATA_DIR [MODEL] [OUT_DIR]   (what `make demo` runs)
set -euo pipefail
DATA="${1:?usage: demo.sh DATA_DIR [MODEL] [OUT_DIR]}"
MODEL="${2:-efficientnet-lite0}"
OUT="${3:-out/demo}"
BIN="${BIN:-.build/release/bottleneck}"
mkdir -p "$OUT"

echo "== 1/5 extract: $DATA through $MODEL (pooled bottleneck features)"
"$BIN" extract "$DATA" --model "$MODEL" --out "$OUT/features"

echo "== 2/5 train: logistic regression, C chosen by 5-fold cross-validation"
"$BIN" train "$OUT/features" --head logreg --C 0.01,0.1,1,10 --cv 5 --out "$OUT/model.json"

echo "== 3/5 evaluate on the held-out split"
"$BIN" evaluate "$OUT/model.json" "$OUT/features" --out "$OUT/eval"

echo "== 4/5 predict a few images"
find "$DATA" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort | head -3 | \
  xargs "$BIN" predict "$OUT/model.json" --top 2

echo "== 5/5 benchmark: raw-pixel baseline vs every head at cuts 1 and 3 (frozen features)"
"$BIN" benchmark "$DATA" --model "$MODEL" --cuts 1,3 --seeds 1 --out "$OUT/benchmark"

echo "done: features in $OUT/features, model $OUT/model.json, report $OUT/eval/report.json (+ confusion.png), benchmark $OUT/benchmark/report.md"
