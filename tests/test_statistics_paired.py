"""Paired bootstrap / permutation tests on synthetic runs with a known difference; Holm."""
import numpy as np
import pytest

from hybrid_jax.evaluation.statistics import paired, tables


def _runs(n, diff, rng, seeds=1):
    base = rng.uniform(0.2, 0.8, n)  # query difficulty shared by both runs (paired design)
    a = [np.clip(base + diff + rng.normal(0, 0.1, n), 0, 1.5) for _ in range(seeds)]
    b = [np.clip(base + rng.normal(0, 0.1, n), 0, 1.5) for _ in range(seeds)]
    return a, b


def test_real_difference_detected_and_covered():
    rng = np.random.default_rng(0)
    a, b = _runs(400, 0.03, rng)
    r = paired.compare_runs(a[0], b[0], n_resamples=2000, seed=1)
    true_diff = 0.03
    assert r.ci_low < true_diff < r.ci_high
    assert r.p_bootstrap < 0.01 and r.p_permutation < 0.01
    assert r.diff == pytest.approx(r.mean_a - r.mean_b)


def test_null_difference_large_p():
    rng = np.random.default_rng(1)
    a, b = _runs(400, 0.0, rng)
    r = paired.compare_runs(a[0], b[0], n_resamples=2000, seed=2)
    assert r.ci_low < 0 < r.ci_high
    assert r.p_bootstrap > 0.05 and r.p_permutation > 0.05


def test_bootstrap_coverage():
    rng = np.random.default_rng(2)
    covered = 0
    for i in range(40):
        a, b = _runs(200, 0.02, rng)
        _, lo, hi, _ = paired.paired_bootstrap(a[0], b[0], n_resamples=400, seed=i)
        covered += lo < 0.02 < hi
    assert covered >= 34  # nominal 95%: 38/40; allow sampling noise


def test_pooled_seeds_and_clusters_and_strata():
    rng = np.random.default_rng(3)
    a, b = _runs(300, 0.02, rng, seeds=3)
    r = paired.compare_runs(a, b, n_resamples=1000, seed=0)
    assert (r.n_seeds_a, r.n_seeds_b) == (3, 3)
    assert r.diff == pytest.approx(np.mean(a) - np.mean(b))
    assert r.ci_low < 0.02 < r.ci_high and r.p_bootstrap < 0.01
    wide = paired.compare_runs(a, b, n_resamples=1000, seed=0, resample_seeds=True)
    assert wide.diff == r.diff
    # Strata: the statistic is the macro mean over strata, not the pooled mean.
    x = np.array([1.0, 1.0, 1.0, 0.0])
    y = np.zeros(4)
    strata = ["en", "en", "en", "de"]
    r = paired.compare_runs(x, y, strata=strata, clusters=["q1", "q2", "q3", "q1"],
                           n_resamples=200)
    assert r.diff == pytest.approx(0.5) and r.n_clusters == 3


def test_holm_hand_values():
    adj = paired.holm([0.01, 0.04, 0.03, 0.005])
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(paired.holm([0.5, 0.9]), [1.0, 1.0])
    out = paired.holm([0.01, np.nan])
    assert out[0] == pytest.approx(0.01) and np.isnan(out[1])


def test_mismatched_runs_rejected():
    with pytest.raises(ValueError):
        paired.compare_runs(np.ones(3), np.ones(4))


def test_language_views():
    views = ["cross/de->en", "cross/en->de", "cross/en->fr", "mono/en", "multi", "multi/en"]
    assert tables.language_views("en", "mono", views) == ["mono/en"]
    assert tables.language_views("de", "mono", views) == []
    assert tables.language_views("en", "cross", views) == ["cross/en->de", "cross/en->fr"]
    with pytest.raises(ValueError, match="setting 'multi'"):
        tables.language_views("en", "multi", views)


def test_add_holm_sets_the_family_key():
    rows = [{"p_bootstrap": p} for p in (0.01, 0.04, 0.03, 0.005)]
    paired.add_holm(rows[:2], "p_a")
    assert [r.get("p_a") for r in rows] == pytest.approx([0.02, 0.04, None, None])
    paired.add_holm(rows)
    assert [r["p_holm"] for r in rows] == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_paired_row_aligns_queries_present_in_every_run():
    def table(values):  # one view, queries q0..q3, cluster = qid
        return {"mono/en": {f"q{i}": (v, f"q{i}", "en") for i, v in enumerate(values)}}

    a = [table([1.0, 0.5, np.nan, 1.0]), table([1.0, 0.7, 1.0, 1.0])]
    b = [{"mono/en": {k: v for k, v in table([0.0, 0.5, 0.0, 9.0])["mono/en"].items()
                      if k != "q3"}}]
    r = tables.paired_row(a, b, ["mono/en"], None, n_resamples=50)
    # q2 is NaN in one seed of A and q3 missing from B: only q0 and q1 are compared
    assert r["n_queries"] == 2 and r["n_seeds_a"] == 2
    assert r["mean_a"] == pytest.approx(np.mean([1.0, 0.6]))
    assert r["diff"] == pytest.approx(np.mean([1.0, 0.1]))
    assert tables.paired_row(a, b, ["mono/de"], None) is None
