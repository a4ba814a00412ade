"""Encoding benchmark: the evaluation encoder's variants against the PyTorch peer, alternating.

Every variant encodes the same XQuAD-R candidate sentences with the same weights; each round
times every variant once, back to back, so all see the same machine load.  Reported: texts/s
(median of rounds), the per-round ratio of the peer's time to ours, and how closely the
variants' embeddings agree with our float32 path (cosine per text).
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np

from benchmarks import peer as peer_process

BASELINE = "default buckets, fixed rows, float32"


def _variants(bundle, config) -> dict:
    """name -> (bundle, encode_texts keyword arguments): the default buckets (32, 64, 128, ...)
    as the baseline, then the config's eval settings and their alternatives."""
    from hybrid_jax.retrieval.encode import DEFAULT_BUCKETS

    e = config.eval
    buckets = tuple(e.get("buckets", DEFAULT_BUCKETS))
    budget = int(e.get("token_budget", 0)) or 4096
    rows = dict(buckets=buckets, batch_size=int(e.batch_size), token_budget=0)
    named = f"buckets {list(buckets)}"
    return {BASELINE: (bundle, {**rows, "buckets": DEFAULT_BUCKETS}),
            f"{named}, fixed rows, float32": (bundle, rows),
            f"{named}, token budget {budget}, float32": (bundle, {**rows, "token_budget": budget}),
            f"{named}, fixed rows, bfloat16": (bundle.with_compute_dtype("bfloat16"), rows),
            "one padded length, float32": (bundle, {**rows, "buckets": ()})}


def _sample(config, bundle, n: int) -> list[str]:
    from hybrid_jax.data import lareqa

    ds = lareqa.load_lareqa(config.data.dataset_dir)
    pick = np.random.default_rng(0).choice(len(ds.candidates), size=min(n, len(ds.candidates)),
                                           replace=False)
    return [ds.candidates[i].text for i in pick]


def _start_peer(config, bundle, texts, max_length, batch, autocast, tmp):
    model_dir = peer_process.export_peer_model(config, tmp)
    # the same token ids ours encodes (prefix, special tokens, truncation at max_length)
    ids, mask = bundle.tokenizer([bundle.prefix("passage") + t for t in texts], max_length)
    id_lists = [row[:m.sum()].tolist() for row, m in zip(ids, mask)]
    texts_file = os.path.join(tmp, "texts.npz")
    peer_process.write_ragged_ids(texts_file, id_lists, bundle.tokenizer.pad_id)
    peer = peer_process.TorchEncodePeer(model_dir, texts_file, os.cpu_count() or 1, batch,
                                        autocast)
    peer.encode()  # warm-up: thread pool, allocator
    return peer


def _cosines(a: np.ndarray, b: np.ndarray) -> dict:
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"cosine_min": float(cos.min()), "cosine_median": float(np.median(cos))}


def encode_benchmark(config, n_texts: int = 512, repeats: int = 3, peer: bool = True,
                     peer_bf16: bool = False) -> dict:
    """Texts/s of each variant and of the peer (float32; bfloat16 autocast with `peer_bf16`)."""
    from benchmarks.peer import torch_available
    from hybrid_jax.models.from_config import load_model
    from hybrid_jax.retrieval.encode import encode_texts

    pretrained = load_model(config)
    bundle = pretrained.bundle(tied=True)
    texts = _sample(config, bundle, n_texts)
    max_length = min(int(config.eval.max_length), bundle.config.max_length)
    lengths = bundle.tokenizer.lengths([bundle.prefix("passage") + t for t in texts])
    out = {"texts": len(texts), "max_length": max_length, "batch_size": int(config.eval.batch_size),
           "token_length_p50": float(np.percentile(lengths, 50)),
           "token_length_p95": float(np.percentile(lengths, 95)), "variants": {}}
    runs = {}
    for name, (b, kw) in _variants(bundle, config).items():
        runs[name] = (lambda b=b, kw=kw: encode_texts(
            texts, tokenizer=b.tokenizer, apply_fn=b.apply_fn("passage"), params=b.params,
            prefix=b.prefix("passage"), max_length=max_length, progress=False, **kw))
    embeddings = {name: run() for name, run in runs.items()}  # compiles every shape untimed
    with tempfile.TemporaryDirectory(prefix="hybrid_jax_encode_") as tmp:
        peers = {}
        if peer and torch_available():
            for tag, autocast in [("float32", False)] + ([("bfloat16", True)] if peer_bf16 else []):
                peers[f"PyTorch peer, {tag}"] = _start_peer(
                    config, bundle, texts, max_length, int(config.eval.batch_size),
                    autocast, tmp)
        elif peer:
            out["peer"] = {"skipped": "torch/transformers not installed"}
        times = {name: [] for name in list(runs) + list(peers)}
        for _ in range(repeats):
            for name, run in runs.items():
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
            for name, p in peers.items():
                times[name].append(p.encode()["seconds"])
        for name, p in peers.items():
            path = os.path.join(tmp, "peer.npy")
            p.save(path)
            embeddings[name] = np.load(path)
            out.setdefault("peer_max_rss_mb", {})[name] = p.close()["max_rss_mb"]
    _summarise(out, times, embeddings, len(texts))
    return out


def _summarise(out: dict, times: dict, embeddings: dict, n: int) -> None:
    base = embeddings[BASELINE]
    for name, ts in times.items():
        s = float(np.median(ts))
        v = {"median_s": s, "texts_per_s": n / s, "all_s": ts}
        v.update(_cosines(embeddings[name], base))
        out["variants"][name] = v
    ours = [k for k in times if not k.startswith("PyTorch")]
    best = max(ours, key=lambda k: out["variants"][k]["texts_per_s"])
    out["fastest"] = best
    out["fastest_over_baseline"] = out["variants"][best]["texts_per_s"] / out["variants"][
        BASELINE]["texts_per_s"]
    peer = "PyTorch peer, float32"
    if peer in times:
        # median of per-round ratios (each round ran both back to back); > 1: ours is faster
        out["baseline_over_peer"] = float(np.median(np.divide(times[peer], times[BASELINE])))
        out["fastest_over_peer"] = float(np.median(np.divide(times[peer], times[best])))
    peer16, ours16 = "PyTorch peer, bfloat16", [k for k in ours if k.endswith("bfloat16")]
    if peer16 in times and ours16:
        # frameworks compared at the same precision too: our bfloat16 against the peer's autocast
        out["bf16_over_peer_bf16"] = float(np.median(np.divide(times[peer16],
                                                               times[ours16[0]])))
