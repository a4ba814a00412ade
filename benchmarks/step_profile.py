"""Where the train step's time goes: a jax.profiler trace of warm steps, XLA's thunk time per kind
of op, split into batched products (attention), 2-D matmuls (dense layers) and the rest with each
matmul group's FLOP/s, and the attention scores product timed alone against `torch.bmm`."""
from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

from benchmarks import hlo_dots
from benchmarks.measure import median_seconds
from benchmarks.peer import torch_available
from benchmarks.step import setup_run
from hybrid_jax.platform import cpu
from hybrid_jax.train import memory_hooks


def _op_category(name: str) -> str:
    """'ynn_fusion.793' -> 'ynn_fusion': one row per kind of XLA thunk."""
    return re.sub(r"[._]\d+$", "", name)


def step_profile(config, steps: int = 3, top: int = 15, peer: bool = True) -> dict:
    """Where the step's time goes: jax.profiler trace of `steps` warm steps, the wall time of
    XLA's thunks summed per kind of op, and split into batched products (attention), 2-D
    matmuls (dense layers) and the rest, with the FLOP/s each matmul group ran at; and the
    passages' attention scores product timed alone, ours and (`peer`) PyTorch's."""
    import jax

    with tempfile.TemporaryDirectory(prefix="hybrid_jax_profile_") as tmp, \
            memory_hooks.step_loop():
        pretrained, run = setup_run(config, tmp)
        raw = [next(run.iterator) for _ in range(2)]
        batches = [run.runner.shard_batch(b) for b in raw]
        state = run.state
        for i in range(2):  # compile and warm up outside the trace
            state, m = run.runner(state, run.frozen, batches[i % 2])
        jax.block_until_ready(m)
        t = time.perf_counter()
        with jax.profiler.trace(os.path.join(tmp, "trace")):
            for i in range(steps):
                state, m = run.runner(state, run.frozen, batches[i % 2])
            jax.block_until_ready(m)
        wall = (time.perf_counter() - t) / steps
        files = list(pathlib.Path(tmp, "trace").rglob("*.xplane.pb"))
        data = jax.profiler.ProfileData.from_file(str(files[0]))
        matmuls = {}
        for text in run.runner.compiled_texts():
            matmuls.update(hlo_dots.matmul_thunks(text))
    # XLA:CPU traces each thunk (one HLO op or fusion) with an `hlo_op` stat, on the thread that
    # runs it: the caller's or one of XLA's pool threads, which run independent thunks at the
    # same time; a thunk's parallel parts run inside it on the same pool.
    events = [(ev.start_ns, ev.start_ns + ev.duration_ns, ev.name)
              for plane in data.planes for line in plane.lines for ev in line.events
              if not ev.name.startswith("end: ") and any(k == "hlo_op" for k, _ in ev.stats)]
    per_thunk, runs = collections.Counter(), collections.Counter()
    for start, end, name in events:
        per_thunk[name] += (end - start) / 1e9 / steps
        runs[name] += 1 / steps  # a thunk in a loop body runs several times
    shared, busy = _shared_time(events)
    per_kind = collections.Counter()
    for name, s in per_thunk.items():
        per_kind[_op_category(name)] += s
    total = sum(per_thunk.values())
    first = raw[0]
    b, lq = first["query_ids"].shape
    hard = first["negative_ids"].shape[1] if "negative_ids" in first else 0
    lp = first["passage_ids"].shape[1]
    heads = pretrained.config.num_heads
    scores = (b * heads, lp, pretrained.config.hidden_size // heads)
    return {"steps": steps, "batch": b, "query_len": lq, "passage_len": lp,
            "hard_negatives": hard, "step_s_traced": wall, "thunk_s_per_step": total,
            "busy_s_per_step": busy / 1e9 / steps,
            "top": [{"op": k, "s_per_step": v, "share": v / total}
                    for k, v in per_kind.most_common(top)],
            "groups": _matmul_groups(per_thunk, runs, matmuls,
                                     {n: v / 1e9 / steps for n, v in shared.items()}),
            "scores_product": scores_product_rates(*scores, peer=peer)}


def scores_product_rates(batch: int, length: int, head_dim: int, peer: bool = True) -> dict:
    """The attention scores product Q @ K^T over [batch (x heads), length, head_dim] float32,
    alone: median seconds and FLOP/s under XLA, and under PyTorch's `torch.bmm` in its own
    process (`peer` and torch installed) with as many threads."""
    import jax
    import jax.numpy as jnp

    q, k = (jax.random.normal(jax.random.key(i), (batch, length, head_dim)) for i in range(2))
    s = median_seconds(jax.jit(lambda a, b: jnp.einsum("bqd,bkd->bqk", a, b)), (q, k), 20)
    flops = 2.0 * batch * length * length * head_dim
    out = {"shape": [batch, length, head_dim], "gflop": flops / 1e9,
           "xla": {"median_s": s, "flops_per_s": flops / s}}
    if peer and torch_available():
        done = subprocess.run([sys.executable, "-m", "benchmarks.torch_peer", "--bmm",
                               f"{batch},{length},{head_dim}", "--threads",
                               str(os.cpu_count() or 1)], capture_output=True, text=True,
                              env=cpu.child_environment())
        if done.returncode:
            raise RuntimeError(f"the PyTorch peer's bmm failed: {done.stderr.strip()}")
        out["torch"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _shared_time(events: list) -> tuple[dict, float]:
    """({thunk name: ns}, busy ns) over (start_ns, end_ns, name) intervals: each stretch of
    time is split evenly among the thunks running then, so the names' times add up to the busy
    time (the time any thunk ran)."""
    edges = sorted([(s, 1, i) for i, (s, _, _) in enumerate(events)]
                   + [(e, -1, i) for i, (_, e, _) in enumerate(events)])
    shared, running, last, busy = collections.Counter(), set(), 0, 0
    for t, change, i in edges:
        if running:
            busy += t - last
            for j in running:
                shared[events[j][2]] += (t - last) / len(running)
        last = t
        if change > 0:
            running.add(i)
        else:
            running.discard(i)
    return shared, busy


def _matmul_groups(per_thunk: dict, runs: dict, matmuls: dict, shared: dict) -> list[dict]:
    """Per group (batched products, 2-D matmuls, other ops): thunk seconds per step, wall
    seconds per step (time shared among concurrent thunks, `shared`) and their share of the busy
    time, and the matmul groups' GFLOP per step and FLOP/s on that wall time (their fused
    element-wise ops count in their time).  `runs`: executions of each thunk per step."""
    groups = {g: {"group": g, "s_per_step": 0.0, "wall_s_per_step": 0.0, "gflop_per_step": 0.0}
              for g in (hlo_dots.BATCHED, hlo_dots.PLAIN, "other ops")}
    for name, s in per_thunk.items():
        mm = matmuls.get(name)
        g = groups[mm["kind"] if mm else "other ops"]
        g["s_per_step"] += s
        g["wall_s_per_step"] += shared.get(name, 0.0)
        if mm:
            g["gflop_per_step"] += mm["flops"] * runs[name] / 1e9
    busy = sum(g["wall_s_per_step"] for g in groups.values())
    for g in groups.values():
        g["share"] = g["wall_s_per_step"] / busy if busy else 0.0
        if g["gflop_per_step"] and g["wall_s_per_step"]:
            g["flops_per_s"] = g["gflop_per_step"] * 1e9 / g["wall_s_per_step"]
    return list(groups.values())
