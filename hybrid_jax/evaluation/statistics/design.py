"""How precise a comparison is and what a target precision would take: the variance of the
seed-aware estimate (seeds.py) split into its seed and question components, and the seeds or
question clusters a half-width needs."""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from hybrid_jax.evaluation.statistics import paired
from hybrid_jax.evaluation.statistics.seeds import as_inputs, z_quantile


@dataclasses.dataclass(frozen=True)
class VarianceComponents:
    """Var(estimate) ~= seed_var + question_var, each scaling as 1 / (number of its units)."""
    seed_var: float
    question_var: float
    n_seeds_a: int
    n_seeds_b: int
    n_questions: int
    n_clusters: int

    @property
    def se(self) -> float:
        return math.sqrt(self.seed_var + self.question_var)

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "se": self.se}


def variance_components(a, b, *, clusters=None, strata=None,
                        paired_seeds: bool = False) -> VarianceComponents:
    """Seed component: the between-seed sample variance (ddof 1) of each condition's seed means
    (the statistic on one seed's scores), over its number of seeds, summed over A and B; with
    paired_seeds, the sample variance of the per-seed differences over S. Question component: the
    cluster-robust (linearised) variance of the statistic of the seed-averaged per-question
    differences, K / (K - 1) * sum_k psi_k^2 with psi_k = mean over strata h of
    (T_kh - D_h n_kh) / N_h (T_kh: cluster k's total difference in stratum h, n_kh its question
    count, N_h and D_h the stratum's count and mean difference); without strata and clusters this
    is s^2 / Q. Each component also carries the seed x question interaction, so their sum
    slightly overstates the variance when that interaction dominates. A condition with one seed
    contributes no seed variance: right for a deterministic one (the zero-shot model), an
    omission for a trained one, exactly as in the bootstrap."""
    A, B = as_inputs(a, b, paired_seeds)
    des = paired.Design(A.shape[1], clusters, strata)

    def seed_means(X):
        return des.stat(X, np.ones_like(X))

    def var_of_mean(x):
        return float(np.var(x, ddof=1) / len(x)) if len(x) > 1 else 0.0

    if paired_seeds:
        seed_var = var_of_mean(seed_means(A) - seed_means(B))
    else:
        seed_var = var_of_mean(seed_means(A)) + var_of_mean(seed_means(B))
    d = A.mean(0) - B.mean(0)
    K, H = des.n_clusters, des.onehot.shape[1]
    n_h = des.onehot.sum(0)
    present = n_h > 0
    D_h = np.divide(d @ des.onehot, n_h, out=np.zeros(H), where=present)
    T = np.zeros((K, H))
    n = np.zeros((K, H))
    np.add.at(T, des.cl, des.onehot * d[:, None])
    np.add.at(n, des.cl, des.onehot)
    psi = ((T - D_h * n)[:, present] / n_h[present]).mean(1)
    question_var = float(K / (K - 1) * np.sum(psi ** 2)) if K > 1 else math.nan
    return VarianceComponents(seed_var, question_var, len(A), len(B), A.shape[1], K)


def design_for_half_width(vc: VarianceComponents, target_half_width: float,
                          confidence: float = 0.95) -> dict:
    """Seeds or questions needed for a normal-approximation interval of half-width
    z_{(1+confidence)/2} * sqrt(seed_var + question_var) <= target, scaling one component as
    1 / n while the other stays as measured. seeds_needed_a/_b (questions unchanged) and
    clusters_needed / questions_needed (seeds unchanged) are inf when the other component alone
    already exceeds the target. Holding the other component fixed is conservative: it also
    shrinks a little, through its share of the seed x question interaction."""
    z = z_quantile((1 + confidence) / 2)
    budget = (target_half_width / z) ** 2

    def factor(own: float, other: float) -> float:
        return own / (budget - other) if budget > other else math.inf

    def need(f: float, n: int) -> float:
        return math.inf if not math.isfinite(f) else max(1, math.ceil(f * n - 1e-9))

    fs = factor(vc.seed_var, vc.question_var)
    fq = factor(vc.question_var, vc.seed_var)
    return {"target_half_width": target_half_width, "confidence": confidence,
            "half_width": z * vc.se,
            "seed_half_width": z * math.sqrt(vc.seed_var),
            "question_half_width": z * math.sqrt(vc.question_var),
            "seeds_needed_a": need(fs, vc.n_seeds_a), "seeds_needed_b": need(fs, vc.n_seeds_b),
            "clusters_needed": need(fq, vc.n_clusters),
            "questions_needed": need(fq, vc.n_questions)}
