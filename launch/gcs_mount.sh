#!/usr/bin/env bash
# Mount a Cloud Storage bucket with Cloud Storage FUSE (gcsfuse); launch/tpu.sh runs this on every
# TPU worker, so the run's workdir is an ordinary directory that all hosts share.
#
#   launch/gcs_mount.sh [--install] BUCKET MOUNTPOINT
#
#   --install   install gcsfuse from Google's apt repository when it is missing
#
# Idempotent: a live mount is left as it is; a dead one (gcsfuse killed) is unmounted and mounted
# again; a missing one (rebooted VM) is mounted.
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

INSTALL=0
if [[ "${1:-}" == --install ]]; then INSTALL=1; shift; fi
[[ $# -eq 2 ]] || die "usage: launch/gcs_mount.sh [--install] BUCKET MOUNTPOINT"
BUCKET="$1"
MNT="$2"
[[ "$BUCKET" =~ ^[a-z0-9][-a-z0-9_.]{1,220}[a-z0-9]$ ]] || die "'$BUCKET' is not a bucket name"
[[ "$MNT" == /* ]] || die "mount point '$MNT': an absolute path is required"

install_gcsfuse() {
  command -v gcsfuse > /dev/null && return 0
  local codename key=/usr/share/keyrings/cloud.google.asc
  codename="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)"
  [[ -n "$codename" ]] || die "cannot tell the distribution's codename from /etc/os-release"
  echo "installing gcsfuse (gcsfuse-$codename)"
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee "$key" > /dev/null
  echo "deb [signed-by=$key] https://packages.cloud.google.com/apt gcsfuse-$codename main" \
    | sudo tee /etc/apt/sources.list.d/gcsfuse.list > /dev/null
  sudo apt-get update -q
  sudo apt-get install -y -q gcsfuse
}

# A FUSE mount whose daemon died stays in the mount table but cannot be listed.
alive() { mountpoint -q "$MNT" && ls "$MNT" > /dev/null 2>&1; }

[[ "$INSTALL" -eq 0 ]] || install_gcsfuse
if alive; then
  echo "$MNT: gs://$BUCKET already mounted"
  exit 0
fi
command -v gcsfuse > /dev/null || die "gcsfuse is not installed (launch/tpu.sh setup installs it)"
if mountpoint -q "$MNT"; then fusermount -u "$MNT" 2> /dev/null || sudo umount -l "$MNT"; fi
sudo mkdir -p "$MNT"
sudo chown "$(id -u):$(id -g)" "$MNT"  # mounted as this user, so the run can write there
# --implicit-dirs: see directories that exist only as object-name prefixes (written by other
# tools or hosts).  --rename-dir-limit: orbax commits a checkpoint by renaming its temporary
# directory, which gcsfuse refuses on a flat-namespace bucket unless allowed.
gcsfuse --implicit-dirs --rename-dir-limit=100000 "$BUCKET" "$MNT"
echo "$MNT: gs://$BUCKET mounted"
