"""Simulated per-question scores of several arms trained with common random numbers by seed.

The model a paired-by-seed design assumes (seed s of every arm shares its data order and
initialisation), used to check the intervals' coverage, the power formulas and the trend test:

    score[j, s, q] = level[q] + effect[j] + seed[s] + seed_arm[j, s]
                     + arm_cluster[j, k(q)] + arm_question[j, q] + noise[j, s, q]

level (a question's difficulty, shared by every arm and seed; cluster part + question part), seed
(shared by every arm: the common random numbers) and the rest independent normals with the
standard deviations of `Components`. Questions come in K clusters of L (a question and its
translations); with `by_language` question l of a cluster is in stratum (language) l.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Components:
    """Standard deviations of the terms of the model above."""
    level_cluster: float = 0.15     # question difficulty shared within a cluster
    level_question: float = 0.10    # question difficulty of its own
    seed: float = 0.02              # seed offset shared by every arm (cancels when paired)
    seed_arm: float = 0.003         # seed x arm: what pairing leaves of the seed variance
    arm_cluster: float = 0.02       # arm x question effect shared within a cluster
    arm_question: float = 0.03      # arm x question effect of its own
    noise: float = 0.02             # arm x seed x question

    def difference_variance(self, n_seeds: int, n_clusters: int, cluster_size: int) -> dict:
        """The variance of the estimate of effect[j] - effect[k] (any two arms), split as the
        design's analysis estimates it: seed_var (from the per-seed differences) and
        question_var (from the questions), each already divided by its number of units."""
        q = n_clusters * cluster_size
        per_seed = 2 * self.seed_arm ** 2 + 2 * self.noise ** 2 / q
        question = 2 * self.arm_cluster ** 2 / n_clusters + 2 * self.arm_question ** 2 / q
        return {"seed_var_per_seed": per_seed, "seed_var": per_seed / n_seeds,
                "question_var": question, "se": math.sqrt(per_seed / n_seeds + question)}


def layout(n_clusters: int, cluster_size: int, by_language: bool = False):
    """(clusters, strata) of Q = n_clusters * cluster_size questions; strata None without
    by_language."""
    clusters = np.repeat(np.arange(n_clusters), cluster_size)
    strata = np.tile(np.arange(cluster_size), n_clusters) if by_language else None
    return clusters, strata


def seeded_scores(rng: np.random.Generator, n: int, effects, *, n_seeds: int, n_clusters: int,
                  cluster_size: int = 1, sd: Components = Components()) -> np.ndarray:
    """n datasets of scores [n, J, S, Q] for arms with true means `effects` (length J) above a
    common level; questions in the order of layout(n_clusters, cluster_size)."""
    effects = np.asarray(effects, np.float64)
    J, S, K, L = len(effects), n_seeds, n_clusters, cluster_size
    Q = K * L
    cl = np.repeat(np.arange(K), L)

    def normal(scale, *shape):
        return rng.normal(0.0, scale, (n, *shape))

    level = 0.5 + normal(sd.level_cluster, K)[:, cl] + normal(sd.level_question, Q)
    arm_q = normal(sd.arm_cluster, J, K)[:, :, cl] + normal(sd.arm_question, J, Q)
    seed = normal(sd.seed, 1, S, 1) + normal(sd.seed_arm, J, S, 1)
    return (level[:, None, None, :] + effects[None, :, None, None] + arm_q[:, :, None, :]
            + seed + normal(sd.noise, J, S, Q))
