#!/usr/bin/env bash
# Accelerator acceptance check on a GPU or TPU host (no network needed there):
#
#   bash launch/accelerator_check.sh --out DIR [benchmarks.accelerator_check options]
#
# Runs python3 -m benchmarks.accelerator_check --bundle device_bundle: installs the bundle's
# wheels the host lacks, runs the second-edition trade-off grid at batch 100 (8 runs at a time)
# with the accelerator tests and the resume check beside it, then the bf16 step benchmark if time
# is left, within --budget-s seconds (default 3600); results in DIR (summary.json first).  Build
# device_bundle/ on a connected machine with `make offline-bundle` and copy it to the host's
# checkout.  --backend tpu on a TPU host; HJ_PYTHON picks the interpreter (default python3, the
# one with the accelerator's jax).  `--cpu-dry-run --out DIR` runs the same stages on a CPU.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

case "${1:-}" in -h|--help) usage; exit 0 ;; esac
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${HJ_PYTHON:-python3}"
args=("$@")
dry=0
for a in "$@"; do [[ "$a" == --cpu-dry-run ]] && dry=1; done
[[ " $* " == *" --out"* ]] || die "--out DIR is required (the results folder)"
if [[ $dry -eq 0 ]]; then
  [[ -d device_bundle ]] || die "device_bundle/ is missing: make offline-bundle, then copy it here"
  args=(--bundle device_bundle "${args[@]}")
fi
export PYTHONUNBUFFERED=1
exec "$PY" -m benchmarks.accelerator_check "${args[@]}"
