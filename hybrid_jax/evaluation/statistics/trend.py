"""Dose-response trend test: the least-squares slope of a metric against a dose (the alpha of a
hybrid batch), over runs that share their seeds across doses (common random numbers).

scores [J, S, Q]: dose j, seed s (seed s of every dose shares data order and initialisation),
question q. The per-run metric m_js is the (macro over strata) mean over questions of run (j, s);
the slope is the least-squares fit of m_js against x_j over all J x S runs:

    slope = sum_j c_j mean_s(m_js),   c_j = (x_j - mean(x)) / sum_j (x_j - mean(x))^2

(with every dose at the same seeds the fit over runs and over the dose means coincide). The slope
is linear in the scores, so it is the macro mean of the contrast scores
Y[s, q] = sum_j c_j scores[j, s, q]: Y keeps one row per seed, so resampling Y's seeds draws a
seed jointly for every dose, and a question cluster drawn for Y is drawn for every dose. The
interval and p-value are the paired two-level bootstrap of Y (seeds.two_level_bootstrap with
paired_seeds=True and B = 0): percentile interval, p = min(1, 2 min(P*(d* <= 0), P*(d* >= 0))).
Anything shared by all doses of a seed or a question (its offset, its difficulty) cancels in Y,
since the c_j sum to 0.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hybrid_jax.evaluation.statistics import design, paired
from hybrid_jax.evaluation.statistics.seeds import SeedBootstrap, two_level_bootstrap


@dataclasses.dataclass(frozen=True)
class TrendResult:
    doses: tuple
    dose_means: tuple           # per dose: the metric, mean over seeds
    slope: float                # metric change per unit of dose
    intercept: float            # the fitted metric at dose 0
    bootstrap: SeedBootstrap    # of the slope: interval, SE, p
    components: design.VarianceComponents   # the slope's variance from seeds and questions

    def as_dict(self) -> dict:
        b = self.bootstrap
        return {"doses": list(self.doses), "dose_means": list(self.dose_means),
                "slope": self.slope, "intercept": self.intercept, "ci_low": b.ci_low,
                "ci_high": b.ci_high, "confidence": b.confidence, "se": b.se, "p": b.p_value,
                "seed_var": self.components.seed_var,
                "question_var": self.components.question_var, "n_seeds": b.n_seeds_a,
                "n_questions": b.n_questions, "n_clusters": b.n_clusters,
                "n_resamples": len(b.replicates)}


def contrast_weights(doses) -> np.ndarray:
    """c_j = (x_j - mean(x)) / sum (x - mean(x))^2: sum_j c_j m_j is the least-squares slope."""
    x = np.asarray(doses, np.float64)
    centred = x - x.mean()
    ss = float(centred @ centred)
    if not ss > 0:
        raise ValueError(f"a trend needs at least two different doses, got {list(doses)}")
    return centred / ss


def _as_grid(scores, n_doses: int) -> np.ndarray:
    try:
        X = np.asarray(scores, np.float64)
    except ValueError as e:   # ragged: doses with different numbers of seeds or questions
        raise ValueError(f"scores must be [doses, seeds, questions] with the same seeds and "
                         f"questions at every dose ({e})") from e
    if X.ndim != 3 or X.shape[0] != n_doses:
        raise ValueError(f"scores must be [doses={n_doses}, seeds, questions], got shape "
                         f"{X.shape}")
    if X.shape[1] < 2:
        raise ValueError("a trend test needs at least 2 seeds per dose (the seed variance)")
    if not np.isfinite(X).all():
        raise ValueError("per-question scores must be finite (drop skipped queries first)")
    return X


def trend_test(scores, doses, *, clusters=None, strata=None, n_resamples: int = 10_000,
               confidence: float = 0.95, seed: int = 0) -> TrendResult:
    """Slope of the (macro) metric against `doses` with its two-level bootstrap interval and p.
    scores: [J, S, Q] (or J arrays [S, Q]), the same S seeds and Q questions at every dose;
    clusters, strata: length-Q ids as in seeds.two_level_bootstrap."""
    c = contrast_weights(doses)
    X = _as_grid(scores, len(c))
    Y = np.tensordot(c, X, axes=1)                       # [S, Q] contrast scores
    zeros = np.zeros_like(Y)
    boot = two_level_bootstrap(Y, zeros, clusters=clusters, strata=strata,
                               n_resamples=n_resamples, confidence=confidence, seed=seed,
                               paired_seeds=True)
    des = paired.Design(X.shape[2], clusters, strata)
    means = [float(des.stat(x.mean(0), np.ones(X.shape[2]))) for x in X]
    x = np.asarray(doses, np.float64)
    intercept = float(np.mean(means) - boot.diff * x.mean())
    vc = design.variance_components(Y, zeros, clusters=clusters, strata=strata,
                                    paired_seeds=True)
    return TrendResult(tuple(float(d) for d in x), tuple(means), boot.diff, intercept, boot, vc)
