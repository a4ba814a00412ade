"""Two-level (seeds, then question clusters) bootstrap, TOST, verdicts, MDE and design sizes."""
import itertools
import math

import numpy as np
import pytest

from hybrid_jax.evaluation.statistics import design
from hybrid_jax.evaluation.statistics import seeds as ss

# Two seeds x three questions per condition; means 0.5 and 0.4.
A = np.array([[0.9, 0.5, 0.1], [0.7, 0.5, 0.3]])
B = np.array([[0.6, 0.4, 0.2], [0.8, 0.4, 0.0]])


def test_replicates_by_hand():
    r = ss.replicate_differences(A, B, [[0, 0], [0, 1]], [[1, 1], [0, 0]], [[0, 0, 2], [0, 2, 2]])
    # seeds A {0,0}, B {1,1}, questions {0,0,2}: (0.9+0.9+0.1)/3 - (0.8+0.8+0.0)/3
    # seeds A {0,1}, B {0,0}, questions {0,2,2}: (0.8+0.2+0.2)/3 - (0.6+0.2+0.2)/3
    assert r == pytest.approx([0.1, 0.2 / 3])
    # q0, q1 form cluster "x", q2 cluster "y": a drawn cluster brings all its questions.
    r = ss.replicate_differences(A, B, [[0, 0], [1, 1], [0, 1]], [[1, 1], [0, 1], [0, 0]],
                                 [[1, 1], [0, 0], [0, 1]], clusters=["x", "x", "y"])
    # (y,y): 0.1 - 0.0; (x,x): (0.7+0.5)/2 - (0.7+0.4)/2; (x,y): (0.8+0.5+0.2)/3 - 1.2/3
    assert r == pytest.approx([0.1, 0.05, 0.1])
    # Strata: the macro mean over strata. Stratum "p" = {q0, q1}, "r" = {q2}; all seeds, all
    # questions once: ((0.8+0.5)/2 - (0.7+0.4)/2 + 0.2 - 0.1) / 2
    r = ss.replicate_differences(A, B, [[0, 1]], [[0, 1]], [[0, 1, 2]], strata=["p", "p", "r"])
    assert r == pytest.approx([(0.1 + 0.1) / 2])


def test_exact_enumeration_matches_a_plain_loop():
    """Every draw of a 2-seed, 3-question design: the vectorised statistic equals the obvious
    loop, and its mean is the point estimate (the statistic is linear in the counts)."""
    seeds = list(itertools.product(range(2), repeat=2))
    qs = list(itertools.product(range(3), repeat=3))
    combos = list(itertools.product(seeds, seeds, qs))
    sa, sb, cq = (np.array([c[i] for c in combos]) for i in range(3))
    got = ss.replicate_differences(A, B, sa, sb, cq)
    want = [A[list(a)][:, list(q)].mean() - B[list(b)][:, list(q)].mean() for a, b, q in combos]
    assert got == pytest.approx(want)
    assert got.mean() == pytest.approx(0.1)
    # The exact bootstrap variance in closed form: counts of a uniform multinomial over n units
    # have E[c_i c_j] = [i == j] + 1 - 1/n, seeds and questions drawn independently.
    S, Q = A.shape

    def m(n):
        return np.eye(n) + 1 - 1 / n

    second = m(Q) * (A.T @ m(S) @ A - 2 * np.outer(A.sum(0), B.sum(0)) + B.T @ m(S) @ B)
    assert got.var() == pytest.approx(second.sum() / (Q * S) ** 2 - 0.1 ** 2)


def test_constant_paired_difference_has_no_spread():
    """One seed each and A = B + 0.01 on every question: with one cluster draw shared by A and B
    every replicate is exactly 0.01; drawing questions separately for A and B would not be."""
    rng = np.random.default_rng(0)
    b = rng.uniform(0, 1, 50)
    r = ss.two_level_bootstrap(b + 0.01, b, n_resamples=500)
    assert r.diff == pytest.approx(0.01)
    assert np.ptp(r.replicates) < 1e-12 and r.se < 1e-12
    assert r.ci_low == pytest.approx(0.01) and r.ci_high == pytest.approx(0.01)


def test_seed_level_draws():
    """A's seeds sit at B and B + 0.02 on every question: d* = 0.02 * (share of seed 1 among two
    draws), i.e. 0, 0.01, 0.02 with probabilities 1/4, 1/2, 1/4 whatever the question draw."""
    b = np.linspace(0.1, 0.9, 40)
    r = ss.two_level_bootstrap(np.stack([b, b + 0.02]), b, n_resamples=4000, seed=3)
    vals, counts = np.unique(np.round(r.replicates, 12), return_counts=True)
    assert vals == pytest.approx([0.0, 0.01, 0.02])
    assert counts / counts.sum() == pytest.approx([0.25, 0.5, 0.25], abs=0.03)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.0, 0.02))
    assert r.se == pytest.approx(0.01 / math.sqrt(2), rel=0.05)


def test_paired_seeds():
    """Seed s shifts both conditions alike (shared data order): pairing the seeds removes that
    shift from the interval; unpaired draws keep it."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, 300)
    shift = rng.normal(0, 0.02, (5, 1))
    a = base + 0.01 + shift + rng.normal(0, 0.01, (5, 300))
    b = base + shift + rng.normal(0, 0.01, (5, 300))
    paired = ss.two_level_bootstrap(a, b, n_resamples=2000, paired_seeds=True)
    unpaired = ss.two_level_bootstrap(a, b, n_resamples=2000)
    assert paired.diff == unpaired.diff
    assert paired.se < 0.5 * unpaired.se
    assert paired.ci_low < 0.01 < paired.ci_high
    vc = design.variance_components(a, b, paired_seeds=True)
    assert vc.seed_var < 0.1 * design.variance_components(a, b).seed_var
    with pytest.raises(ValueError, match="paired_seeds"):
        ss.two_level_bootstrap(a, b[:3], paired_seeds=True)


def test_interval_and_p_from_fixed_replicates():
    reps = np.array([-0.03, -0.01, 0.0, 0.01, 0.02, 0.04])
    r = ss.SeedBootstrap.from_replicates(0.005, reps, confidence=0.8)
    # linear quantiles at 0.1 and 0.9 of six sorted values: positions 0.5 and 4.5
    assert (r.ci_low, r.ci_high) == pytest.approx((-0.02, 0.03))
    # (1 + count) / (R + 1): three replicates <= 0, four >= 0 (0 itself counts on both sides)
    assert r.p_below(0.0) == pytest.approx(4 / 7) and r.p_above(0.0) == pytest.approx(5 / 7)
    assert r.p_value == 1.0
    assert r.se == pytest.approx(np.std(reps, ddof=1))
    assert r.p_above(0.035) == pytest.approx(2 / 7)
    assert r.p_two_sided(0.035) == pytest.approx(4 / 7)


def test_tost_from_fixed_replicates():
    reps = np.arange(-40, 61) / 10000            # -0.004 ... 0.006, 101 values
    r = ss.SeedBootstrap.from_replicates(0.001, reps)
    wide = r.tost(0.01)
    assert wide["p_tost_lower"] == pytest.approx(1 / 102)
    assert wide["p_tost_upper"] == pytest.approx(1 / 102)
    assert wide["p_tost"] == pytest.approx(1 / 102)
    assert (wide["tost_ci_low"], wide["tost_ci_high"]) == pytest.approx((-0.0035, 0.0055))
    assert wide["tost_equivalent"]
    narrow = r.tost(0.005)                       # 0.005 ... 0.006 are 11 replicates
    assert narrow["p_tost_upper"] == pytest.approx(12 / 102)
    assert narrow["p_tost"] == pytest.approx(12 / 102)
    assert not narrow["tost_equivalent"]         # the 90% interval reaches 0.0055
    # Interval and p agree up to one replicate: at 0.0056 the interval (to 0.0055) is inside
    # but 5 replicates reach the margin, p = 6/102 > 0.05; at 0.0057 both say equivalent.
    assert r.tost(0.0056)["tost_equivalent"] and r.tost(0.0056)["p_tost"] > 0.05
    assert r.tost(0.0057)["tost_equivalent"] and r.tost(0.0057)["p_tost"] < 0.05
    with pytest.raises(ValueError):
        r.tost(0.0)


def _simulate(rng, n, *, diff=0.01, K=150, L=2, S=5, sd_seed=0.005):
    """n datasets [n, S, Q]: question difficulty shared by A and B (large: pairing matters),
    a condition x question effect correlated within a cluster of L translations, a per-seed
    offset of each condition (sd_seed) and seed x question noise."""
    Q = K * L
    cl = np.repeat(np.arange(K), L)
    level = 0.5 + rng.normal(0, 0.15, (n, K))[:, cl] + rng.normal(0, 0.1, (n, Q))
    effect = rng.normal(0, 0.03, (n, K))[:, cl] + rng.normal(0, 0.035, (n, Q))
    a = (level + diff + effect)[:, None] + rng.normal(0, sd_seed, (n, S, 1)) \
        + rng.normal(0, 0.027, (n, S, Q))
    b = level[:, None] + rng.normal(0, sd_seed, (n, S, 1)) + rng.normal(0, 0.027, (n, S, Q))
    return a, b, cl


def test_coverage_with_seed_variance_and_one_level_undercoverage():
    """True difference 0.01, seed offsets sd 0.005 (5 seeds per condition), clustered question
    effects: the two-level 95% interval covers ~95%; the one-level bootstrap over question
    clusters of seed-averaged scores misses the seed variance (about half the total here)."""
    rng = np.random.default_rng(7)
    n = 200
    a, b, cl = _simulate(rng, n)
    two = one = 0
    for i in range(n):
        r = ss.two_level_bootstrap(a[i], b[i], clusters=cl, n_resamples=1000, seed=i)
        o = ss.two_level_bootstrap(a[i].mean(0, keepdims=True), b[i].mean(0, keepdims=True),
                                   clusters=cl, n_resamples=1000, seed=i)
        two += r.ci_low < 0.01 < r.ci_high
        one += o.ci_low < 0.01 < o.ci_high
    assert 0.91 <= two / n <= 0.98, two / n
    assert one / n <= 0.89 and two - one >= 12, (two / n, one / n)


def test_tost_and_verdicts_on_simulated_effects():
    rng = np.random.default_rng(11)
    a0, b0, cl = _simulate(rng, 1, diff=0.0)
    null = ss.two_level_bootstrap(a0[0], b0[0], clusters=cl, n_resamples=2000)
    row0 = null.summary(delta=0.03)
    assert row0["tost_equivalent"] and row0["p_tost"] < 0.05 and row0["p"] > 0.05
    a1, b1, _ = _simulate(rng, 1, diff=0.04)
    big = ss.two_level_bootstrap(a1[0], b1[0], clusters=cl, n_resamples=2000)
    row1 = big.summary(delta=0.02)
    assert not row1["tost_equivalent"] and row1["p_tost"] > 0.5 and row1["p"] < 0.01
    rows = [row0, row1]
    ss.add_verdicts(rows)
    assert [r["verdict"] for r in rows] == [ss.EQUIVALENT, ss.GAIN]
    ss.add_verdicts(rows, higher_is_better=False)  # e.g. rank distance
    assert rows[1]["verdict"] == ss.LOSS
    # The summary's interval is at 1 - alpha, its TOST interval at 1 - 2 alpha.
    assert row0["ci_high"] - row0["ci_low"] > row0["tost_ci_high"] - row0["tost_ci_low"]
    assert row0["half_width"] == pytest.approx((row0["ci_high"] - row0["ci_low"]) / 2)


def test_verdict_precedence_and_holm():
    v = ss.verdict
    assert v(-0.002, 0.01, 0.001) == ss.LOSS       # significant beats equivalent
    assert v(0.002, 0.01, 0.001) == ss.GAIN
    assert v(0.002, 0.01, 0.001, higher_is_better=False) == ss.LOSS
    assert v(-0.002, 0.2, 0.01) == ss.EQUIVALENT
    assert v(-0.002, 0.2, 0.2) == ss.INCONCLUSIVE
    assert v(-0.002, 0.05, 0.05) == ss.INCONCLUSIVE  # strict: p < alpha

    def rows(ps, pts):
        return [{"diff": -0.001, "p": p, "p_tost": pt, "se": 0.004} for p, pt in zip(ps, pts)]

    alone = rows([0.5], [0.03])
    ss.add_verdicts(alone)
    assert alone[0]["verdict"] == ss.EQUIVALENT
    # The same TOST p in a family of three no longer survives Holm (0.03 * 3 > 0.05).
    fam = rows([0.5, 0.6, 0.7], [0.03, 0.04, 0.045])
    ss.add_verdicts(fam)
    assert [r["p_tost_holm"] for r in fam] == pytest.approx([0.09, 0.09, 0.09])
    assert {r["verdict"] for r in fam} == {ss.INCONCLUSIVE}
    fam = rows([0.001, 0.03, 0.04], [0.9, 0.9, 0.01])
    ss.add_verdicts(fam)
    assert [r["p_holm"] for r in fam] == pytest.approx([0.003, 0.06, 0.06])
    assert [r["verdict"] for r in fam] == [ss.LOSS, ss.INCONCLUSIVE, ss.EQUIVALENT]
    assert fam[0]["mde_family"] == pytest.approx(ss.mde(0.004, 0.05 / 3))


def test_mde_and_design_sizes():
    assert ss.mde(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert ss.mde(0.005, alpha=0.01, power=0.9) == pytest.approx(0.005 * (2.575829 + 1.281552),
                                                                 abs=1e-6)
    z = 1.959964
    vc = design.VarianceComponents(1e-5, 1e-5, 5, 5, 200, 100)
    plan = design.design_for_half_width(vc, z * math.sqrt(1.5e-5))
    assert plan["half_width"] == pytest.approx(z * math.sqrt(2e-5))
    assert (plan["seeds_needed_a"], plan["seeds_needed_b"]) == (10, 10)
    assert (plan["clusters_needed"], plan["questions_needed"]) == (200, 400)
    plan = design.design_for_half_width(vc, z * math.sqrt(0.9e-5))  # below either component alone
    assert plan["seeds_needed_a"] == math.inf and plan["clusters_needed"] == math.inf


def test_variance_components_scale_with_questions():
    """Quadrupling the question clusters halves the question component's half-width and leaves
    the seed component's alone; the bootstrap SE matches the components' sum."""
    rng = np.random.default_rng(5)
    small = _simulate(rng, 1, K=150, sd_seed=0.0)
    large = _simulate(rng, 1, K=600, sd_seed=0.0)
    vs = design.variance_components(small[0][0], small[1][0], clusters=small[2])
    vl = design.variance_components(large[0][0], large[1][0], clusters=large[2])
    assert math.sqrt(vl.question_var / vs.question_var) == pytest.approx(0.5, abs=0.1)
    # no seed offsets: the seed component is the seed x question noise over Q, tiny here
    assert vs.seed_var < 0.2 * vs.question_var
    r = ss.two_level_bootstrap(small[0][0], small[1][0], clusters=small[2], n_resamples=2000)
    assert r.se == pytest.approx(vs.se, rel=0.2)
    pl = design.design_for_half_width(vs, 0.5 * design.design_for_half_width(vs, 1)["half_width"])
    assert pl["questions_needed"] > 4 * vs.n_questions   # halving the width needs > 4x questions
    # Without clusters and strata the question component is s^2 / Q of the per-question
    # differences of seed means.
    a, b = small[0][0], small[1][0]
    plain = design.variance_components(a, b)
    d = a.mean(0) - b.mean(0)
    assert plain.question_var == pytest.approx(np.var(d, ddof=1) / len(d))
    sm = a.mean(1), b.mean(1)
    assert plain.seed_var == pytest.approx(sum(np.var(m, ddof=1) / len(m) for m in sm))


def test_agrees_with_stats_paired_bootstrap_with_seed_resampling():
    """paired.paired_bootstrap(resample_seeds=True) draws the same two-level distribution by
    another route (multinomial weights over questions), macro over strata included."""
    from hybrid_jax.evaluation.statistics import paired
    a, b, cl = _simulate(np.random.default_rng(3), 1)
    strata = np.tile([0, 1], len(cl) // 2)
    r = ss.two_level_bootstrap(a[0], b[0], clusters=cl, strata=strata, n_resamples=4000)
    d, lo, hi, _ = paired.paired_bootstrap(a[0], b[0], clusters=cl, strata=strata,
                                          n_resamples=4000, resample_seeds=True)
    assert r.diff == pytest.approx(d)
    assert (r.ci_low, r.ci_high) == pytest.approx((lo, hi), abs=0.25 * r.se)
    vc = design.variance_components(a[0], b[0], clusters=cl, strata=strata)
    assert vc.se == pytest.approx(r.se, rel=0.2)
