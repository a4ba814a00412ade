"""Power of a paired-by-seed comparison, and the seeds it needs, from a pilot's variance components.

A comparison of two arms that share seeds (seed s of both sees the same data order and
initialisation) estimates the difference d from S seed pairs and K question clusters with

    Var(d_hat) = (sigma2_seed + i (K_pilot / K - 1)) / S + question_var * K_pilot / K       (1)

sigma2_seed: the variance of one seed pair's difference (the statistic on seed s of A minus seed
s of B) at the pilot's K_pilot clusters; question_var: the variance the questions leave in the
estimate, at K_pilot clusters; i: the seed x question interaction in sigma2_seed (i / K_pilot
per cluster), which more clusters average away. `Pilot.from_components` takes question_var as
design.variance_components measures it, interaction included (i / S_pilot of it; i = 0), which
counts the interaction twice and so overstates Var a little; `Pilot.from_runs` estimates i from
how much larger one seed pair's question component is than all S_pilot pairs' and takes it out.
With SE the square root of (1), z_p the standard normal p-quantile and Phi its CDF:

* two-sided level-alpha test of d = 0 when the true difference is delta:
      power = Phi(|delta| / SE - z_{1-alpha/2}) + Phi(-|delta| / SE - z_{1-alpha/2})       (2)
* TOST at margin m (both one-sided level-alpha tests reject; the (1 - 2 alpha) interval lies in
  (-m, m)) when the true difference is delta, |delta| < m:
      power = max(0, Phi((m - delta)/SE - z_{1-alpha}) - Phi((-m - delta)/SE + z_{1-alpha}))  (3)
* seeds needed: the smallest S >= 2 whose SE from (1) gives (2) or (3) >= the target; inf when
  the question term alone keeps it below (more questions, not seeds, are then what helps).

These are normal approximations for the test as registered (the two-level bootstrap's percentile
interval, seeds.py); with few seeds that bootstrap sees (S - 1) / S of the seed variance and no
t-quantile, so its real power is a little higher and its level a little above alpha.
tests/test_statistics_power.py compares (2) and (3) with simulated rejection rates.
"""
from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist

import numpy as np

from hybrid_jax.evaluation.statistics import design
from hybrid_jax.evaluation.statistics.design import VarianceComponents
from hybrid_jax.evaluation.statistics.seeds import as_inputs

_N = NormalDist()
MIN_SEEDS = 2   # a seed variance needs two seeds


@dataclasses.dataclass(frozen=True)
class Pilot:
    """What a pilot measured of one paired comparison (e.g. the primary endpoint's macro)."""
    seed_var_per_seed: float    # sigma2_seed: variance of one seed pair's difference
    question_var: float         # the estimate's variance from its questions, at n_clusters
    n_seeds: int
    n_clusters: int
    interaction_var: float = 0.0   # i: seed x question variance in seed_var_per_seed

    @classmethod
    def from_components(cls, vc: VarianceComponents) -> "Pilot":
        """From design.variance_components(paired_seeds=True) of the pilot's runs (an unpaired
        design with equal seeds per arm works the same way: its seed_var also scales as 1/S)."""
        if vc.n_seeds_a != vc.n_seeds_b or vc.n_seeds_a < MIN_SEEDS:
            raise ValueError(f"a pilot needs the same number (>= {MIN_SEEDS}) of seeds in both "
                             f"arms, got {vc.n_seeds_a} and {vc.n_seeds_b}")
        return cls(vc.seed_var * vc.n_seeds_a, vc.question_var, vc.n_seeds_a, vc.n_clusters)

    @classmethod
    def from_runs(cls, a, b, *, clusters=None, strata=None, paired_seeds: bool = True) -> "Pilot":
        """From the pilot's per-question scores a, b [S, Q] (as in seeds.two_level_bootstrap), with
        the interaction split off question_var: q_1, the mean over seed pairs of one pair's
        question component, is pure + i and q_S, all S pairs', pure + i / S, so
        i = (q_1 - q_S) S / (S - 1) and pure = q_S - i / S (each floored at 0)."""
        vc = design.variance_components(a, b, clusters=clusters, strata=strata,
                                        paired_seeds=paired_seeds)
        pilot = cls.from_components(vc)
        A, B = as_inputs(a, b, paired_seeds)
        q1 = float(np.mean([design.variance_components(x, y, clusters=clusters,
                                                       strata=strata).question_var
                            for x, y in zip(A, B)]))
        S = len(A)
        i = max(0.0, (q1 - vc.question_var) * S / (S - 1))
        return dataclasses.replace(pilot, question_var=max(0.0, vc.question_var - i / S),
                                   interaction_var=i)

    def se(self, n_seeds: int, n_clusters: int | None = None) -> float:
        """Equation (1): the SE with n_seeds seed pairs and n_clusters (default: the pilot's)."""
        ratio = self.n_clusters / (self.n_clusters if n_clusters is None else n_clusters)
        # sigma2_seed = pure seed variance + i.  A few pilot seeds can put sigma2_seed below its
        # own interaction part: the pure part is then floored at 0, the interaction kept.
        pure = max(0.0, self.seed_var_per_seed - self.interaction_var)
        seed = pure + self.interaction_var * ratio
        return math.sqrt(seed / n_seeds + self.question_var * ratio)

    def with_seed_var_upper(self, confidence: float = 0.8) -> "Pilot":
        """The pilot with sigma2_seed at its one-sided upper confidence limit,
        (S - 1) s^2 / chi2_{1-confidence, S-1}: a few pilot seeds estimate it poorly, and a plan
        on the point estimate is underpowered about half of the time."""
        from scipy.stats import chi2
        df = self.n_seeds - 1
        return dataclasses.replace(
            self, seed_var_per_seed=self.seed_var_per_seed * df / chi2.ppf(1 - confidence, df))


def power_two_sided(effect: float, se: float, alpha: float = 0.05) -> float:
    """Equation (2)."""
    if not se > 0:   # no variance left: every nonzero difference is found, a zero one at alpha
        return 1.0 if effect else alpha
    z = _N.inv_cdf(1 - alpha / 2)
    x = abs(effect) / se
    return _N.cdf(x - z) + _N.cdf(-x - z)


def power_tost(margin: float, se: float, alpha: float = 0.05, true_diff: float = 0.0) -> float:
    """Equation (3)."""
    if not margin > 0:
        raise ValueError(f"equivalence margin must be positive, got {margin}")
    if not se > 0:
        return 1.0 if abs(true_diff) < margin else 0.0
    z = _N.inv_cdf(1 - alpha)
    return max(0.0, _N.cdf((margin - true_diff) / se - z) - _N.cdf((-margin - true_diff) / se + z))


def _smallest(power_at, target: float, lo: int, hi: int) -> float:
    """Smallest n in [lo, hi] with power_at(n) >= target (power rises with n), else inf."""
    if power_at(hi) < target:
        return math.inf
    if power_at(lo) >= target:
        return lo
    while hi - lo > 1:                     # power_at(lo) < target <= power_at(hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if power_at(mid) >= target else (mid, hi)
    return hi


def seeds_for_power(pilot: Pilot, effect: float, power: float = 0.8, alpha: float = 0.05,
                    n_clusters: int | None = None, max_seeds: int = 100_000) -> float:
    """Seed pairs for the two-sided test to reach `power` at true difference `effect`."""
    return _smallest(lambda s: power_two_sided(effect, pilot.se(s, n_clusters), alpha), power,
                     MIN_SEEDS, max_seeds)


def seeds_for_tost(pilot: Pilot, margin: float, power: float = 0.8, alpha: float = 0.05,
                   true_diff: float = 0.0, n_clusters: int | None = None,
                   max_seeds: int = 100_000) -> float:
    """Seed pairs for TOST at +-margin to reach `power` when the true difference is true_diff."""
    return _smallest(lambda s: power_tost(margin, pilot.se(s, n_clusters), alpha, true_diff),
                     power, MIN_SEEDS, max_seeds)


def clusters_for_power(pilot: Pilot, effect: float, n_seeds: int, power: float = 0.8,
                       alpha: float = 0.05, max_clusters: int = 10_000_000) -> float:
    """Question clusters (like the pilot's) for the two-sided test to reach `power` with n_seeds
    seed pairs: what a benchmark whose questions cap the power would need."""
    return _smallest(lambda k: power_two_sided(effect, pilot.se(n_seeds, k), alpha), power, 2,
                     max_clusters)


def power_plan(pilot: Pilot, effect: float, margin: float, *, seeds=(3, 5, 8, 10, 15, 20),
               power: float = 0.8, alpha: float = 0.05, n_clusters: int | None = None) -> dict:
    """The numbers a protocol registers: seeds needed for each test and, per candidate number of
    seeds, the SE, the power of both tests (TOST at a true difference of 0), the MDE and the
    question clusters the two-sided test would need for the target power."""
    z = _N.inv_cdf(1 - alpha / 2) + _N.inv_cdf(power)
    rows = [{"seeds": s, "se": pilot.se(s, n_clusters),
             "power": power_two_sided(effect, pilot.se(s, n_clusters), alpha),
             "power_tost": power_tost(margin, pilot.se(s, n_clusters), alpha),
             "mde": z * pilot.se(s, n_clusters),
             "clusters_needed": clusters_for_power(pilot, effect, s, power, alpha)} for s in seeds]
    return {"effect": effect, "margin": margin, "alpha": alpha, "target_power": power,
            "pilot": dataclasses.asdict(pilot),
            "seeds_needed": seeds_for_power(pilot, effect, power, alpha, n_clusters),
            "seeds_needed_tost": seeds_for_tost(pilot, margin, power, alpha,
                                                n_clusters=n_clusters),
            "rows": rows}


def sequential_decision(seed_pairs: int, power: float, *, after: int, most: int,
                        target: float = 0.8) -> dict:
    """A sequential rule on the SE alone: after `after` seed pairs, add pairs, up to `most`, while
    the power is below `target`. decision: 'wait' (fewer pairs than the rule looks at), 'add'
    (another pair is due) or 'stop' (power reached, or `most` pairs run)."""
    decision = ("wait" if seed_pairs < after else
                "stop" if power >= target or seed_pairs >= most else "add")
    return dict(seed_pairs=int(seed_pairs), power=float(power), after=after, most=most,
                target_power=target, decision=decision)
