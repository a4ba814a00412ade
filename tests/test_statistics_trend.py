"""Dose-response trend test over alphas with seeds shared across doses (statistics/trend.py)."""
import numpy as np
import pytest

from hybrid_jax.evaluation.statistics import simulate as sim
from hybrid_jax.evaluation.statistics import trend

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def test_slope_is_least_squares_over_runs_and_shared_terms_cancel():
    """The slope is the OLS fit of the per-run macro scores on alpha over all J x S runs; adding
    an offset per seed (shared by the doses) or per question changes no replicate."""
    rng = np.random.default_rng(0)
    K, L, S = 30, 2, 5
    X = sim.seeded_scores(rng, 1, 0.02 * np.array(ALPHAS), n_seeds=S, n_clusters=K,
                          cluster_size=L)[0]
    cl, st = sim.layout(K, L, by_language=True)
    r = trend.trend_test(X, ALPHAS, clusters=cl, strata=st, n_resamples=500)
    runs = X.reshape(-1, X.shape[2])
    per_run = np.mean([runs[:, st == h].mean(1) for h in range(L)], axis=0)   # macro per run
    slope, intercept = np.polyfit(np.repeat(ALPHAS, S), per_run, 1)
    assert r.slope == pytest.approx(slope) and r.intercept == pytest.approx(intercept)
    assert r.dose_means == pytest.approx(per_run.reshape(5, S).mean(1))
    shifted = X + rng.normal(0, 0.2, (1, S, 1)) + rng.normal(0, 0.2, (1, 1, K * L))
    r2 = trend.trend_test(shifted, ALPHAS, clusters=cl, strata=st, n_resamples=500)
    assert np.allclose(r2.bootstrap.replicates, r.bootstrap.replicates, atol=1e-12)
    # by hand: doses (0, 1), two seeds, one question each; the slope is the mean difference
    hand = trend.trend_test([[[0.5], [0.7]], [[0.6], [0.9]]], (0, 1), n_resamples=200)
    assert hand.slope == pytest.approx(0.15) and hand.intercept == pytest.approx(0.6)
    assert set(np.round(hand.bootstrap.replicates, 12)) <= {0.1, 0.15, 0.2}


def test_known_linear_effect_is_recovered():
    """Slope 0.02 per unit alpha, 5 seeds per dose shared across doses: the interval covers it
    and excludes 0."""
    rng = np.random.default_rng(1)
    K, L = 150, 2
    X = sim.seeded_scores(rng, 1, 0.02 * np.array(ALPHAS), n_seeds=5, n_clusters=K,
                          cluster_size=L)[0]
    cl, st = sim.layout(K, L, by_language=True)
    r = trend.trend_test(X, ALPHAS, clusters=cl, strata=st, n_resamples=2000)
    assert r.bootstrap.ci_low < 0.02 < r.bootstrap.ci_high
    assert r.bootstrap.ci_low > 0 and r.bootstrap.p_value < 0.01
    assert r.bootstrap.se == pytest.approx(r.components.se, rel=0.25)
    row = r.as_dict()
    assert row["slope"] == r.slope and row["n_seeds"] == 5 and row["p"] == r.bootstrap.p_value


def test_zero_slope_is_rejected_at_about_the_level():
    """200 datasets with no dose effect (doses still differ by seed x dose and question x dose
    noise): p < 0.05 in about 5% of them."""
    rng = np.random.default_rng(2)
    n, K, L = 200, 60, 2
    X = sim.seeded_scores(rng, n, np.zeros(5), n_seeds=5, n_clusters=K, cluster_size=L)
    cl, st = sim.layout(K, L, by_language=True)
    p = np.array([trend.trend_test(X[i], ALPHAS, clusters=cl, strata=st, n_resamples=400,
                                   seed=i).bootstrap.p_value for i in range(n)])
    assert 0.01 <= np.mean(p < 0.05) <= 0.10, np.mean(p < 0.05)


def test_bad_grids():
    X = np.zeros((5, 3, 4))
    with pytest.raises(ValueError, match="two different doses"):
        trend.trend_test(X, (0.5,) * 5)
    with pytest.raises(ValueError, match=r"\[doses=4"):
        trend.trend_test(X, ALPHAS[:4])
    with pytest.raises(ValueError, match="2 seeds"):
        trend.trend_test(X[:, :1], ALPHAS)
    with pytest.raises(ValueError, match="same seeds"):
        trend.trend_test([np.zeros((3, 4))] * 4 + [np.zeros((2, 4))], ALPHAS)
    with pytest.raises(ValueError, match="finite"):
        trend.trend_test(np.where(X == 0, np.nan, X), ALPHAS)
