#!/usr/bin/env bash
# Runs every benchmark harness in sequence (make bench). Each prints its own table.
set -uo pipefail
cd "$(dirname "$0")/.."
for h in decode peers extract heads; do
  echo "=== Benchmarks/$h"
  bash "Benchmarks/$h/run.sh" || echo "Benchmarks/$h failed (exit $?)"
done
