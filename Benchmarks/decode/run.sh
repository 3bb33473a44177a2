#!/usr/bin/env bash
# Decode+preprocess benchmark: bottleneck vs Pillow+torchvision on the same files in the same run.
# Usage (from the repository root): Benchmarks/decode/run.sh [DIR] [PRESET]
#   DIR defaults to ../shared/datasets/hymenoptera, PRESET to imagenet. 2 workers on each side.
#   ROUNDS (default 2) alternations of both sides. The Pillow side runs only if PYTHON (default /opt/refvenv/bin/python, else python3) has Pillow and torchvision.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="${1:-../shared/datasets/hymenoptera}"
PRESET="${2:-imagenet}"
[ -d "$DIR" ] || { echo "no dataset at $DIR: pass a directory of images as the first argument" >&2; exit 2; }
PYTHON="${PYTHON:-/opt/refvenv/bin/python}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

swift build -c release --product bottleneck >/dev/null
BIN="$(swift build -c release --show-bin-path)/bottleneck"

# The two sides alternate for ROUNDS rounds (best pass of each side kept) so that load from other
# processes on a shared machine hits both alike.
ROUNDS="${ROUNDS:-2}"
have_pillow=0
"$PYTHON" -c "import PIL, torchvision" >/dev/null 2>&1 && have_pillow=1
ours="" theirs=""
for _ in $(seq "$ROUNDS"); do
    ours+=$("$BIN" preprocess --bench "$DIR" --preset "$PRESET" --threads 2 --repeats 2 --fast-decode)$'\n'
    if [ "$have_pillow" = 1 ]; then
        theirs+=$("$PYTHON" Benchmarks/decode/bench_pillow.py "$DIR" --preset "$PRESET" --workers 2 --repeats 2)$'\n'
    fi
done
printf "%s" "$ours"
best() { grep "$1" | sed -E 's/.* ([0-9.]+) images\/s.*/\1/' | sort -g | tail -1; }
exact=$(printf "%s" "$ours" | best "bottleneck exact")
fast=$(printf "%s" "$ours" | best "bottleneck fast-decode")
if [ "$have_pillow" = 1 ]; then
    printf "%s" "$theirs"
    pil=$(printf "%s" "$theirs" | best "pillow")
    awk -v e="$exact" -v f="$fast" -v p="$pil" 'BEGIN {
        printf "best images/s: bottleneck exact %.1f, fast-decode %.1f, Pillow+torchvision %.1f\n", e, f, p
        printf "speedup vs Pillow: exact %.2fx, fast-decode %.2fx\n", e / p, f / p }'
else
    echo "best images/s: bottleneck exact $exact, fast-decode $fast (Pillow/torchvision not available to $PYTHON: skipped)"
fi
