#!/usr/bin/env bash
# Creates the reference virtual environment (default /opt/refvenv) with torch, Pillow, scikit-learn, ...
# Usage: bash Tests/Reference/setup.sh [VENV_DIR]
set -euo pipefail
VENV="${1:-${REFVENV:-/opt/refvenv}}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r "$(dirname "$0")/requirements.txt"
echo "reference environment ready: $VENV/bin/python"
