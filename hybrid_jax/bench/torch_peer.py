"""The PyTorch peer of our train step (and of our encoder), run as a worker process the benchmark
drives step by step.

    python -m hybrid_jax.bench.torch_peer --model_dir EXPORTED --batches batches.npz
        [--threads N] [--micro_batches K] [--autocast]
    python -m hybrid_jax.bench.torch_peer --model_dir EXPORTED --encode_texts texts.npz
        [--encode_batch 32] [--threads N] [--autocast]
    python -m hybrid_jax.bench.torch_peer --bmm BATCH,LENGTH,HEAD_DIM [--threads N]

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

# As losses.MASKED_LOGIT: finite (no inf - inf in log_softmax), exp() of it is exactly 0.
MASKED_LOGIT = -1e9
PAIR_INPUTS = ("query_ids", "query_mask", "passage_ids", "passage_mask")
NEGATIVE_INPUTS = ("negative_ids", "negative_mask", "negative_valid")


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


def _load_model(a):
    import torch
    import transformers
    from transformers import AutoModel

    transformers.logging.set_verbosity_error()  # the load report (no pooler: unused) is noise
    transformers.utils.logging.disable_progress_bar()  # and so is the weight-loading bar
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    return AutoModel.from_pretrained(a.model_dir, hidden_dropout_prob=a.dropout,
                                     attention_probs_dropout_prob=a.dropout)


def _embed(model, ids, mask, autocast: bool):
    """Mean pooling + L2 normalisation (our `mean` pooling); pooled in float32 under autocast
    too, as our encoder pools in float32 whatever its compute dtype."""
    import torch

    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    hidden = hidden.float()
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1)


# ----------------------------------------------------------------------------- train mode


def _load_batches(path: str) -> list:
    """Per-step dicts of torch tensors, pair axis first ([b, ...]): ids and masks int64,
    negative_valid bool.  The negative keys only when the file has them."""
    import numpy as np
    import torch

    data = np.load(path)
    keys = PAIR_INPUTS + (NEGATIVE_INPUTS if "negative_ids" in data else ())
    batches = []
    for i in range(data["query_ids"].shape[0]):
        batch = {k: torch.from_numpy(np.ascontiguousarray(data[k][i]).astype(np.int64))
                 for k in keys}
        if "negative_valid" in batch:
            batch["negative_valid"] = batch["negative_valid"] > 0
        batches.append(batch)
    return batches


def _encode_batch(model, batch: dict, autocast: bool) -> dict:
    """{'q', 'p'} [b, D] and, with hard negatives, 'n' [b * H, D] (pair-major, as ours: rows
    i * H .. i * H + H - 1 are pair i's), the negatives through the passage tower."""
    out = {"q": _embed(model, batch["query_ids"], batch["query_mask"], autocast),
           "p": _embed(model, batch["passage_ids"], batch["passage_mask"], autocast)}
    if "negative_ids" in batch:
        ids, mask = batch["negative_ids"], batch["negative_mask"]
        out["n"] = _embed(model, ids.reshape(-1, ids.shape[-1]),
                          mask.reshape(-1, mask.shape[-1]), autocast)
    return out


def _loss(emb: dict, negative_valid, temperature: float):
    """Cross-entropy over [in-batch positives ; every hard negative of the batch] (query ->
    passage only), padded negatives' logits set to MASKED_LOGIT (no probability, no gradient)."""
    import torch

    q = emb["q"]
    logits = q @ emb["p"].T / temperature
    if "n" in emb:
        neg = q @ emb["n"].T / temperature
        if negative_valid is not None:
            neg = neg.masked_fill(~negative_valid.reshape(1, -1), MASKED_LOGIT)
        logits = torch.cat([logits, neg], dim=1)
    return torch.nn.functional.cross_entropy(logits.float(), torch.arange(len(q)))


def _grads_direct(model, batch: dict, a) -> float:
    emb = _encode_batch(model, batch, a.autocast)
    loss = _loss(emb, batch.get("negative_valid"), a.temperature)
    loss.backward()
    return float(loss.detach())


def _grads_cached(model, batch: dict, a) -> float:
    """GradCache (sentence-transformers' CachedMultipleNegativesRankingLoss): the embeddings of
    K contiguous micro-batches without gradients, the loss and its gradient with respect to them
    on the full batch (so every query still sees every negative), then each micro-batch
    re-encoded with gradients and back-propagated with its slice of those gradients.  The
    parameter gradient is the full-batch one; activations are held for one micro-batch only."""
    import torch

    k = a.micro_batches
    b = batch["query_ids"].shape[0]
    # Pair axis first everywhere, so a row slice carries each pair's negatives along.
    chunks = [{key: v[j * b // k:(j + 1) * b // k] for key, v in batch.items()
               if key != "negative_valid"} for j in range(k)]
    rng_states, parts = [], []
    with torch.no_grad():
        for chunk in chunks:
            rng_states.append(torch.get_rng_state())
            parts.append(_encode_batch(model, chunk, a.autocast))
    emb = {key: torch.cat([p[key] for p in parts]).requires_grad_() for key in parts[0]}
    loss = _loss(emb, batch.get("negative_valid"), a.temperature)
    loss.backward()
    grads = {key: e.grad.split(e.shape[0] // k) for key, e in emb.items()}
    for j, (chunk, state) in enumerate(zip(chunks, rng_states)):
        torch.set_rng_state(state)  # the same dropout masks as this chunk's no-grad pass
        out = _encode_batch(model, chunk, a.autocast)
        torch.autograd.backward([out[key] for key in out], [grads[key][j] for key in out])
    return float(loss.detach())


def _optimizer(model, a):
    """AdamW over the trainable parameters (word embeddings frozen), no decay on biases and
    LayerNorm weights -> (optimizer, trainable parameter list)."""
    import torch

    model.embeddings.word_embeddings.weight.requires_grad_(False)
    decay, no_decay = [], []
    for name, w in model.named_parameters():
        if w.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(w)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.learning_rate, eps=1e-8)
    return opt, decay + no_decay


def _train_mode(a) -> tuple[dict, dict]:
    """-> (ready message, command handlers) of the train worker."""
    import torch

    from hybrid_jax.bench.step import cpu_seconds

    model = _load_model(a)
    model.train()
    opt, params = _optimizer(model, a)
    batches = _load_batches(a.batches)
    b = batches[0]["query_ids"].shape[0]
    if b % max(a.micro_batches, 1):
        raise SystemExit(f"torch_peer: batch {b} is not divisible by --micro_batches "
                         f"{a.micro_batches}")
    compute_grads = _grads_direct if a.micro_batches <= 1 else _grads_cached
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

    model = _load_model(a)
    model.eval()
    texts, batches, pad_id = _load_texts(a.encode_texts, a.encode_batch)
    last = []  # the embeddings of the latest pass

    def encode(_arg) -> dict:
        t = time.perf_counter()
        out = np.empty((len(texts), model.config.hidden_size), np.float32)
        with torch.inference_mode():
            for idx in batches:  # padding is part of the pass, as in sentence-transformers
                out[idx] = _embed(model, *_padded(texts, idx, pad_id), a.autocast).numpy()
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
    from hybrid_jax.bench.step import max_rss_mb

    _reply({"max_rss_mb": max_rss_mb()})


if __name__ == "__main__":
    main()
