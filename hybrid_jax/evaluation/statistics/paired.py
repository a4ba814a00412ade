"""Paired tests over queries: bootstrap CI and p-value, randomisation test, Holm.

A run's scores are per-query arrays aligned to the same query order. Several seeds of a run may be
given (a list of arrays, or [S, n]); queries are then resampled jointly for every seed, so the
per-query difference is pooled over seeds: d_q = mean_seeds(a_q) - mean_seeds(b_q). With
`resample_seeds=True` the seeds are also drawn with replacement in each bootstrap replicate, which
widens the interval by the seed-to-seed variance (seeds.py has the two-level bootstrap the second
edition of the study registered).

Optional structure: `clusters` (resampling units: LAReQA questions share an id across languages and
are correlated, so they are drawn together) and `strata` (the statistic is then the macro average:
the mean over strata of the per-stratum mean, matching macro-averaged metrics).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass
class PairedResult:
    mean_a: float
    mean_b: float
    diff: float          # statistic(a) - statistic(b)
    ci_low: float
    ci_high: float
    p_bootstrap: float
    p_permutation: float
    n_queries: int
    n_clusters: int
    n_seeds_a: int
    n_seeds_b: int

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _runs(x) -> np.ndarray:
    """[S, n] from one array [n], a list of arrays, or [S, n]."""
    arr = np.asarray(x, np.float64) if not isinstance(x, (list, tuple)) \
        else np.stack([np.asarray(v, np.float64) for v in x])
    return arr[None, :] if arr.ndim == 1 else arr


class Design:
    """Cluster and stratum indices, and the (macro) mean of per-query values under weights."""

    def __init__(self, n: int, clusters=None, strata=None):
        self.cl = np.unique(np.asarray(clusters), return_inverse=True)[1].reshape(-1) \
            if clusters is not None else np.arange(n)
        self.n_clusters = int(self.cl.max()) + 1 if n else 0
        st = np.unique(np.asarray(strata), return_inverse=True)[1].reshape(-1) \
            if strata is not None else np.zeros(n, np.int64)
        self.onehot = np.zeros((n, int(st.max()) + 1 if n else 1))
        self.onehot[np.arange(n), st] = 1.0

    def stat(self, values: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """values [B, n] or [n], weights [B, n] -> macro means [B] (empty strata skipped)."""
        num = (weights * values) @ self.onehot
        den = weights @ self.onehot
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmean(np.where(den > 0, num / den, np.nan), axis=-1)


def as_pair(a, b):
    A, B = _runs(a), _runs(b)
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"runs cover different numbers of queries ({A.shape[1]} vs {B.shape[1]})")
    if not (np.isfinite(A).all() and np.isfinite(B).all()):
        raise ValueError("per-query scores must be finite (drop skipped queries first)")
    return A, B


def paired_bootstrap(a, b, *, clusters=None, strata=None, n_resamples: int = 10_000,
                     confidence: float = 0.95, seed: int = 0, resample_seeds: bool = False,
                     chunk: int = 250) -> tuple[float, float, float, float]:
    """(diff, ci_low, ci_high, p): percentile CI of statistic(a) - statistic(b); two-sided p from
    the bootstrap distribution shifted to the null, p = (1 + #|d* - d| >= |d|) / (B + 1)."""
    A, B = as_pair(a, b)
    n = A.shape[1]
    des = Design(n, clusters, strata)
    ones = np.ones(n)
    d_obs = float(des.stat(A.mean(0) - B.mean(0), ones))
    rng = np.random.default_rng(seed)
    boots = []
    for s in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - s)
        counts = rng.multinomial(des.n_clusters, np.full(des.n_clusters, 1 / des.n_clusters), m)
        w = counts[:, des.cl].astype(np.float64)
        if resample_seeds and (len(A) > 1 or len(B) > 1):
            ca = rng.multinomial(len(A), np.full(len(A), 1 / len(A)), m) / len(A)
            cb = rng.multinomial(len(B), np.full(len(B), 1 / len(B)), m) / len(B)
            d = ca @ A - cb @ B
        else:
            d = np.broadcast_to(A.mean(0) - B.mean(0), (m, n))
        boots.append(des.stat(d, w))
    boots = np.concatenate(boots)
    alpha = (1 - confidence) / 2
    lo, hi = np.nanquantile(boots, [alpha, 1 - alpha])
    p = (1 + np.sum(np.abs(boots - d_obs) >= abs(d_obs) - 1e-12)) / (len(boots) + 1)
    return d_obs, float(lo), float(hi), float(min(1.0, p))


def permutation_test(a, b, *, clusters=None, strata=None, n_resamples: int = 10_000,
                     seed: int = 0, chunk: int = 250) -> tuple[float, float]:
    """(diff, p): paired randomisation test swapping the two runs' scores per cluster (a sign
    flip of the per-query difference); two-sided, p = (1 + #|d_perm| >= |d|) / (B + 1)."""
    A, B = as_pair(a, b)
    n = A.shape[1]
    des = Design(n, clusters, strata)
    d = A.mean(0) - B.mean(0)
    ones = np.ones(n)
    d_obs = float(des.stat(d, ones))
    rng = np.random.default_rng(seed)
    hits = 0
    for s in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - s)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(m, des.n_clusters))[:, des.cl]
        perm = des.stat(signs * d, np.broadcast_to(ones, (m, n)))
        hits += int(np.sum(np.abs(perm) >= abs(d_obs) - 1e-12))
    return d_obs, float(min(1.0, (1 + hits) / (n_resamples + 1)))


def compare_runs(a, b, *, clusters=None, strata=None, n_resamples: int = 10_000,
                 confidence: float = 0.95, seed: int = 0,
                 resample_seeds: bool = False) -> PairedResult:
    A, B = as_pair(a, b)
    des = Design(A.shape[1], clusters, strata)
    ones = np.ones(A.shape[1])
    d, lo, hi, p_b = paired_bootstrap(A, B, clusters=clusters, strata=strata,
                                      n_resamples=n_resamples, confidence=confidence, seed=seed,
                                      resample_seeds=resample_seeds)
    _, p_p = permutation_test(A, B, clusters=clusters, strata=strata, n_resamples=n_resamples,
                              seed=seed + 1)
    return PairedResult(float(des.stat(A.mean(0), ones)), float(des.stat(B.mean(0), ones)), d,
                        lo, hi, p_b, p_p, int(A.shape[1]), des.n_clusters, len(A), len(B))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN passes through."""
    p = np.asarray(pvalues, np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out


def add_holm(rows: Sequence[dict], key: str = "p_holm") -> None:
    """Sets row[key] to the Holm-adjusted `p_bootstrap` over `rows` (one family)."""
    for r, p in zip(rows, holm([r["p_bootstrap"] for r in rows])):
        r[key] = float(p)
