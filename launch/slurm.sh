#!/usr/bin/env bash
# Submit launch/slurm_gpu.sbatch: multi-node GPU training.
#
#   launch/slurm.sh --workdir DIR [--nodes N] [--gpus-per-node G] [--partition P] [--account A]
#                   [--time HH:MM:SS] [--config FILE[:variant]] [--mode MODE] [--dry-run]
#                   [-- extra args for hybrid_jax.main]
#
# Environment: SLURM_NODES, SLURM_GPUS_PER_NODE, SLURM_PARTITION, SLURM_ACCOUNT, SLURM_TIME,
# HJ_CONFIG, HJ_WORKDIR, HJ_MODE.  --dry-run prints the sbatch command and the srun command the
# job will run, and submits nothing.
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODES="${SLURM_NODES:-2}"
GPUS="${SLURM_GPUS_PER_NODE:-8}"
PARTITION="${SLURM_PARTITION:-}"
ACCOUNT="${SLURM_ACCOUNT:-}"
TIME="${SLURM_TIME:-04:00:00}"
CONFIG="${HJ_CONFIG:-configs/default.py}"
WORKDIR="${HJ_WORKDIR:-}"
MODE="${HJ_MODE:-train_and_evaluate}"
DRY_RUN=0
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --nodes) need_value "$@"; NODES="$2"; shift 2 ;;
    --gpus-per-node) need_value "$@"; GPUS="$2"; shift 2 ;;
    --partition) need_value "$@"; PARTITION="$2"; shift 2 ;;
    --account) need_value "$@"; ACCOUNT="$2"; shift 2 ;;
    --time) need_value "$@"; TIME="$2"; shift 2 ;;
    --config) need_value "$@"; CONFIG="$2"; shift 2 ;;
    --workdir) need_value "$@"; WORKDIR="$2"; shift 2 ;;
    --mode) need_value "$@"; MODE="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown flag '$1' (see launch/slurm.sh --help)" ;;
  esac
done

[[ -n "$WORKDIR" ]] || die "--workdir (or HJ_WORKDIR) is required (a directory every node sees)"
[[ "$NODES" =~ ^[1-9][0-9]*$ ]] || die "--nodes '$NODES': a positive integer"
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || die "--gpus-per-node '$GPUS': a positive integer"
[[ "$TIME" =~ ^([0-9]+-)?[0-9]+(:[0-9]{2}){0,2}$ ]] || die "--time '$TIME': e.g. 04:00:00"
case "$MODE" in train|train_and_evaluate|evaluate) ;; *) die "--mode '$MODE': train, train_and_evaluate or evaluate" ;; esac

cmd=(sbatch --nodes="$NODES" --ntasks-per-node=1 --gpus-per-node="$GPUS" --time="$TIME")
[[ -n "$PARTITION" ]] && cmd+=(--partition="$PARTITION")
[[ -n "$ACCOUNT" ]] && cmd+=(--account="$ACCOUNT")
cmd+=("$HERE/slurm_gpu.sbatch" --config "$CONFIG" --workdir "$WORKDIR" --mode "$MODE")
[[ ${#EXTRA[@]} -gt 0 ]] && cmd+=(-- "${EXTRA[@]}")

quote "${cmd[@]}"
if [[ "$DRY_RUN" -eq 1 ]]; then
  # what the job will run on its first node
  sbatch_args=(--dry-run --config "$CONFIG" --workdir "$WORKDIR" --mode "$MODE")
  [[ ${#EXTRA[@]} -gt 0 ]] && sbatch_args+=(-- "${EXTRA[@]}")
  SLURM_JOB_NUM_NODES="$NODES" bash "$HERE/slurm_gpu.sbatch" "${sbatch_args[@]}"
else
  exec "${cmd[@]}"
fi
