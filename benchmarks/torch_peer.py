"""The PyTorch peer of our train step (and of our encoder), run as a worker process the benchmark
drives step by step.

    python -m benchmarks.torch_peer --model_dir EXPORTED --batches batches.npz
        [--threads N] [--micro_batches K] [--autocast]
    python -m benchmarks.torch_peer --model_dir EXPORTED --encode_texts texts.npz
        [--encode_batch 32] [--threads N] [--autocast]
    python -m benchmarks.torch_peer --bmm BATCH,LENGTH,HEAD_DIM [--threads N]

Train mode is a plain PyTorch / sentence-transformers MultipleNegativesRankingLoss-style loop on
our Hugging Face export of the same weights: mean pooling, L2 normalisation, cosine / temperature,
cross-entropy against the in-batch positives and, when the batches carry them (`negative_ids`,
`negative_mask` [n, b, H, Lp], `negative_valid` [n, b, H]), every hard negative of the batch as
extra columns, padded ones masked out (as `losses.contrastive_loss`); AdamW (no decay on biases
and LayerNorm weights), clipping at the same norm, the word-embedding table frozen, dropout on.
`--micro_batches K > 1` is exact gradient accumulation, GradCache-style like
sentence-transformers' CachedMultipleNegativesRankingLoss (and like our `grad_accum_steps`).
`--autocast` runs the forward passes under CPU bfloat16 autocast, PyTorch's own bf16 path.

Encode mode embeds pre-tokenised texts (`flat_ids` int32, `offsets` int64 [n + 1], `pad_id`) the
way sentence-transformers' `encode` does: longest first, batches padded to their longest text,
eval mode under `inference_mode`, the same pooling as the train step.

It runs in its own process so that the two frameworks' thread pools never compete (each spins on
the cores after its own work) and each process's peak memory is its own.

Protocol (one JSON object per line on stdout): after loading it prints {"ready": ...}.  Train
mode: each line `step` on stdin runs one step on the next batch and prints {"seconds": s,
"loss": l, "user_s": u, "system_s": k} (the step's CPU seconds, all threads).  Encode mode:
`encode` runs one full pass over the texts and prints {"seconds": s}; `save PATH` writes the
last pass's embeddings (float32 [n, D], input order) to PATH (.npy) and prints {"saved": PATH}.
Both: `quit` prints {"max_rss_mb": m} and exits; an unknown command
prints {"error": ...}.  `--bmm` times the attention scores product alone (`torch.bmm` of
[BATCH, LENGTH, HEAD_DIM] by its transpose, float32), prints {"median_s": s, "flops_per_s": f}
and exits.  PyTorch is a benchmark-only dependency.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks import torch_model


def _reply(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _arguments(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--bmm", help="BATCH,LENGTH,HEAD_DIM: time the attention scores product")
    mode.add_argument("--batches", help=".npz of query/passage ids and masks [n, b, L] "
                                        "(and optionally the hard-negative keys)")
    mode.add_argument("--encode_texts", help=".npz of ragged token ids: flat_ids, offsets, pad_id")
    p.add_argument("--encode_batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--micro_batches", type=int, default=1,
                   help="GradCache micro-batches per step (exact full-batch gradient)")
    p.add_argument("--autocast", action="store_true",
                   help="forward passes under torch.autocast('cpu', dtype=torch.bfloat16)")
    a = p.parse_args(argv)
    if not a.bmm and not a.model_dir:
        p.error("--model_dir is required with --batches and --encode_texts")
    return a


def _bmm_rate(a) -> dict:
    """Median seconds and FLOP/s of the scores product Q @ K^T over a [batch, length, head_dim]."""
    import numpy as np
    import torch

    b, n, d = (int(x) for x in a.bmm.split(","))
    q, k = (torch.randn(b, n, d) for _ in range(2))
    kt = k.transpose(1, 2)
    torch.bmm(q, kt)
    times = []
    for _ in range(20):
        t = time.perf_counter()
        torch.bmm(q, kt)
        times.append(time.perf_counter() - t)
    s = float(np.median(times))
    return {"median_s": s, "flops_per_s": 2.0 * b * n * n * d / s}


def _train_mode(a) -> tuple[dict, dict]:
    """-> (ready message, command handlers) of the train worker."""
    import torch

    from benchmarks.measure import cpu_seconds

    model = torch_model.load_model(a)
    model.train()
    opt, params = torch_model.optimizer(model, a)
    batches = torch_model.load_batches(a.batches)
    b = batches[0]["query_ids"].shape[0]
    if b % max(a.micro_batches, 1):
        raise SystemExit(f"torch_peer: batch {b} is not divisible by --micro_batches "
                         f"{a.micro_batches}")
    compute_grads = (torch_model.grads_direct if a.micro_batches <= 1
                     else torch_model.grads_cached)
    done = [0]  # steps run so far (the next batch is done[0] % len(batches))

    def step(_arg) -> dict:
        t, c = time.perf_counter(), cpu_seconds()
        loss = compute_grads(model, batches[done[0] % len(batches)], a)
        torch.nn.utils.clip_grad_norm_(params, a.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done[0] += 1
        user, system = cpu_seconds(since=c)
        return {"seconds": time.perf_counter() - t, "loss": loss, "user_s": user,
                "system_s": system}

    hard = batches[0]["negative_ids"].shape[1] if "negative_ids" in batches[0] else 0
    ready = {"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
             "autocast": a.autocast, "micro_batches": a.micro_batches, "hard_negatives": hard,
             "trainable_params": sum(w.numel() for w in params)}
    return ready, {"step": step}


# ----------------------------------------------------------------------------- encode mode


def _load_texts(path: str, batch_size: int) -> tuple[list, list, int]:
    """-> (per-text id arrays, batches of text indices longest first, pad id)."""
    import numpy as np

    data = np.load(path)
    flat, offsets = data["flat_ids"], data["offsets"]
    texts = [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    # Longest first, as sentence-transformers' encode: each batch pads to a similar length.
    order = np.argsort([-len(t) for t in texts], kind="stable")
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return texts, batches, int(data["pad_id"])


def _padded(texts: list, idx, pad_id: int):
    """Ids and mask [len(idx), longest] (int64) of the texts `idx`, padded with `pad_id`."""
    import numpy as np
    import torch

    width = max(1, max(len(texts[i]) for i in idx))
    ids = np.full((len(idx), width), pad_id, np.int64)
    mask = np.zeros((len(idx), width), np.int64)
    for row, i in enumerate(idx):
        ids[row, :len(texts[i])] = texts[i]
        mask[row, :len(texts[i])] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _encode_mode(a) -> tuple[dict, dict]:
    """-> (ready message, command handlers) of the encode worker."""
    import numpy as np
    import torch

    model = torch_model.load_model(a)
    model.eval()
    texts, batches, pad_id = _load_texts(a.encode_texts, a.encode_batch)
    last = []  # the embeddings of the latest pass

    def encode(_arg) -> dict:
        t = time.perf_counter()
        out = np.empty((len(texts), model.config.hidden_size), np.float32)
        with torch.inference_mode():
            for idx in batches:  # padding is part of the pass, as in sentence-transformers
                ids, mask = _padded(texts, idx, pad_id)
                out[idx] = torch_model.embed(model, ids, mask, a.autocast).numpy()
        seconds = time.perf_counter() - t
        last[:] = [out]
        return {"seconds": seconds}

    def save(path: str) -> dict:
        if not last:
            return {"error": "save before any encode pass"}
        np.save(path, last[0])
        return {"saved": path}

    ready = {"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
             "autocast": a.autocast, "texts": len(texts), "batches": len(batches)}
    return ready, {"encode": encode, "save": save}


def _serve(handlers: dict) -> None:
    """One reply per command line on stdin until `quit` (or end of input)."""
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        if cmd == "quit":
            break
        if cmd:
            handler = handlers.get(cmd)
            _reply(handler(arg.strip()) if handler else {"error": f"unknown command {cmd!r}"})


def main(argv=None):
    a = _arguments(argv)
    if a.bmm:
        import torch

        if a.threads:
            torch.set_num_threads(a.threads)
        _reply(_bmm_rate(a))
        return
    ready, handlers = (_encode_mode if a.encode_texts else _train_mode)(a)
    _reply(ready)
    _serve(handlers)
    from benchmarks.measure import max_rss_mb

    _reply({"max_rss_mb": max_rss_mb()})


if __name__ == "__main__":
    main()
