"""Train-step benchmark: our step against the PyTorch peer, side by side.

The JAX step is the real one (`train.run_setup.setup` -> `train.runner.Runner`, the run's config,
real batches from the input pipeline); the PyTorch peer (benchmarks/torch_peer.py) trains the same
weights on the same batches with the same loss in its own process.  Steps alternate JAX,
PyTorch, JAX, ... so both see the same machine load; medians over the rounds and the per-round
ratio are reported.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from benchmarks.measure import count_compiles, cpu_seconds, cpu_summary, max_rss_mb, median
from benchmarks.peer import TorchPeer, export_peer_model, torch_available
from hybrid_jax.train import memory_hooks


def encoder_flops(config, batch: int, length: int) -> float:
    """Forward FLOPs of one tower on [batch, length] (padded) tokens: the matmuls of every layer
    (Q, K, V, output, FFN in and out) and of attention (scores and context)."""
    d, ff = config.hidden_size, config.intermediate_size
    tokens = batch * length
    per_layer = 2 * tokens * (4 * d * d + 2 * d * ff) + 2 * 2 * batch * length * length * d
    return float(config.num_layers * per_layer)


def train_step_flops(config, batch: int, query_len: int, passage_len: int,
                     hard_negatives: int = 0) -> float:
    """Model FLOPs of one training step: forward + backward (2x forward) of both towers, the
    `hard_negatives` per pair included (passage tower, passage length; padded ones are encoded
    too).  GradCache's extra no-gradient forward pass is not model work and is not counted."""
    passages = batch * (1 + hard_negatives)
    return 3 * (encoder_flops(config, batch, query_len)
                + encoder_flops(config, passages, passage_len))


def setup_run(config, tmp: str):
    """The real training run (pretrained weights, runner, data iterator) in a scratch workdir."""
    from hybrid_jax.models.from_config import load_model
    from hybrid_jax.train import run_setup

    pretrained = load_model(config)
    return pretrained, run_setup.setup(config, os.path.join(tmp, "run"), pretrained)


def batch_shapes(batches: list) -> dict:
    """Batch size, query and passage lengths, hard negatives per pair, and the padded and
    (mean) real tokens per step of the benchmark's batches."""
    b, lq = batches[0]["query_ids"].shape
    lp = batches[0]["passage_ids"].shape[1]
    hard = batches[0]["negative_ids"].shape[1] if "negative_ids" in batches[0] else 0
    masks = ("query_mask", "passage_mask", "negative_mask")  # negatives are encoded too
    real_tokens = float(np.mean([sum(batch[k].sum() for k in masks if k in batch)
                                 for batch in batches]))
    return dict(batch=b, query_len=lq, passage_len=lp, hard_negatives=hard,
                padded_tokens_per_step=b * (lq + lp * (1 + hard)),
                real_tokens_per_step=real_tokens)


def train_step_benchmark(config, rounds: int = 10, n_batches: int = 4, peer: bool = True,
                         peak: dict | None = None) -> dict:
    """Median seconds per step of our step (and the peer's), throughput, FLOP/s, compile count."""
    import jax

    out: dict = {"devices": [str(d) for d in jax.local_devices()], "rounds": rounds}
    # The step loop runs under the allocator set-up hybrid_jax.train's loop uses.
    with tempfile.TemporaryDirectory(prefix="hybrid_jax_step_") as tmp, \
            count_compiles() as compiles, memory_hooks.step_loop():
        t = time.perf_counter()
        pretrained, run = setup_run(config, tmp)
        pretrained = run.pretrained  # as a training run holds it: no host copy of the weights
        out["setup_s"] = time.perf_counter() - t
        batches = [next(run.iterator) for _ in range(n_batches)]  # the pipeline is not timed here
        out.update(batch_shapes(batches))

        state = run.state
        cpu = []  # (user, system) CPU seconds of each step, this process's threads together

        def jax_step(i):
            nonlocal state
            t0, c0 = time.perf_counter(), cpu_seconds()
            state, metrics = run.runner(state, run.frozen,
                                        run.runner.shard_batch(batches[i % n_batches]))
            loss = float(jax.device_get(metrics["loss"]).reshape(-1)[0])
            cpu.append(cpu_seconds(since=c0))
            return time.perf_counter() - t0, loss

        first_s, first_loss = jax_step(0)
        cpu.clear()
        out["first_step_s"] = first_s              # compile + one step
        out["compiles_first_step"] = len(compiles)
        out["compile_s"] = float(sum(compiles))
        n_before = len(compiles)

        torch_peer = _maybe_peer(config, pretrained, batches, tmp, peer, out)

        jax_s, torch_s, ratios, losses = [], [], [], {"jax": [first_loss], "torch": []}
        peer_cpu = []
        for r in range(rounds):
            s, loss = jax_step(r + 1)
            jax_s.append(s)
            losses["jax"].append(loss)
            if torch_peer is not None:
                reply = torch_peer.step()
                torch_s.append(reply["seconds"])
                peer_cpu.append((reply["user_s"], reply["system_s"]))
                losses["torch"].append(reply["loss"])
                ratios.append(reply["seconds"] / s)
        out["compiles_after_first_step"] = len(compiles) - n_before
        if torch_peer is not None:
            out["peer"]["max_rss_mb"] = torch_peer.close()["max_rss_mb"]
        out["max_rss_mb"] = max_rss_mb()

    out["losses"] = losses
    out.update(cpu_summary(cpu, jax_s))
    if peer_cpu:
        out["peer"].update(cpu_summary(peer_cpu, torch_s))
    _summarise(out, pretrained.config, jax_s, torch_s, ratios, peak)
    return out


def _maybe_peer(config, pretrained, batches: list, tmp: str, peer: bool, out: dict):
    """The started peer (its info in out['peer']), or None when off or torch is missing."""
    if peer and torch_available():
        # bfloat16 runs: the peer's forward passes under its own bf16 path (CPU autocast)
        autocast = config.model.get("compute_dtype", "float32") == "bfloat16"
        torch_peer = _start_peer(config, pretrained, batches, tmp, autocast=autocast)
        out["peer"] = dict(torch_peer.info)
        return torch_peer
    if peer:
        out["peer"] = {"skipped": "torch/transformers not installed"}
    return None


def _start_peer(config, pretrained, batches: list, tmp: str,
                autocast: bool = False) -> TorchPeer:
    """The PyTorch peer on the same weights (exported to HF format) and the same batches (their
    hard negatives included), accumulating over the run's `optim.grad_accum_steps` as ours does."""
    from hybrid_jax.train.step import MODEL_INPUTS, NEGATIVE_INPUTS

    model_dir = export_peer_model(config, tmp)
    batch_file = os.path.join(tmp, "batches.npz")
    keys = [k for k in MODEL_INPUTS + NEGATIVE_INPUTS if k in batches[0]]
    np.savez(batch_file, **{k: np.stack([x[k] for x in batches]) for k in keys})
    micro_batches = int(config.optim.get("grad_accum_steps", 1) or 1)
    # the dropout our step trains with (the model's, or the config's override)
    peer = TorchPeer(model_dir, batch_file, os.cpu_count() or 1, config,
                     float(pretrained.config.hidden_dropout), autocast=autocast,
                     micro_batches=micro_batches)
    peer.step()  # warm-up (allocator, thread pool)
    return peer


def _summarise(out: dict, model_config, jax_s: list, torch_s: list, ratios: list,
               peak: dict | None) -> None:
    """Medians, throughput and FLOP/s of the timed rounds into `out`."""
    b, lq, lp = out["batch"], out["query_len"], out["passage_len"]
    step_s = median(jax_s)
    flops = train_step_flops(model_config, b, lq, lp, out["hard_negatives"])
    out.update(step_s=step_s, step_s_all=jax_s, steps_per_s=1 / step_s, examples_per_s=b / step_s,
               padded_tokens_per_s=out["padded_tokens_per_step"] / step_s,
               real_tokens_per_s=out["real_tokens_per_step"] / step_s,
               model_flops_per_step=flops, model_flops_per_s=flops / step_s)
    if peak:
        out["fraction_of_matmul_peak"] = out["model_flops_per_s"] / peak["flops_per_s"]
    if torch_s:
        out["peer"].update(step_s=median(torch_s), step_s_all=torch_s,
                           examples_per_s=b / median(torch_s))
        # > 1: our step is faster.  Median of per-round ratios (each pair ran back to back).
        out["speedup_vs_peer"] = median(ratios)
