"""Ranking metrics from the ranks of each query's relevant candidates.

Every metric here needs only where the relevant candidates landed, so a query is described by
`ranks` (1-based ranks of its relevant candidates in the pool, `inf` where a top-k search did not
return one) and `gains` (their relevance grades, 1 for binary relevance). Batches of queries are
padded 2-D arrays: pad ranks with `inf` and gains with 0, and pass the true `n_relevant`.

Tie rule (exact ranks, `retrieval.search.exact_relevant_ranks`): pessimistic. A relevant
candidate ranks after every non-relevant candidate with an equal score; tied relevant candidates
are ordered by candidate index. So a model cannot earn credit from ties, and the metrics do not
depend on the order of the candidate list. (Top-k lists written to run.trec break ties by candidate index instead.)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hybrid_jax.retrieval.search import exact_relevant_ranks  # noqa: F401 (re-export)


def topk_relevant_ranks(topk_idx: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """Ranks [Q, Rmax] of relevant candidates inside searched top-k lists; inf if not returned."""
    r_max = max((len(r) for r in relevant), default=0)
    ranks = np.full((len(relevant), r_max), np.inf)
    for q, rel in enumerate(relevant):
        pos = {int(c): i + 1 for i, c in enumerate(topk_idx[q]) if c >= 0}
        for j, c in enumerate(rel):
            ranks[q, j] = pos.get(int(c), np.inf)
    return ranks


def _sorted(ranks: np.ndarray, gains: np.ndarray | None):
    ranks = np.atleast_2d(np.asarray(ranks, np.float64))
    order = np.argsort(ranks, axis=1, kind="stable")
    r = np.take_along_axis(ranks, order, axis=1)
    if gains is None:
        g = np.ones_like(r)
    else:
        g = np.take_along_axis(np.atleast_2d(np.asarray(gains, np.float64)), order, axis=1)
    return r, g


def average_precision(ranks, n_relevant, k: int | None = None) -> np.ndarray:
    """AP@k = (1/min(|R|, k)) * sum over ranks i <= k holding a relevant item of precision@i.
    k=None gives full AP (normaliser |R|). Relevant items never retrieved (inf) contribute 0."""
    r, _ = _sorted(ranks, None)
    n_rel = np.asarray(n_relevant, np.float64).reshape(-1)
    hit_no = np.arange(1, r.shape[1] + 1)[None, :]  # the j-th best relevant one sits at rank r_j
    limit = np.inf if k is None else k
    prec = np.where(r <= limit, hit_no / r, 0.0)
    denom = n_rel if k is None else np.minimum(n_rel, k)
    return prec.sum(axis=1) / np.maximum(denom, 1)


def recall_at(ranks, n_relevant, k: int) -> np.ndarray:
    r = np.atleast_2d(np.asarray(ranks, np.float64))
    return (r <= k).sum(axis=1) / np.maximum(np.asarray(n_relevant, np.float64).reshape(-1), 1)


def reciprocal_rank(ranks) -> np.ndarray:
    """1 / rank of the best-ranked relevant item (no cut-off; 0 if none was retrieved)."""
    r = np.atleast_2d(np.asarray(ranks, np.float64))
    best = r.min(axis=1) if r.shape[1] else np.full(r.shape[0], np.inf)
    return np.where(np.isfinite(best), 1.0 / best, 0.0)


def ndcg_at(ranks, gains, k: int = 10) -> np.ndarray:
    """nDCG@k with linear gains, DCG = sum rel / log2(rank + 1) (trec_eval / BEIR convention).
    The ideal ranking uses the gains of all the query's relevant items (the row of `gains`)."""
    r, g = _sorted(ranks, gains)
    disc = np.where(r <= k, 1.0 / np.log2(np.where(np.isfinite(r), r, 1.0) + 1.0), 0.0)
    dcg = (g * disc).sum(axis=1)
    ideal = -np.sort(-g, axis=1)[:, :k]
    idcg = (ideal / np.log2(np.arange(2, ideal.shape[1] + 2))[None, :]).sum(axis=1)
    return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), 0.0)


def query_metrics(ranks, n_relevant, gains=None, *, k: int = 20,
                  recall_ks: Sequence[int] = (1, 10, 100), ndcg_k: int = 10,
                  full_ap: bool = True) -> dict[str, np.ndarray]:
    """Per-query arrays of every metric, keyed e.g. 'map@20', 'map', 'recall@10', 'ndcg@10',
    'mrr'. `full_ap` only makes sense with exact ranks (top-k ranks truncate it)."""
    ranks = np.atleast_2d(np.asarray(ranks, np.float64))
    if gains is None:
        gains = np.where(np.arange(ranks.shape[1])[None, :] < np.asarray(n_relevant)[:, None],
                         1.0, 0.0)
    out = {f"map@{k}": average_precision(ranks, n_relevant, k)}
    if full_ap:
        out["map"] = average_precision(ranks, n_relevant, None)
    for rk in recall_ks:
        out[f"recall@{rk}"] = recall_at(ranks, n_relevant, rk)
    out[f"ndcg@{ndcg_k}"] = ndcg_at(ranks, gains, ndcg_k)
    out["mrr"] = reciprocal_rank(ranks)
    return out
