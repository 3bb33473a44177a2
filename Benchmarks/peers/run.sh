#!/usr/bin/env bash
# Side-by-side forward-pass benchmark (see run.py). Creates the peers' venv on first use.
#   Benchmarks/peers/run.sh [run.py options]
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${PEERS_VENV:-Benchmarks/peers/.venv}
[ -x "$VENV/bin/python" ] || bash Benchmarks/peers/setup.sh "$(realpath -m "$VENV")"
swift build -c release --product bottleneck >&2
exec "$VENV/bin/python" Benchmarks/peers/run.py "$@"
