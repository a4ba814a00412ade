"""LoRA against full fine-tuning at the config's shapes (the demo's: multilingual-E5-small, its
batch and lengths): trainable parameters, optimizer state, step time and the step's memory.

Both runs are the real training set-up (`train.run_setup.setup`) on one loaded model and the same
batches; only model.lora_* differ ("full fine-tuning" is the config as it is, so the demo's frozen
word-embedding table stays frozen in both).  Steps alternate full, LoRA, full, ... so both see the
same machine load; medians over the rounds and the median of per-round ratios are reported.
Memory is XLA's analysis of each compiled step (arguments: weights, optimizer state and batch;
temporaries: activations and gradients), per run: the process's resident peak holds both runs.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from benchmarks.measure import count_compiles, median
from hybrid_jax.train import memory_hooks

FULL = "full fine-tuning"
DEFAULT_RANK = 8  # where the config leaves LoRA off (--config.model.lora_rank picks another)


def _with_rank(config, rank: int):
    """The config with model.lora_rank = `rank` (its other LoRA settings as they are)."""
    out = config.copy_and_resolve_references()
    with out.unlocked():
        out.model.lora_rank = int(rank)
    return out


def _count(tree) -> tuple[int, int]:
    """(number of values, bytes) of a tree's arrays."""
    import jax

    leaves = jax.tree.leaves(tree)
    return (int(sum(np.size(x) for x in leaves)),
            int(sum(np.size(x) * np.dtype(x.dtype).itemsize for x in leaves)))


def _memory(runner) -> dict:
    """XLA's memory analysis of the step the runner compiled (one program: fixed shapes)."""
    stats = [m for m in runner.memory_analyses() if m is not None]
    if not stats:
        return {}
    m = stats[-1]
    out = {"argument_mb": m.argument_size_in_bytes / 1e6, "temp_mb": m.temp_size_in_bytes / 1e6,
           "output_mb": m.output_size_in_bytes / 1e6, "alias_mb": m.alias_size_in_bytes / 1e6}
    # Outputs aliased to donated arguments (the new train state) take no memory of their own.
    # (XLA:CPU's own peak_memory_in_bytes counts the arguments alone.)
    out["step_mb"] = out["argument_mb"] + out["temp_mb"] + out["output_mb"] - out["alias_mb"]
    return out


def _describe(run) -> dict:
    import jax

    trainable = jax.device_get(run.runner.unreplicate(run.state.params))
    opt_state = jax.device_get(run.runner.unreplicate(run.state.opt_state))
    n_train, _ = _count(trainable)
    n_frozen, _ = _count(run.frozen_host)
    return {"trainable_params": n_train, "frozen_params": n_frozen,
            "trainable_fraction": n_train / max(n_train + n_frozen, 1),
            "optimizer_state_mb": _count(opt_state)[1] / 1e6}


def lora_benchmark(config, rounds: int = 10, n_batches: int = 4) -> dict:
    """Median step seconds, parameters and step memory of full fine-tuning and LoRA: the
    config's model.lora_* settings (rank DEFAULT_RANK where the config leaves LoRA off)."""
    import jax

    from hybrid_jax.models.from_config import load_model
    from hybrid_jax.train import run_setup

    rank = int(config.model.lora_rank) or DEFAULT_RANK
    lora_name = f"LoRA rank {rank}"
    variants = {FULL: _with_rank(config, 0), lora_name: _with_rank(config, rank)}
    m = variants[lora_name].model
    out: dict = {"devices": [str(d) for d in jax.local_devices()], "rounds": rounds,
                 "model": str(config.model.spec), "lora_rank": rank,
                 "lora_alpha": float(m.lora_alpha), "lora_targets": list(m.lora_targets),
                 "variants": {}}
    with tempfile.TemporaryDirectory(prefix="hybrid_jax_lora_") as tmp, \
            count_compiles() as compiles, memory_hooks.step_loop():
        pretrained = load_model(config)  # one load: LoRA adds its adapters to a copy
        runs = {name: run_setup.setup(cfg, os.path.join(tmp, str(i)), pretrained)
                for i, (name, cfg) in enumerate(variants.items())}
        batches = [next(runs[FULL].iterator) for _ in range(n_batches)]  # the same for both
        out.update(batch=int(batches[0]["query_ids"].shape[0]),
                   query_len=int(batches[0]["query_ids"].shape[1]),
                   passage_len=int(batches[0]["passage_ids"].shape[1]))
        states = {name: run.state for name, run in runs.items()}
        times: dict = {name: [] for name in runs}

        def step(name, i):
            run = runs[name]
            t = time.perf_counter()
            states[name], metrics = run.runner(states[name], run.frozen,
                                               run.runner.shard_batch(batches[i % n_batches]))
            jax.block_until_ready(metrics["loss"])
            return time.perf_counter() - t

        for name in runs:  # compile + first step, not timed
            out["variants"][name] = {"first_step_s": step(name, 0)}
        n_compiled = len(compiles)
        for r in range(rounds):
            for name in runs:
                times[name].append(step(name, r + 1))
        out["compiles_after_first_step"] = len(compiles) - n_compiled
        for name, run in runs.items():
            run.state = states[name]
            v = out["variants"][name]
            v.update(_describe(run), step_s=median(times[name]), step_s_all=times[name],
                     memory=_memory(run.runner))
            run.checkpointer.close()
    out["step_speedup"] = median([f / lo for f, lo in zip(times[FULL], times[lora_name])])
    return out


def markdown(s: dict, meta: str) -> list[str]:
    """The section's table for BENCHMARKS.md (`meta`: how and where it was run)."""
    names = list(s["variants"])
    rows = [("trainable parameters", "trainable_params", "{:,}"),
            ("share of all parameters", "trainable_fraction", "{:.2%}"),
            ("optimizer state, MB", "optimizer_state_mb", "{:.1f}"),
            ("step, median s", "step_s", "{:.3f}")]
    lines = ["## LoRA against full fine-tuning", "",
             f"{s['model']}, batch {s['batch']}, query {s['query_len']} / passage "
             f"{s['passage_len']} tokens; LoRA rank {s['lora_rank']}, alpha {s['lora_alpha']:g} "
             f"on {', '.join(s['lora_targets'])}; {s['rounds']} timed steps each, alternating; "
             f"devices {', '.join(s['devices'])}. Full fine-tuning trains what the config "
             f"trains ({s['variants'][FULL]['frozen_params']:,} parameters frozen by its optim "
             "settings, e.g. the demo's word-embedding table); LoRA freezes every base weight.",
             "",
             "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | "
                     + " | ".join(fmt.format(s["variants"][n][key]) for n in names) + " |")
    for label, key in (("step memory (XLA), MB", "step_mb"),
                       ("of which arguments (weights, optimizer state, batch), MB",
                        "argument_mb"),
                       ("of which temporaries (activations, gradients), MB", "temp_mb")):
        lines.append(f"| {label} | " + " | ".join(
            f"{s['variants'][n]['memory'].get(key, float('nan')):.0f}" for n in names) + " |")
    lines += ["", f"Step speed-up of LoRA (median of per-round ratios): "
              f"**{s['step_speedup']:.2f}x**; recompiles after the first step: "
              f"{s['compiles_after_first_step']}.", "", meta, ""]
    return lines
