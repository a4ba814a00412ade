#!/usr/bin/env bash
# Cloud TPU VMs for hybrid_jax: create, setup, run, logs, delete.
#
#   launch/tpu.sh SUBCOMMAND [flags] [-- extra args for hybrid_jax.main]
#
# Subcommands
#   create   a TPU VM (or, with --queued, a queued resource; --spot for spot capacity)
#   setup    copy this checkout to every worker and install it (pip install -e .); install
#            gcsfuse and mount the workdir's bucket at /gcs/BUCKET on every worker
#   run      python -m hybrid_jax.main --distributed on every worker; --workdir gs://BUCKET/PATH
#            runs it with --workdir /gcs/BUCKET/PATH (mounted first if it is not)
#   logs     the run's log on every worker (tail -f with --follow)
#   delete   the TPU VM (and the queued resource)
#
# Settings (flag, or environment variable):
#   --project  TPU_PROJECT    GCP project                       (required)
#   --zone     TPU_ZONE       e.g. us-central2-b                (required)
#   --name     TPU_NAME       TPU VM name                       (required)
#   --type     TPU_TYPE       accelerator type, e.g. v4-32      (create; default v4-8)
#   --version  TPU_VERSION    runtime, e.g. tpu-ubuntu2204-base (create)
#   --config   TPU_CONFIG     config file[:variant]             (run; default configs/default.py)
#   --workdir  TPU_WORKDIR    gs://bucket/path                  (setup, run; required there)
#   --mode     TPU_MODE       train | train_and_evaluate | evaluate (run)
#   --spot, --queued, --follow, --dry-run (print the gcloud commands, run nothing)
set -euo pipefail

usage() { sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'; }  # the header comment
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PROJECT="${TPU_PROJECT:-}"
ZONE="${TPU_ZONE:-}"
NAME="${TPU_NAME:-}"
TYPE="${TPU_TYPE:-v4-8}"
VERSION="${TPU_VERSION:-tpu-ubuntu2204-base}"
CONFIG="${TPU_CONFIG:-configs/default.py}"
WORKDIR="${TPU_WORKDIR:-}"
MODE="${TPU_MODE:-train_and_evaluate}"
REMOTE_DIR="${TPU_REMOTE_DIR:-hybrid_jax}"
MOUNT_ROOT=/gcs  # every worker mounts gs://BUCKET at /gcs/BUCKET (launch/gcs_mount.sh)
SPOT=0
QUEUED=0
FOLLOW=0
DRY_RUN=0
EXTRA=()

[[ $# -ge 1 ]] || { usage >&2; die "a subcommand is required (create, setup, run, logs, delete)"; }
CMD="$1"
shift
case "$CMD" in
  create|setup|run|logs|delete) ;;
  -h|--help|help) usage; exit 0 ;;
  *) die "unknown subcommand '$CMD' (create, setup, run, logs, delete)" ;;
esac

while [[ $# -gt 0 ]]; do
  case "$1" in
    --project) need_value "$@"; PROJECT="$2"; shift 2 ;;
    --zone) need_value "$@"; ZONE="$2"; shift 2 ;;
    --name) need_value "$@"; NAME="$2"; shift 2 ;;
    --type) need_value "$@"; TYPE="$2"; shift 2 ;;
    --version) need_value "$@"; VERSION="$2"; shift 2 ;;
    --config) need_value "$@"; CONFIG="$2"; shift 2 ;;
    --workdir) need_value "$@"; WORKDIR="$2"; shift 2 ;;
    --mode) need_value "$@"; MODE="$2"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --queued) QUEUED=1; shift ;;
    --follow) FOLLOW=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown flag '$1' (see launch/tpu.sh --help)" ;;
  esac
done

[[ -n "$PROJECT" ]] || die "--project (or TPU_PROJECT) is required"
[[ -n "$ZONE" ]] || die "--zone (or TPU_ZONE) is required"
[[ -n "$NAME" ]] || die "--name (or TPU_NAME) is required"
[[ "$NAME" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "--name '$NAME': lowercase letters, digits and '-'"
[[ "$TYPE" =~ ^v[0-9]+[a-z]*-[0-9]+$ ]] || die "--type '$TYPE': expected e.g. v4-32, v5litepod-16"

# Print a command (shell-quoted) and run it unless --dry-run.
run_cmd() {
  quote "$@"
  if [[ "$DRY_RUN" -eq 0 ]]; then "$@"; fi
}

GCLOUD=(gcloud --project="$PROJECT")
TPU=("${GCLOUD[@]}" compute tpus tpu-vm)
SSH_ALL=("${TPU[@]}" ssh "$NAME" --zone="$ZONE" --worker=all)
LOG="\$HOME/$REMOTE_DIR.log"

# The training code writes its workdir with plain file I/O, so a gs:// workdir reaches it as the
# path where every worker mounts the bucket: gs://BUCKET/PATH -> /gcs/BUCKET/PATH.
if [[ "$CMD" == setup || "$CMD" == run ]]; then
  [[ -n "$WORKDIR" ]] || die "--workdir (or TPU_WORKDIR) is required for $CMD"
  [[ "$WORKDIR" == gs://* ]] || die "--workdir '$WORKDIR': every worker must see it: use a gs:// path"
  rest="${WORKDIR#gs://}"
  BUCKET="${rest%%/*}"
  [[ "$BUCKET" =~ ^[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9]$ ]] \
    || die "--workdir '$WORKDIR': '$BUCKET' is not a bucket name (3+ of a-z 0-9 - _ .)"
  MOUNT="$MOUNT_ROOT/$BUCKET"
  sub=""
  [[ "$rest" == */* ]] && sub="${rest#*/}"
  sub="${sub%/}"
  [[ "/$sub/" != */../* ]] || die "--workdir '$WORKDIR': '..' would leave the mounted bucket"
  MOUNTED_WORKDIR="$MOUNT${sub:+/$sub}"
fi

case "$CMD" in
  create)
    if [[ "$QUEUED" -eq 1 ]]; then
      args=("${GCLOUD[@]}" compute tpus queued-resources create "$NAME" --zone="$ZONE"
            --node-id="$NAME" --accelerator-type="$TYPE" --runtime-version="$VERSION")
      [[ "$SPOT" -eq 1 ]] && args+=(--spot)
    else
      args=("${TPU[@]}" create "$NAME" --zone="$ZONE" --accelerator-type="$TYPE"
            --version="$VERSION")
      [[ "$SPOT" -eq 1 ]] && args+=(--spot)
    fi
    run_cmd "${args[@]}"
    ;;
  setup)
    [[ -f setup.py && -d hybrid_jax ]] || die "run setup from the repository root (setup.py not found)"
    archive="/tmp/$REMOTE_DIR.tar.gz"
    run_cmd tar --exclude=.git --exclude=.venv --exclude=runs --exclude=workdirs -czf "$archive" .
    run_cmd "${TPU[@]}" scp "$archive" "$NAME:$REMOTE_DIR.tar.gz" --zone="$ZONE" --worker=all
    run_cmd "${SSH_ALL[@]}" --command="mkdir -p $REMOTE_DIR && tar -xzf $REMOTE_DIR.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR && pip install -q -U 'jax[tpu]' && pip install -q -e ."
    run_cmd "${SSH_ALL[@]}" --command="cd $REMOTE_DIR && bash launch/gcs_mount.sh --install $BUCKET $MOUNT"
    ;;
  run)
    case "$MODE" in train|train_and_evaluate|evaluate) ;; *) die "--mode '$MODE': train, train_and_evaluate or evaluate" ;; esac
    main=(python3 -m hybrid_jax.main --distributed "--config=$CONFIG" "--workdir=$MOUNTED_WORKDIR" "--mode=$MODE" "${EXTRA[@]}")
    # Mount first (a rebooted worker lost it) and stop if that fails; nohup: the run survives the
    # ssh session; rerunning the same command resumes from the latest checkpoint in the workdir
    # (SIGTERM on preemption saves one and exits 0).
    run_cmd "${SSH_ALL[@]}" --command="cd $REMOTE_DIR && bash launch/gcs_mount.sh $BUCKET $MOUNT || exit 1; nohup $(quote "${main[@]}") > $LOG 2>&1 &"
    ;;
  logs)
    if [[ "$FOLLOW" -eq 1 ]]; then tail_cmd="tail -n 50 -f $LOG"; else tail_cmd="tail -n 50 $LOG"; fi
    run_cmd "${SSH_ALL[@]}" --command="$tail_cmd"
    ;;
  delete)
    if [[ "$QUEUED" -eq 1 ]]; then
      run_cmd "${GCLOUD[@]}" compute tpus queued-resources delete "$NAME" --zone="$ZONE" --force --quiet
    else
      run_cmd "${TPU[@]}" delete "$NAME" --zone="$ZONE" --quiet
    fi
    ;;
esac
