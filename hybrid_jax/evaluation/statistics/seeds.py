"""Seed-aware paired comparisons: two-level bootstrap, TOST equivalence, verdicts, MDE.

Two conditions A and B, each trained with several seeds and scored per question on the same
questions: a [S_a, Q], b [S_b, Q]. The estimand is mean(A) - mean(B) over seeds and questions
(or, with `strata`, the macro mean over strata of the per-stratum means, as in paired.py).

Each bootstrap replicate draws
1. seeds with replacement, independently for A and B (seed s of A and seed s of B are different
   training runs with nothing in common, so there is no pairing to keep); `paired_seeds=True`
   draws one seed index set for both, for designs where seed s fixes the same data order and
   initialisation in both conditions;
2. question clusters with replacement (a question and its translations share a cluster id and
   move together), the same draw for A and B, because the questions are paired.

Everything else (p-values, TOST, verdicts, MDE) is read off that one bootstrap distribution, so the
intervals, the tests and the verdicts cannot disagree. docs/evaluation.md, "Seed-aware intervals
and equivalence", states the rules; design.py says what precision a design reaches.
"""
from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist
from typing import Sequence

import numpy as np

from hybrid_jax.evaluation.statistics import paired

LOSS, EQUIVALENT, INCONCLUSIVE, GAIN = ("significant loss", "equivalent within ±delta",
                                        "inconclusive", "significant gain")
VERDICTS = (LOSS, EQUIVALENT, INCONCLUSIVE, GAIN)


def z_quantile(p: float) -> float:
    return NormalDist().inv_cdf(p)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Index draws [m, k] in [0, n) -> how often each index was drawn, [m, n] float."""
    m = idx.shape[0]
    flat = (idx + n * np.arange(m)[:, None]).ravel()
    return np.bincount(flat, minlength=m * n).reshape(m, n).astype(np.float64)


class _Cells:
    """Per-seed score totals of every (cluster, stratum) cell and the cell sizes. A replicate is a
    weighted sum of cells, so it costs O(K * H * S) whatever the number of questions."""

    def __init__(self, A: np.ndarray, B: np.ndarray, clusters, strata):
        self.design = des = paired.Design(A.shape[1], clusters, strata)
        self.K, self.H = des.n_clusters, des.onehot.shape[1]
        self.size = np.zeros((self.K, self.H))
        np.add.at(self.size, des.cl, des.onehot)
        self.a, self.b = self._totals(A), self._totals(B)
        self.S_a, self.S_b = len(A), len(B)

    def _totals(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((self.K, self.H, len(X)))
        np.add.at(out, self.design.cl, self.design.onehot[:, :, None] * X.T[:, None, :])
        return out.reshape(self.K, -1)

    def stat(self, c: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
        """c [m, K] cluster counts; wa [m, S_a], wb [m, S_b] seed weights summing to 1 -> [m]."""
        m = len(c)
        num = (np.einsum("mhs,ms->mh", (c @ self.a).reshape(m, self.H, self.S_a), wa)
               - np.einsum("mhs,ms->mh", (c @ self.b).reshape(m, self.H, self.S_b), wb))
        den = c @ self.size
        if self.H == 1:
            return num[:, 0] / den[:, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nanmean(np.where(den > 0, num / den, np.nan), axis=1)

    def from_draws(self, seeds_a, seeds_b, cluster_draws) -> np.ndarray:
        seeds_a, seeds_b = np.asarray(seeds_a), np.asarray(seeds_b)
        return self.stat(_counts(np.asarray(cluster_draws), self.K),
                         _counts(seeds_a, self.S_a) / seeds_a.shape[1],
                         _counts(seeds_b, self.S_b) / seeds_b.shape[1])

    def observed(self) -> float:
        return float(self.stat(np.ones((1, self.K)), np.full((1, self.S_a), 1 / self.S_a),
                               np.full((1, self.S_b), 1 / self.S_b))[0])


@dataclasses.dataclass(frozen=True)
class SeedBootstrap:
    """A two-level bootstrap of A - B: the estimate, its replicates and what is read off them.

    One-sided bootstrap p-values are P*(d* <= x) and P*(d* >= x), each (1 + count) / (R + 1): the
    p-values that invert the percentile interval, so p < alpha exactly when the interval at the
    matching level excludes x (up to the resolution 1 / (R + 1))."""
    diff: float
    ci_low: float
    ci_high: float
    se: float
    p_value: float
    confidence: float
    n_seeds_a: int
    n_seeds_b: int
    n_questions: int
    n_clusters: int
    paired_seeds: bool
    replicates: np.ndarray = dataclasses.field(repr=False, compare=False)

    @classmethod
    def from_replicates(cls, diff: float, replicates, *, confidence: float = 0.95,
                        n_seeds_a: int = 0, n_seeds_b: int = 0, n_questions: int = 0,
                        n_clusters: int = 0, paired_seeds: bool = False) -> "SeedBootstrap":
        r = np.asarray(replicates, np.float64).reshape(-1)
        if len(r) < 2 or not np.isfinite(r).all():
            raise ValueError("need at least two finite bootstrap replicates")
        tmp = cls(float(diff), np.nan, np.nan, float(np.std(r, ddof=1)), np.nan, confidence,
                  n_seeds_a, n_seeds_b, n_questions, n_clusters, paired_seeds, r)
        lo, hi = tmp.ci(confidence)
        return dataclasses.replace(tmp, ci_low=lo, ci_high=hi, p_value=tmp.p_two_sided(0.0))

    def ci(self, confidence: float) -> tuple[float, float]:
        """Percentile interval: the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles."""
        q = (1 - confidence) / 2
        lo, hi = np.quantile(self.replicates, [q, 1 - q])
        return float(lo), float(hi)

    def p_below(self, x: float) -> float:
        """One-sided p for H1: diff > x (large when many replicates lie at or below x)."""
        return float((1 + np.sum(self.replicates <= x)) / (len(self.replicates) + 1))

    def p_above(self, x: float) -> float:
        """One-sided p for H1: diff < x."""
        return float((1 + np.sum(self.replicates >= x)) / (len(self.replicates) + 1))

    def p_two_sided(self, x: float = 0.0) -> float:
        return min(1.0, 2 * min(self.p_below(x), self.p_above(x)))

    def tost(self, delta: float, alpha: float = 0.05) -> dict:
        """Two one-sided tests of |diff| < delta at level alpha: p_lower (H0: diff <= -delta),
        p_upper (H0: diff >= +delta), p = max of the two, and the (1 - 2 alpha) interval;
        equivalent when that interval lies inside (-delta, +delta)."""
        if not delta > 0:
            raise ValueError(f"equivalence margin must be positive, got {delta}")
        lo, hi = self.ci(1 - 2 * alpha)
        p_lo, p_hi = self.p_below(-delta), self.p_above(delta)
        return {"delta": float(delta), "p_tost": max(p_lo, p_hi), "p_tost_lower": p_lo,
                "p_tost_upper": p_hi, "tost_ci_low": lo, "tost_ci_high": hi,
                "tost_equivalent": bool(-delta < lo and hi < delta)}

    def summary(self, delta: float, alpha: float = 0.05, power: float = 0.8) -> dict:
        """One comparison's row: estimate, (1 - alpha) interval and its half-width, SE, p, TOST at
        +-delta, and the MDE at (alpha, power). add_verdicts turns a family of rows into
        verdicts."""
        lo, hi = self.ci(1 - alpha)
        return {"diff": self.diff, "ci_low": lo, "ci_high": hi, "half_width": (hi - lo) / 2,
                "se": self.se, "p": self.p_two_sided(0.0), **self.tost(delta, alpha),
                "mde": mde(self.se, alpha, power), "alpha": alpha, "power": power,
                "n_seeds_a": self.n_seeds_a, "n_seeds_b": self.n_seeds_b,
                "n_questions": self.n_questions, "n_clusters": self.n_clusters,
                "paired_seeds": self.paired_seeds, "n_resamples": len(self.replicates)}

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        del d["replicates"]
        return d


def as_inputs(a, b, paired_seeds: bool):
    A, B = paired.as_pair(a, b)
    if paired_seeds and len(A) != len(B):
        raise ValueError(f"paired_seeds needs as many seeds of A as of B ({len(A)} vs {len(B)})")
    return A, B


def replicate_differences(a, b, seeds_a, seeds_b, cluster_draws, *, clusters=None,
                          strata=None) -> np.ndarray:
    """The statistic A - B on given draws: seeds_a [R, k_a] (indices of a's seeds), seeds_b
    [R, k_b], cluster_draws [R, k] (indices into the sorted distinct cluster ids, or into the
    questions when clusters is None). Pass seeds_b = seeds_a for paired seeds. -> [R]."""
    A, B = paired.as_pair(a, b)
    return _Cells(A, B, clusters, strata).from_draws(seeds_a, seeds_b, cluster_draws)


def two_level_bootstrap(a, b, *, clusters=None, strata=None, n_resamples: int = 10_000,
                        confidence: float = 0.95, seed: int = 0, paired_seeds: bool = False,
                        chunk: int = 1000) -> SeedBootstrap:
    """Bootstrap of mean(A) - mean(B) resampling seeds (per condition, or jointly with
    paired_seeds) and then question clusters (one draw for both conditions). a [S_a, Q] and
    b [S_b, Q] (or lists of per-seed arrays, or one array for a single seed) score the same Q
    questions in the same order; clusters, strata: length-Q ids as in paired.paired_bootstrap."""
    A, B = as_inputs(a, b, paired_seeds)
    cells = _Cells(A, B, clusters, strata)
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        sa = rng.integers(0, len(A), (m, len(A)))
        sb = sa if paired_seeds else rng.integers(0, len(B), (m, len(B)))
        reps.append(cells.from_draws(sa, sb, rng.integers(0, cells.K, (m, cells.K))))
    return SeedBootstrap.from_replicates(
        cells.observed(), np.concatenate(reps), confidence=confidence, n_seeds_a=len(A),
        n_seeds_b=len(B), n_questions=A.shape[1], n_clusters=cells.K, paired_seeds=paired_seeds)


# ----------------------------------------------------------------------------- verdicts


def mde(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect of a two-sided level-alpha test: (z_{1-alpha/2} + z_power) * se."""
    return (z_quantile(1 - alpha / 2) + z_quantile(power)) * se


def verdict(diff: float, p_holm: float, p_tost_holm: float, alpha: float = 0.05,
            higher_is_better: bool = True) -> str:
    """Significance first: a Holm-adjusted p < alpha gives a significant loss or gain (by the sign
    of diff and the metric's direction) even when the difference also lies inside the margin;
    else a Holm-adjusted TOST p < alpha gives equivalence; else inconclusive."""
    if p_holm < alpha:
        return GAIN if (diff > 0) == higher_is_better else LOSS
    if p_tost_holm < alpha:
        return EQUIVALENT
    return INCONCLUSIVE


def add_verdicts(rows: Sequence[dict], *, alpha: float = 0.05,
                 higher_is_better: bool = True) -> None:
    """rows: one Holm family of SeedBootstrap.summary dicts. Adds, in place, `p_holm` and
    `p_tost_holm` (Holm over the family, each p-value kind separately), `significant`,
    `equivalent`, `verdict`, and `mde_family`: the MDE at alpha / m, the strictest Holm step, an
    effect the design detects with the stated power whatever the other p-values are."""
    m = len(rows)
    for r, ph, pth in zip(rows, paired.holm([r["p"] for r in rows]),
                          paired.holm([r["p_tost"] for r in rows])):
        r["p_holm"], r["p_tost_holm"] = float(ph), float(pth)
        r["significant"], r["equivalent"] = bool(ph < alpha), bool(pth < alpha)
        r["verdict"] = verdict(r["diff"], ph, pth, alpha, higher_is_better)
        r["mde_family"] = mde(r["se"], alpha / m, r.get("power", 0.8))


def mean_std(values, missing=math.nan) -> tuple:
    """(mean, sample std, n) over the finite values: the spread over seeds the reports show. The
    std of one value, and both of none, are `missing` (NaN, or None for JSON-bound tables)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return missing, missing, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else missing, len(v)
