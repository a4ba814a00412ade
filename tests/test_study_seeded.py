"""The second edition's analysis (study/seeded.py) and its report on synthetic runs with known
effects: per-language verdicts after Holm, the zero-shot family, the budget curve and the alpha
sweep."""
import json
import zlib

import numpy as np
import pytest

from hybrid_jax.evaluation import per_query
from hybrid_jax.study import editions, report
from hybrid_jax.study import seeded
from hybrid_jax.study.markdown import Page
from hybrid_jax.study.runs import Run, by_condition

LANGS = ("de", "en")
KEY = "map@20"
N_Q = 120  # questions per language (clusters: a question and its translation)


def _groups(rng, mono_shift: dict, cross_shift: float, noise: float) -> dict:
    """pool=Y for each language (mono rows: lang Y; cross rows: the other) and multi; scores
    are a per-question base (shared by every run) plus the run's shift plus noise."""
    base = np.random.default_rng(7).uniform(0.3, 0.9, N_Q)
    qid = np.array([f"{x}-{i}" for x in LANGS for i in range(N_Q)])
    lang = np.array([x for x in LANGS for _ in range(N_Q)])
    cluster = np.array([str(i) for _ in LANGS for i in range(N_Q)])
    out = {}
    for y in LANGS:
        shift = np.where(lang == y, [mono_shift.get(y, 0.0) for y in lang], cross_shift)
        out[f"pool={y}"] = {"qid": qid, "lang": lang, "cluster": cluster,
                            KEY: np.tile(base, 2) + shift + rng.normal(0, noise, 2 * N_Q)}
    out["multi"] = {"qid": qid, "lang": lang, "cluster": cluster,
                    KEY: np.tile(base, 2) - 0.2 + rng.normal(0, noise, 2 * N_Q),
                    "rank_distance": np.tile(base, 2) * 100}
    return out


def _metrics(groups: dict) -> dict:
    def mean(g, x):
        t = groups[g]
        v = float(t[KEY][t["lang"] == x].mean())
        return {KEY: v, "recall@1": v / 2, "recall@10": min(1.0, 2 * v)}

    rd = groups["multi"]["rank_distance"]
    lang = groups["multi"]["lang"]

    other = {"de": "en", "en": "de"}
    return {"type": "lareqa", "languages": list(LANGS),
            "mono": {"per_language": {x: mean(f"pool={x}", x) for x in LANGS}},
            "cross": {"per_query_language": {x: mean(f"pool={other[x]}", x) for x in LANGS}},
            "multi": {"per_language": {x: mean("multi", x) for x in LANGS}},
            "rank_distance": {"macro": float(rd.mean()), "per_language": {
                x: {"rank_distance": float(rd[lang == x].mean())} for x in LANGS}}}


def _write(folder, groups):
    folder.mkdir(parents=True)
    per_query.save(folder / "per_query.npz", groups)
    (folder / "metrics.json").write_text(json.dumps(_metrics(groups)))


def _run(tmp_path, condition, seed, alpha, mono_shift, cross_shift, noise=0.002,
         steps=(2, 4)):
    rng = np.random.default_rng(zlib.crc32(f"{condition}-{seed}".encode()))
    d = tmp_path / f"{condition}-s{seed}"
    _write(d / "eval" / "b", _groups(rng, mono_shift, cross_shift, noise))
    for i, s in enumerate(steps):  # the curve: the effect grows with the steps
        scale = (i + 1) / len(steps)
        _write(d / "eval_steps" / f"step_{s}" / "eval" / "b",
               _groups(rng, {k: v * scale for k, v in mono_shift.items()}, cross_shift * scale,
                       noise))
    return Run(d.name, condition, seed, alpha, d)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    runs = [Run("zero-shot", "zero-shot", None, None, tmp / "zs")]
    _write(tmp / "zs" / "eval" / "b", _groups(np.random.default_rng(1), {}, 0.0, 0.002))
    for seed in range(3):
        # X-X-mono: +0.03 mono on both; X-Y: +0.03 cross; hybrid: mono +0.03 on de (same as
        # X-X-mono: equivalent), +0.08 on en (a gain over X-X-mono), cross +0.03 (= X-Y).
        runs.append(_run(tmp, "mono", seed, 1.0, {"de": 0.03, "en": 0.03}, 0.0))
        runs.append(_run(tmp, "cross", seed, 0.0, {}, 0.03))
        runs.append(_run(tmp, "hybrid-a0.5", seed, 0.5, {"de": 0.03, "en": 0.08}, 0.03))
    return by_condition(runs)


KW = dict(delta=0.01, n_resamples=2000)


def test_families_verdicts(grid):
    fams = seeded.families(grid, "b", LANGS, KEY, "hybrid-a0.5", "primary", **KW)
    primary = {r["scope"]: r for r in fams["primary"]}
    assert primary["en"]["verdict"] == "significant gain"
    assert primary["en"]["ci_low"] < 0.05 < primary["en"]["ci_high"]
    assert primary["de"]["verdict"] == "equivalent within ±delta"
    assert abs(primary["de"]["diff"]) < 0.005 and primary["de"]["mde"] < 0.01
    assert all(r["p_holm"] >= r["p"] for r in fams["primary"])
    cross = {r["scope"]: r for r in fams["S2"]}
    assert cross["de"]["verdict"] == "equivalent within ±delta"
    # Every trained condition against the zero-shot model: 3 conditions x 2 languages.
    s3 = fams["S3"]
    assert [(r["a"], r["scope"]) for r in s3] == [
        (c, x) for c in ("mono", "cross", "hybrid-a0.5") for x in LANGS]
    by = {(r["a"], r["scope"]): r for r in s3}
    assert by[("mono", "en")]["verdict"] == "significant gain"
    assert abs(by[("mono", "en")]["diff"] - 0.03) < 0.005
    assert by[("cross", "en")]["n_seeds_b"] == 1


def test_descriptive_rows_are_uncorrected(grid):
    rows = seeded.descriptive(grid, "b", ["en"], LANGS, KEY, "hybrid-a0.5", **KW)
    assert {(r["b"], r["setting"], r["metric"], r["scope"]) for r in rows} == {
        (ref, s, m, sc) for ref in ("mono", "cross")
        for s, m in (("mono", KEY), ("cross", KEY), ("multi", KEY), ("multi", "rank_distance"))
        for sc in ("macro_hr", "macro_all")}
    assert all("uncorrected" in r["verdict"] for r in rows)


def test_budget_curve_grows_with_the_steps(grid):
    rows = seeded.curves(grid, "b", LANGS, KEY, "hybrid-a0.5", **KW)
    en = {r["step"]: r["diff"] for r in rows if r["b"] == "mono" and r["scope"] == "en"}
    assert sorted(en) == [2, 4]
    assert en[2] == pytest.approx(0.025, abs=0.004) and en[4] == pytest.approx(0.05, abs=0.004)
    macro = [r for r in rows if r["scope"] == "macro"]
    assert {(r["b"], r["step"]) for r in macro} == {(b, s) for b in ("mono", "cross")
                                                      for s in (2, 4)}


def test_sweep_and_design(grid):
    rows = seeded.sweep(grid, "b", LANGS, KEY, seeds=(0, 1))
    assert [r["alpha"] for r in rows] == [0.0, 0.5, 1.0]
    assert all(r["n_seeds"] == 2 for r in rows)
    by = {r["alpha"]: r for r in rows}
    assert by[0.5]["mono"] - by[1.0]["mono"] == pytest.approx(0.025, abs=0.003)
    d = seeded.design(grid, "b", LANGS, KEY, "hybrid-a0.5")
    assert [x["language"] for x in d] == list(LANGS)
    assert all(x["for_half_width"]["half_width"] < 0.01 for x in d)


def test_analyse_the_whole_grid(grid):
    runs = [r for rs in grid.values() for r in rs]
    out = seeded.analyse(runs, benchmarks=["b"], high_resource=("en", "de"), n_resamples=500)
    b = out["benchmarks"]["b"]
    assert b["high_resource"] == ["en", "de"] and set(b["families"]) == {"primary", "S2", "S3"}
    mono = b["summary"]["mono"]["mono map@20"]
    assert mono["en"][2] == 3 and b["summary"]["zero-shot"]["mono map@20"]["en"][2] == 1
    assert mono["macro_hr"][0] == pytest.approx(np.mean([mono["en"][0], mono["de"][0]]))
    assert [r["alpha"] for r in out["sweep"]] == [0.0, 0.5, 1.0]
    json.dumps(out)  # the report's data file


def _render(a, info, planned, **presentation):
    return report.render(editions.EDITIONS["second"], Page(a, info, planned, "t", presentation))


def test_a_partial_grid_says_so(grid):
    runs = [r for rs in grid.values() for r in rs]
    a = seeded.analyse(runs, benchmarks=["b"], high_resource=("en", "de"), n_resamples=200)
    info = [{"name": r.name, "condition": r.condition, "seed": r.seed, "wall_seconds": 60.0,
             "sessions": 1, "code": "git abc"} for r in runs]
    text = _render(a, info, planned=len(runs) + 3)
    assert f"not complete: {len(runs)} of {len(runs) + 3} runs" in text
    assert "significant gain" in text and "equivalent within ±delta" in text
    full = _render(a, info, planned=len(runs))
    assert "not complete" not in full
    assert f"{len(runs) * 60 / 3600:.2f} h" in full
    assert f"({2 * len(runs) * 60 / 3600:.2f} CPU-hours)" in full and "Deviations" in full
    assert full.split("## Deviations from the protocol\n\n")[1].startswith("None.")


def test_the_report_says_what_its_config_asks_around_the_figures(grid):
    """Title, links to companion reports, deviations and the machine (the GPU grid's runs
    shared one device, so no CPU-hours) come from the experiment config."""
    runs = [r for rs in grid.values() for r in rs]
    a = seeded.analyse(runs, benchmarks=["b"], high_resource=("en", "de"), n_resamples=200)
    info = [{"name": r.name, "condition": r.condition, "seed": r.seed, "wall_seconds": 90.0,
             "sessions": 1, "code": "git abc"} for r in runs]
    text = _render(a, info, planned=len(runs), title="At batch 100",
                   see_also=["other.md|the CPU grid"], machine="one GPU", cpu_cores=0,
                   deviations=["batch 100, not 64"])
    assert text.startswith("# At batch 100\n\nSee also: [the CPU grid](other.md).")
    assert "\n- batch 100, not 64\n" in text and "None." not in text
    assert "CPU-hours" not in text and "side by side on one GPU" in text
    assert f"**{len(runs) * 90 / 3600:.2f} h**" in text


def test_report_of_a_grid_without_hybrid_runs_yet(grid, tmp_path):
    """Early in the grid (zero-shot and X-X-mono only): the families that exist, no figure for
    the ones that do not."""
    runs = grid["zero-shot"] + grid["mono"][:1]
    path = report.write_report(editions.EDITIONS["second"], runs, out_dir=tmp_path,
                               report_name="tradeoff.md", planned=10,
                               parameters=dict(benchmarks=["b"], high_resource=("en", "de"),
                                               n_resamples=200))
    text = path.read_text()
    assert "not complete: 2 of 10 runs" in text and "S3:" in text and "Primary" not in text
    assert "one seed so far" in text  # a single trained seed: no seed variance in the interval
    assert not list((tmp_path / "tradeoff").glob("answer_*.png"))
