"""The PyTorch peer of our train step, run as a worker process the benchmark drives step by step.

    python -m hybrid_jax.bench.torch_peer --model_dir EXPORTED --batches batches.npz [--threads N]

A plain PyTorch / sentence-transformers MultipleNegativesRankingLoss-style loop on our Hugging Face
export of the same weights: mean pooling, L2 normalisation, cosine / temperature, cross-entropy
against the in-batch positives, AdamW (no decay on biases and LayerNorm weights), clipping at the
same norm, the word-embedding table frozen, dropout on.  It runs in its own process so that the two
frameworks' thread pools never compete (each spins on the cores after its own work) and each
process's peak memory is its own.

Protocol (one JSON object per line on stdout): after loading it prints {"ready": ...}; each line
`step` on stdin runs one step on the next batch and prints {"seconds": s, "loss": l}; `quit`
prints {"max_rss_mb": m} and exits.  PyTorch is a benchmark-only dependency.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _reply(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _arguments(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model_dir", required=True)
    p.add_argument("--batches", required=True, help=".npz of query/passage ids and masks [n, b, L]")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--learning_rate", type=float, default=2e-5)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.1)
    return p.parse_args(argv)


def main(argv=None):
    a = _arguments(argv)
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModel

    transformers.logging.set_verbosity_error()  # the load report (no pooler: unused) is noise

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(a.model_dir, hidden_dropout_prob=a.dropout,
                                      attention_probs_dropout_prob=a.dropout)
    model.train()
    model.embeddings.word_embeddings.weight.requires_grad_(False)
    decay, no_decay = [], []
    for name, w in model.named_parameters():
        if w.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(w)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.learning_rate, eps=1e-8)
    data = np.load(a.batches)
    batches = [{k: torch.from_numpy(np.ascontiguousarray(data[k][i]).astype(np.int64))
                for k in ("query_ids", "query_mask", "passage_ids", "passage_mask")}
               for i in range(data["query_ids"].shape[0])]

    def embed(ids, mask):
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def step(b) -> float:
        q = embed(b["query_ids"], b["query_mask"])
        d = embed(b["passage_ids"], b["passage_mask"])
        scores = q @ d.T / a.temperature
        loss = torch.nn.functional.cross_entropy(scores, torch.arange(len(q)))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decay + no_decay, a.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    _reply({"ready": True, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "trainable_params": sum(w.numel() for w in decay + no_decay)})
    i = 0
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            t = time.perf_counter()
            loss = step(batches[i % len(batches)])
            _reply({"seconds": time.perf_counter() - t, "loss": loss})
            i += 1
        elif cmd == "quit":
            break
    from hybrid_jax.bench.step import max_rss_mb

    _reply({"max_rss_mb": max_rss_mb()})


if __name__ == "__main__":
    main()
