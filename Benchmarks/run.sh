#!/usr/bin/env bash
# Runs every benchmark harness in sequence (make bench). Each prints its own table.
set -uo pipefail
cd "$(dirname "$0")/.."
for h in decode model extract heads; do
  echo "=== Benchmarks/$h"
  sh "Benchmarks/$h/run.sh" || echo "Benchmarks/$h failed (exit $?)"
done
