#!/usr/bin/env bash
# The one prepared call on the GPU machine (the device tool's `run`, carry ["device_bundle"]):
#
#   bash launch/device_check.sh [hybrid_jax.device_check options]
#
# Runs python3 -m hybrid_jax.device_check --bundle device_bundle --out "$OUT": install the
# carried wheels, the second-edition trade-off grid at batch 100 (8 runs at a time) with the
# device tests and resume beside it, then the bf16 bench if time is left, in 540 s of wall
# time (--budget-s), results in $OUT (summary.json first).  Build device_bundle/ here
# first with `make device-prep`.  HJ_PYTHON picks the interpreter (default python3: on that
# machine the one with CUDA jax).  Here, `--cpu-dry-run --out DIR` runs the same stages on CPU.
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

case "${1:-}" in -h|--help) usage; exit 0 ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${HJ_PYTHON:-python3}"
args=("$@")
dry=0
for a in "$@"; do [[ "$a" == --cpu-dry-run ]] && dry=1; done
if [[ $dry -eq 0 ]]; then
  [[ -d device_bundle ]] || die "device_bundle/ is missing: make device-prep, then carry it"
  [[ -n "${OUT:-}" ]] || [[ " $* " == *" --out"* ]] || die "\$OUT is not set and no --out given"
  args=(--bundle device_bundle "${args[@]}")
fi
export PYTHONUNBUFFERED=1
exec "$PY" -m hybrid_jax.device_check "${args[@]}"
