"""Language bias as rank distance (arXiv 2408.10536 after LAReQA).

In the multi setting (one pool of every language's candidates) a query's relevant set holds its
answer sentence in each language. Rank distance = rank of the worst-ranked relevant candidate minus
rank of the best-ranked one, using exact ranks over the whole pool (never ANN top-k, which would
truncate it). An unbiased model ranks all translations of the answer together: distance near
|R| - 1. Queries with fewer than two relevant candidates have no distance and are skipped (NaN).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def rank_distance(exact_ranks: np.ndarray) -> np.ndarray:
    """Per-query worst minus best rank [Q]; NaN where fewer than two ranks are finite."""
    r = np.atleast_2d(np.asarray(exact_ranks, np.float64))
    finite = np.isfinite(r)
    n = finite.sum(axis=1)
    worst = np.where(finite, r, -np.inf).max(axis=1, initial=-np.inf)
    best = np.where(finite, r, np.inf).min(axis=1, initial=np.inf)
    return np.where(n >= 2, worst - best, np.nan)


def summarise(distances: np.ndarray, languages: Sequence[str]) -> dict:
    """Mean per query language (skipping NaN), macro = mean over languages, micro = over queries."""
    d = np.asarray(distances, np.float64)
    langs = np.asarray(languages)
    per = {}
    for lang in sorted(set(langs.tolist())):
        v = d[(langs == lang) & np.isfinite(d)]
        if len(v):
            per[lang] = {"rank_distance": float(v.mean()), "n_queries": int(len(v))}
    ok = np.isfinite(d)
    return {
        "macro": float(np.mean([p["rank_distance"] for p in per.values()])) if per else None,
        "micro": float(d[ok].mean()) if ok.any() else None,
        "per_language": per,
    }
