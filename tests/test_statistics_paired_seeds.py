"""The paired-by-seed two-level bootstrap (seeds.two_level_bootstrap(paired_seeds=True)): seed
pairs drawn jointly, then question clusters jointly for both conditions, macro over languages."""
import itertools

import numpy as np
import pytest

from hybrid_jax.evaluation.statistics import design
from hybrid_jax.evaluation.statistics import seeds as ss
from hybrid_jax.evaluation.statistics import simulate as sim

# 2 seeds x 3 clusters (a question in "en" and its "de" translation); question order
# (k0 en, k0 de, k1 en, k1 de, k2 en, k2 de). D = A - B per seed and question:
D = np.array([[0.02, 0.04, 0.00, -0.02, 0.06, 0.02],
              [0.06, 0.04, 0.03, 0.01, 0.07, 0.03]])
CLUSTERS = [0, 0, 1, 1, 2, 2]
STRATA = ["en", "de"] * 3
# B: a question level and a seed offset of 0.3 that both conditions share (common random
# numbers): it cancels in the pairs and dominates the unpaired seed draws.
B = np.array([0.5, 0.6, 0.2, 0.3, 0.7, 0.8]) + np.array([[0.0], [0.3]])
A = B + D
# X[s, k] = macro over the two languages of D in cluster k = [[0.03, -0.01, 0.04],
# [0.05, 0.02, 0.05]]; per-seed differences d_s = (0.02, 0.04); estimate mu = 0.03. Two-way
# split X = mu + a_s + b_k + e_sk: a = (-0.01, +0.01); cluster means (0.04, 0.005, 0.045), so
# b = (0.01, -0.025, 0.015); e = [[0, -0.005, 0.005], [0, 0.005, -0.005]].
MU, SUM_A2, SUM_B2, SUM_E2 = 0.03, 2e-4, 9.5e-4, 1e-4


def _all_paired_draws():
    seeds = list(itertools.product(range(2), repeat=2))
    clusters = list(itertools.product(range(3), repeat=3))
    combos = list(itertools.product(seeds, clusters))
    return (np.array([c[0] for c in combos]), np.array([c[1] for c in combos]))


def _by_definition(seed_draw, cluster_draw) -> float:
    """Macro over languages of mean(A) - mean(B) on the drawn seeds and clusters, one seed draw
    for both conditions."""
    rows = list(seed_draw)
    out = []
    for lang in ("en", "de"):
        qs = [2 * k + (lang == "de") for k in cluster_draw]
        out.append(A[rows][:, qs].mean() - B[rows][:, qs].mean())
    return float(np.mean(out))


def test_exact_bootstrap_distribution_by_hand():
    """Every one of the 4 x 27 equally likely paired draws: the statistic equals its definition,
    its mean is the estimate and its variance is the hand-derived
    Var* = pop.var(a) / S + pop.var(b) / K + pop.var(e) / (S K)
    (the replicate is linear in the seed and cluster counts, whose covariance is I - 11'/n)."""
    sd, cd = _all_paired_draws()
    got = ss.replicate_differences(A, B, sd, sd, cd, clusters=CLUSTERS, strata=STRATA)
    assert got == pytest.approx([_by_definition(s, c) for s, c in zip(sd, cd)], abs=1e-12)
    assert got.mean() == pytest.approx(MU, abs=1e-12)
    exact_var = (SUM_A2 / 2) / 2 + (SUM_B2 / 3) / 3 + (SUM_E2 / 6) / 6
    assert got.var() == pytest.approx(exact_var, rel=1e-9)

    # The variance components by hand: seed_var = var(d_s, ddof 1) / S = 2e-4 / 2; question_var
    # = var(cluster means, ddof 1) / K = SUM_B2 / 2 / 3. The bootstrap sees (S-1)/S and
    # (K-1)/K of them, plus the interaction once.
    vc = design.variance_components(A, B, clusters=CLUSTERS, strata=STRATA, paired_seeds=True)
    assert vc.seed_var == pytest.approx(1e-4, rel=1e-9)
    assert vc.question_var == pytest.approx(SUM_B2 / 6, rel=1e-9)
    assert exact_var == pytest.approx(vc.seed_var / 2 + vc.question_var * 2 / 3 + SUM_E2 / 36)

    # The Monte Carlo bootstrap draws from exactly that distribution ...
    r = ss.two_level_bootstrap(A, B, clusters=CLUSTERS, strata=STRATA, n_resamples=20000,
                               paired_seeds=True, seed=1)
    support = set(np.round(got, 12))
    assert set(np.round(r.replicates, 12)) <= support
    assert r.diff == pytest.approx(MU)
    assert r.replicates.mean() == pytest.approx(MU, abs=4 * np.sqrt(exact_var / 20000))
    assert r.se ** 2 == pytest.approx(exact_var, rel=0.05)
    # ... while drawing A's and B's seeds apart lets the shared 0.3 offset in: values off the
    # paired support, and a far wider spread.
    u = ss.two_level_bootstrap(A, B, clusters=CLUSTERS, strata=STRATA, n_resamples=2000, seed=1)
    assert not set(np.round(u.replicates, 12)) <= support
    assert u.se > 5 * r.se


def test_questions_drawn_once_for_both_conditions():
    """A = B + 0.01 + seed offset: with the question draw shared by A and B and the seeds paired,
    every replicate is 0.01 + the mean offset of the drawn seeds, whatever the questions."""
    rng = np.random.default_rng(2)
    b = rng.uniform(0, 1, (2, 40)) + np.array([[0.0], [0.5]])
    a = b + 0.01 + np.array([[0.0], [0.02]])
    r = ss.two_level_bootstrap(a, b, clusters=np.arange(40) // 4, n_resamples=2000,
                               paired_seeds=True)
    assert np.unique(np.round(r.replicates, 12)) == pytest.approx([0.01, 0.02, 0.03])


def test_coverage_of_a_known_effect_and_the_unpaired_analysis_is_wider():
    """Two conditions x 5 seeds sharing a seed offset (sd 0.02) and a question level, seed x
    condition sd 0.003, clustered question x condition effects, 100 clusters in two languages;
    true difference 0.01. The paired 95% interval covers about 95% of 200 datasets and its mean
    half-width is 1.96 x the model's SE; the unpaired analysis of the same data keeps the
    shared offset and is wider."""
    rng = np.random.default_rng(20261207)
    n, S, K, L = 200, 5, 100, 2
    X = sim.seeded_scores(rng, n, [0.01, 0.0], n_seeds=S, n_clusters=K, cluster_size=L)
    cl, st = sim.layout(K, L, by_language=True)
    covered, widths = 0, []
    for i in range(n):
        kw = dict(clusters=cl, strata=st, n_resamples=600, seed=i)
        p = ss.two_level_bootstrap(X[i, 0], X[i, 1], paired_seeds=True, **kw)
        u = ss.two_level_bootstrap(X[i, 0], X[i, 1], **kw)
        covered += p.ci_low < 0.01 < p.ci_high
        widths.append((p.ci_high - p.ci_low, u.ci_high - u.ci_low))
    widths = np.array(widths)
    assert 0.90 <= covered / n <= 0.985, covered / n
    se = sim.Components().difference_variance(S, K, L)["se"]
    assert widths[:, 0].mean() / 2 == pytest.approx(1.959964 * se, rel=0.1)
    assert widths[:, 1].mean() > 2 * widths[:, 0].mean()
    assert np.mean(widths[:, 1] > widths[:, 0]) >= 0.95
