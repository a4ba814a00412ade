"""Whole-evaluation benchmark: the config's evaluation datasets from a cold embedding cache, once
per compute dtype, each in its own process, and how far the bfloat16 path's metrics move.

    python -m benchmarks.whole_eval --config F --workdir W [--config.a.b=...]   (one child)

Each child evaluates the pretrained model (`--mode evaluate` on an empty workdir, so nothing is
cached) and writes W/whole_eval.json: wall seconds and its own peak resident memory (VmHWM of
its own address space: a parent's peak does not carry over exec).  The parent reads each
dataset's metrics.json for the per-dataset seconds and the macro mAP of every setting.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from absl import flags

from hybrid_jax import cli

SETTINGS = ("mono", "cross", "multi")
RESULT_FILE = "whole_eval.json"


def _macro(metrics: dict, k: int) -> dict:
    """{'mono': mAP@k, ...}: LAReQA datasets' macro averages (BEIR-style ones have no settings)."""
    return {s: metrics[s]["macro"][f"map@{k}"] for s in SETTINGS
            if isinstance(metrics.get(s), dict) and "macro" in metrics[s]}


def _child(config_file: str, overrides: list[str], dtype: str, workdir: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.whole_eval", "--config", config_file,
           "--workdir", workdir, *overrides, f"--config.eval.compute_dtype={dtype}",
           "--config.eval.progress=False", "--config.eval.plots=False",
           "--config.eval.save_embeddings=False"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"whole-evaluation child ({dtype}) failed:\n{proc.stderr[-3000:]}")
    out = json.loads(pathlib.Path(workdir, RESULT_FILE).read_text())
    out["process_wall_s"] = time.perf_counter() - t  # start-up, model load and every dataset
    out["datasets"] = {}
    for path in sorted(pathlib.Path(workdir, "eval").glob("*/metrics.json")):
        m = json.loads(path.read_text())
        out["datasets"][path.parent.name] = {"seconds": m.get("seconds"),
                                             "map": _macro(m, int(m.get("k", 20)))}
    return out


def whole_eval_benchmark(config_file: str, overrides: list[str],
                         dtypes=("bfloat16", "float32")) -> dict:
    """Wall time, peak memory and macro mAP per dtype; metric differences against float32."""
    out = {"config": config_file, "dtypes": {}}
    with tempfile.TemporaryDirectory(prefix="hybrid_jax_whole_eval_") as tmp:
        for dtype in dtypes:
            out["dtypes"][dtype] = _child(config_file, overrides, dtype, os.path.join(tmp, dtype))
    ref = out["dtypes"].get("float32")
    if ref:
        for dtype, r in out["dtypes"].items():
            r["map_minus_float32"] = {
                ds: {s: v - ref["datasets"][ds]["map"][s] for s, v in d["map"].items()}
                for ds, d in r["datasets"].items() if ds in ref["datasets"]}
    return out


@cli.program
def main(argv):
    del argv
    from benchmarks.measure import max_rss_mb
    from hybrid_jax import config as schema
    from hybrid_jax.evaluation import entry

    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    t = time.perf_counter()
    entry.evaluate_checkpoint(config, schema.check_workdir(workdir))
    result = {"evaluate_s": time.perf_counter() - t, "max_rss_mb": max_rss_mb()}
    pathlib.Path(workdir, RESULT_FILE).write_text(json.dumps(result))


if __name__ == "__main__":
    cli.define_config_flags("configs/demo_cpu.py")
    cli.run(main)
