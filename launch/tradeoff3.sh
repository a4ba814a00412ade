#!/usr/bin/env bash
# The trade-off study's third-edition grids, in the protocol's priority order (section 11 of
# docs/tradeoff3_protocol.md), each stage resumable: finished runs are skipped, an interrupted
# one resumes from its checkpoint, so rerunning the same command goes on where it stopped.
#
#   bash launch/tradeoff3.sh [--results DIR] [--stage N] [--python PY]
#
# Stages: 1 the main grid of direction A without its dose-response runs (zero-shot, X-X-mono and
# hybrid on every registered seed), 2 direction B, 3 the dose-response (the rest of the main
# grid), 4 the budgets and training-data fractions, 5 the weakened start.  --stage N starts at
# stage N.  Workdirs: DIR/tradeoff3, DIR/tradeoff3-B, DIR/tradeoff3-<arm> (default DIR: results).
# Run it from a checkout of the registration commit (the driver refuses runs made by other code).
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

results=results stage=1 py=${HJ_PYTHON:-python3}
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --results) need_value "$@"; results=$2; shift 2 ;;
    --stage) need_value "$@"; stage=$2; shift 2 ;;
    --python) need_value "$@"; py=$2; shift 2 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
[[ "$stage" =~ ^[1-5]$ ]] || die "--stage must be 1 to 5, got $stage"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

study() {  # study VARIANT [driver flags...]
  local config="configs/tradeoff3.py${1:+:$1}" workdir="$results/tradeoff3${1:+-$1}"
  shift
  echo "== $config -> $workdir $*"
  "$py" -m hybrid_jax.study --config "$config" --workdir "$workdir" "$@"
}

primary_runs() {  # the main grid's runs that are not dose-response runs, comma-separated
  "$py" - <<'EOF'
from configs import tradeoff3
from hybrid_jax.study import plan
print(",".join(s.name for s in plan.plan(tradeoff3.get_config("")) if not s.sweep))
EOF
}

if [[ $stage -le 1 ]]; then study "" --only "$(primary_runs)"; fi
if [[ $stage -le 2 ]]; then study B; fi
if [[ $stage -le 3 ]]; then study ""; fi
if [[ $stage -le 4 ]]; then
  for arm in budget10 budget80 fraction25 fraction50; do study "$arm"; done
fi
study weak
