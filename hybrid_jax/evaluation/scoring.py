"""Score one retrieval pool: queries against a candidate pool, per-query metrics out.

Exact search ("auto" picks it unless there are many queries and a large pool) gives exact ranks
under the pessimistic tie rule (metrics.py). ScaNN gives ranks inside its top-`depth` lists; the
@k metrics then come from those lists, and ScaNN's recall@depth against exact search on (a
sample of) the same queries is recorded so the approximation is visible in the report.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from hybrid_jax.evaluation import metrics as M
from hybrid_jax.retrieval import search as S


@dataclasses.dataclass
class PoolResult:
    per_query: dict[str, np.ndarray]     # metric name -> [Q] aligned with the input queries
    exact_ranks: np.ndarray | None       # [Q, Rmax] inf-padded, when computed
    topk_idx: np.ndarray | None          # [Q, depth] pool indices, best first (-1 = none)
    topk_scores: np.ndarray | None
    info: dict                           # method, pool size, ScaNN recall


def score_pool(q_vecs: np.ndarray, c_vecs: np.ndarray, relevant: Sequence[np.ndarray],
               gains: Sequence[np.ndarray] | None = None, *, k: int = 20,
               recall_ks: Sequence[int] = (1, 10, 100), ndcg_k: int = 10,
               search: str = "auto", depth: int = 100, want_topk: bool = False,
               want_exact: bool = True, recall_check_queries: int = 1000,
               seed: int = 0) -> PoolResult:
    """Every query must have at least one relevant candidate (callers skip the others)."""
    n_rel = np.array([len(r) for r in relevant])
    if (n_rel == 0).any():
        raise ValueError("score_pool: every query needs a relevant candidate in the pool")
    depth = max(depth, k, ndcg_k, *recall_ks)
    method = S.choose_method(len(c_vecs), search, len(q_vecs))
    info = {"method": method, "pool_size": int(len(c_vecs)), "n_queries": int(len(q_vecs))}
    g = None
    if gains is not None:
        g = np.zeros((len(relevant), max(n_rel.max(), 1)))
        for i, gi in enumerate(gains):
            g[i, :len(gi)] = gi

    exact = topk_idx = topk_scores = None
    if method == "scann":
        if want_exact:
            exact = S.exact_relevant_ranks(q_vecs, c_vecs, relevant)
        searcher = S.ScannSearcher(c_vecs, k=depth)
        topk_idx, topk_scores = searcher.search(q_vecs, depth)
        ranks = M.topk_relevant_ranks(topk_idx, relevant)
        sample = np.random.default_rng(seed).permutation(len(q_vecs))[:recall_check_queries]
        e_idx, _ = S.ExactSearcher(c_vecs).search(q_vecs[sample], depth)
        info[f"scann_recall@{depth}"] = S.recall_vs_exact(topk_idx[sample], e_idx, depth)
        info["scann_recall_queries"] = int(len(sample))
        info["scann_params"] = searcher.params
    else:
        # One pass over the scores gives both the exact ranks and (if wanted) the top-k lists.
        topk_idx, topk_scores, exact = S.ExactSearcher(c_vecs, block=256).search_and_rank(
            q_vecs, depth if want_topk else 0, relevant)
        if not want_topk:
            topk_idx = topk_scores = None
        ranks = exact
    per_query = M.query_metrics(ranks, n_rel, g, k=k, recall_ks=recall_ks, ndcg_k=ndcg_k,
                                full_ap=False)
    if exact is not None:
        per_query["map"] = M.average_precision(exact, n_rel, None)
    return PoolResult(per_query, exact, topk_idx, topk_scores, info)
