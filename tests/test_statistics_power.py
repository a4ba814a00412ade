"""Power and seeds needed for a paired-by-seed comparison (statistics/power.py)."""
import dataclasses
import math

import numpy as np
import pytest

from hybrid_jax.evaluation.statistics import design
from hybrid_jax.evaluation.statistics import power as pw
from hybrid_jax.evaluation.statistics import seeds as ss
from hybrid_jax.evaluation.statistics import simulate as sim

Z975, Z80, Z95 = 1.959964, 0.841621, 1.644854


def test_formulas_by_hand():
    # at effect = (z_{0.975} + z_{0.8}) SE one tail has power 0.8; the other adds Phi(-4.76)
    assert pw.power_two_sided(Z975 + Z80, 1.0) == pytest.approx(0.8 + 9.7e-7, abs=1e-6)
    assert pw.power_two_sided(-0.01, 0.01 / (Z975 + Z80)) == pytest.approx(0.8, abs=1e-5)
    assert pw.power_two_sided(0.0, 1.0) == pytest.approx(0.05)      # the level
    # TOST at a true difference of 0: 2 Phi(m / SE - z_{0.95}) - 1
    assert pw.power_tost(Z95 + Z975, 1.0) == pytest.approx(0.95, abs=1e-6)
    assert pw.power_tost(1.0, 1.0) == 0.0                            # the interval is wider
    # a true difference on the margin: rejected at the level alpha, whatever the SE
    assert pw.power_tost(2.0, 0.01, true_diff=2.0) == pytest.approx(0.05, abs=1e-9)
    with pytest.raises(ValueError):
        pw.power_tost(0.0, 1.0)
    # no variance left
    assert pw.power_two_sided(0.01, 0.0) == 1.0 and pw.power_two_sided(0.0, 0.0) == 0.05
    assert pw.power_tost(0.01, 0.0) == 1.0 and pw.power_tost(0.01, 0.0, true_diff=0.02) == 0.0


def test_seeds_needed():
    """sigma2_seed 1, no question variance: SE = 1 / sqrt(S). At effect (z + z_b) / sqrt(10),
    10 seeds reach 80% and 9 do not; a question term alone too large gives inf."""
    pilot = pw.Pilot(1.0, 0.0, 5, 100)
    effect = (Z975 + Z80) / math.sqrt(10)
    assert pw.seeds_for_power(pilot, effect) == 10
    assert pw.power_two_sided(effect, pilot.se(9)) < 0.8 <= pw.power_two_sided(effect,
                                                                               pilot.se(10))
    assert pw.seeds_for_power(pilot, 100.0) == pw.MIN_SEEDS
    noisy = pw.Pilot(1.0, (effect / (Z975 + Z80)) ** 2 * 1.01, 5, 100)
    assert pw.seeds_for_power(noisy, effect) == math.inf
    # ... and four times the clusters quarter the question term
    assert pw.seeds_for_power(noisy, effect, n_clusters=400) < math.inf
    assert noisy.se(10, 400) == pytest.approx(math.sqrt(0.1 + noisy.question_var / 4))
    # TOST at a true 0 needs m / SE >= z_{0.95} + z_{0.9}: S >= (1.645 + 1.282)^2 / m^2
    s = pw.seeds_for_tost(pilot, 0.5)
    assert s == math.ceil((Z95 + 1.281552) ** 2 / 0.25)
    assert pw.seeds_for_tost(pilot, 0.5, true_diff=0.6) == math.inf


def test_pilot_from_components_and_its_upper_limit():
    rng = np.random.default_rng(4)
    X = sim.seeded_scores(rng, 1, [0.01, 0.0], n_seeds=4, n_clusters=80, cluster_size=2)[0]
    cl, st = sim.layout(80, 2, by_language=True)
    vc = design.variance_components(X[0], X[1], clusters=cl, strata=st, paired_seeds=True)
    pilot = pw.Pilot.from_components(vc)
    assert pilot.se(4) == pytest.approx(vc.se)
    assert pilot.seed_var_per_seed == pytest.approx(4 * vc.seed_var)
    # chi2 with 3 df: 20% quantile 1.0052, so the 80% upper limit is 3 / 1.0052 s^2
    up = pilot.with_seed_var_upper(0.8)
    assert up.seed_var_per_seed == pytest.approx(pilot.seed_var_per_seed * 3 / 1.005174, rel=1e-4)
    assert up.question_var == pilot.question_var
    with pytest.raises(ValueError, match="same number"):
        pw.Pilot.from_components(design.variance_components(X[0], X[1, :2]))


def test_formula_power_matches_simulated_rejection_rates():
    """300 datasets of 8 seed pairs x 300 clusters in two languages, true difference 0.007: the
    paired two-level bootstrap's rejection rate at 0.05 is equation (2)'s power within 6 points;
    the same datasets shifted to a true difference of 0 give TOST at +-0.007 the power of (3).
    (Shifting A by a constant shifts every replicate by it.)"""
    rng = np.random.default_rng(77)
    n, S, K, L, effect = 300, 8, 300, 2, 0.007
    X = sim.seeded_scores(rng, n, [effect, 0.0], n_seeds=S, n_clusters=K, cluster_size=L)
    cl, st = sim.layout(K, L, by_language=True)
    truth = sim.Components().difference_variance(S, K, L)
    pilot = pw.Pilot(truth["seed_var_per_seed"], truth["question_var"], S, K)
    want, want_tost = (pw.power_two_sided(effect, pilot.se(S)),
                       pw.power_tost(effect, pilot.se(S)))
    assert 0.5 < want < 0.85 and 0.4 < want_tost < 0.8      # a range where rates can disagree
    rejected = equivalent = 0
    for i in range(n):
        r = ss.two_level_bootstrap(X[i, 0], X[i, 1], clusters=cl, strata=st, n_resamples=400,
                                   paired_seeds=True, seed=i)
        rejected += r.p_value < 0.05
        null = ss.SeedBootstrap.from_replicates(r.diff - effect, r.replicates - effect)
        equivalent += null.tost(effect)["tost_equivalent"]
    assert rejected / n == pytest.approx(want, abs=0.06), (rejected / n, want)
    assert equivalent / n == pytest.approx(want_tost, abs=0.06), (equivalent / n, want_tost)


def test_power_plan_rows():
    pilot = pw.Pilot(2e-5, 6e-6, 3, 300)
    plan = pw.power_plan(pilot, 0.007, 0.01, seeds=(3, 10))
    assert [r["seeds"] for r in plan["rows"]] == [3, 10]
    assert plan["rows"][1]["se"] == pytest.approx(math.sqrt(2e-6 + 6e-6))
    assert plan["rows"][0]["power"] < plan["rows"][1]["power"]
    assert plan["rows"][1]["mde"] == pytest.approx((Z975 + Z80) * math.sqrt(8e-6), rel=1e-5)
    need = plan["seeds_needed"]
    assert pw.power_two_sided(0.007, pilot.se(need)) >= 0.8 > pw.power_two_sided(
        0.007, pilot.se(need - 1))


def test_pilot_from_runs_takes_the_interaction_out_of_the_question_term():
    """Pilots of 4 seed pairs with a large seed x question noise (sd 0.08): from_components'
    question term carries noise / S_pilot of it and its SE at 20 seeds is too large; from_runs
    splits it off, and its question term and SE match the model's."""
    rng = np.random.default_rng(9)
    sd = sim.Components(noise=0.08)
    S, K, L = 4, 200, 2
    X = sim.seeded_scores(rng, 30, [0.0, 0.0], n_seeds=S, n_clusters=K, cluster_size=L, sd=sd)
    cl, st = sim.layout(K, L, by_language=True)
    truth = sd.difference_variance(20, K, L)
    split, whole = [], []
    for x in X:
        kw = dict(clusters=cl, strata=st, paired_seeds=True)
        split.append(pw.Pilot.from_runs(x[0], x[1], **kw))
        whole.append(pw.Pilot.from_components(design.variance_components(x[0], x[1], **kw)))
    assert np.mean([p.question_var for p in split]) == pytest.approx(truth["question_var"],
                                                                     rel=0.15)
    assert np.mean([p.interaction_var for p in split]) == pytest.approx(2 * 0.08 ** 2 / (K * L),
                                                                        rel=0.15)
    assert np.mean([p.se(20) ** 2 for p in split]) == pytest.approx(truth["se"] ** 2, rel=0.1)
    assert np.mean([p.se(20) ** 2 for p in whole]) > 1.4 * truth["se"] ** 2
    # the same seeds and clusters as the pilot: the split changes nothing but the double count
    p = split[0]
    assert p.se(S) ** 2 == pytest.approx(p.seed_var_per_seed / S + p.question_var)
    # twice the clusters halve the question term and the interaction in the seed term
    assert p.se(S, 2 * K) ** 2 == pytest.approx(
        (p.seed_var_per_seed - p.interaction_var / 2) / S + p.question_var / 2)
    # a pilot whose seed pairs happen to agree (sigma2_seed below its interaction part): the
    # pure seed variance is floored at 0, the interaction still shrinks only with the clusters
    lucky = dataclasses.replace(p, seed_var_per_seed=p.interaction_var / 10)
    assert lucky.se(S, 2 * K) ** 2 == pytest.approx(
        p.interaction_var / 2 / S + p.question_var / 2)


def test_clusters_needed_when_questions_cap_the_power():
    """question_var 1e-5 at 100 clusters caps the power at 0.007 below 80% whatever the seeds;
    K clusters give SE^2 = 1e-5 / S + 1e-5 * 100 / K, and 80% needs SE <= 0.007 / 2.8016."""
    pilot = pw.Pilot(1e-5, 1e-5, 5, 100)
    assert pw.seeds_for_power(pilot, 0.007) == math.inf
    k = pw.clusters_for_power(pilot, 0.007, n_seeds=10)
    budget = (0.007 / (Z975 + Z80)) ** 2 - 1e-6
    assert k == pytest.approx(1e-3 / budget, abs=1.5)
    assert pw.power_two_sided(0.007, pilot.se(10, k)) >= 0.8 > pw.power_two_sided(
        0.007, pilot.se(10, k - 1))
    # with 2 seed pairs of sigma2_seed 2e-5 the seed term alone, 1e-5, is over the budget
    assert pw.clusters_for_power(pw.Pilot(2e-5, 1e-5, 5, 100), 0.007, n_seeds=2) == math.inf


@pytest.mark.parametrize("pairs,power_,decision", [
    (4, 0.10, "wait"), (5, 0.79, "add"), (5, 0.80, "stop"), (7, 0.95, "stop"), (10, 0.5, "stop"),
    (9, 0.5, "add")])
def test_sequential_decision_reads_the_power_only_after_the_first_pairs(pairs, power_, decision):
    q = pw.sequential_decision(pairs, power_, after=5, most=10, target=0.8)
    assert q["decision"] == decision and q["seed_pairs"] == pairs
