"""Readings the benchmarks share: medians of repeated timings, compile counts, CPU seconds, peak
resident memory, the matmul peak, and the results file written atomically."""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import resource
import statistics
import time

# The event jax records for every XLA backend compilation (jax/_src/dispatch.py).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def median(xs):
    return float(statistics.median(xs)) if xs else None


def median_seconds(f, args: tuple, repeats: int) -> float:
    """Median wall seconds of `repeats` calls of f(*args) (a jitted function), after one
    untimed call that compiles it."""
    f(*args).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(*args).block_until_ready()
        times.append(time.perf_counter() - t)
    return median(times)


def max_rss_mb() -> float:
    """Peak resident memory of this process, MB (VmHWM: unlike ru_maxrss it does not carry a
    parent's peak across fork + exec, so the peer's figure is its own)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def count_compiles():
    """Counts XLA backend compilations (and their seconds) while the block runs."""
    import jax

    seen = []

    def listener(event, duration, **_):
        if event == BACKEND_COMPILE_EVENT:
            seen.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def cpu_seconds(since=None) -> tuple:
    """(user, system) CPU seconds this process has used (all its threads), or used since the
    earlier reading `since`."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    now = (r.ru_utime, r.ru_stime)
    return now if since is None else (now[0] - since[0], now[1] - since[1])


def cpu_summary(cpu: list, wall: list) -> dict:
    """Median user and system CPU seconds per step, and the cores busy on average (CPU time over
    wall time): how much of the machine a step keeps working, and how much of it the kernel."""
    return {"user_s": median([u for u, _ in cpu]), "system_s": median([k for _, k in cpu]),
            "cores_busy": median([(u + k) / w for (u, k), w in zip(cpu, wall)])}


def matmul_peak(n: int = 2048, dtype: str = "float32", repeats: int = 10) -> dict:
    """FLOP/s of one large square matmul under XLA (the machine's practical peak)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
    s = median_seconds(jax.jit(jnp.matmul), (a, b), repeats)
    return {"n": n, "dtype": dtype, "median_s": s, "flops_per_s": 2 * n ** 3 / s,
            "repeats": repeats}


def write_json(path, obj) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
