#!/usr/bin/env bash
# Regenerates every committed reference vector from PyTorch / torchvision / Pillow / scikit-learn.
# Usage (from the repository root): bash Tests/Reference/regenerate.sh
# Needs the reference environment (bash Tests/Reference/setup.sh); scripts marked (shared) also need ../shared/datasets.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-${REFVENV:-/opt/refvenv}/bin/python}"
run() { echo "+ $*"; "$PY" "$@"; }
run Tests/Reference/image/make_fixtures.py
run Tests/Reference/models/kernels.py
run Tests/Reference/models/parity.py
run Tests/Reference/models/inception_v3.py         # real-photo part needs the cached default_1.pt and ../shared
run Tests/Reference/weights/make_checkpoints.py
run Tests/Reference/weights/make_labels.py
run Tests/Reference/weights/make_manifest.py
run Tests/Reference/weights/lite0_checkpoint_summary.py
run Tests/Reference/heads/make_fixtures.py
run Tests/Reference/training/make_grads.py
run Tests/Reference/training/make_family_grads.py
run Tests/Reference/training/make_augment.py
if [ -d ../shared/datasets ]; then
  run Tests/Reference/weights/lite0_real.py          # (shared)
  MNV2="${BOTTLENECK_CACHE:-$HOME/.cache/bottleneck/weights}/mobilenet_v2-b0353104.pth"
  if [ -f "$MNV2" ]; then
    run Tests/Reference/models/mobilenet_v2_real.py "$MNV2"   # (shared + checkpoint)
  else
    echo "skipping mobilenet_v2_real.py: $MNV2 not found (bottleneck weights fetch mobilenet_v2)"
  fi
else
  echo "skipping lite0_real.py: ../shared/datasets not found"
fi
