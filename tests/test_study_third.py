"""The third edition's analysis and report (study/third.py, sections_third.py, figures_third.py)
on the registered grids' plans (configs/tradeoff3.py variants on the tiny model): runs with known
effects written where the driver writes them, the report made by the driver with --report_only,
and checks against the per-query files by hand; then real tiny runs end to end."""
import contextlib
import io
import json
import math
import zlib

import numpy as np
import pytest

from conftest import REPO
from configs import tradeoff, tradeoff3
from hybrid_jax.evaluation import per_query
from hybrid_jax.evaluation.statistics import power, seeds as seed_stats
from hybrid_jax.study import driver, plan, sections_third, third, third_grids

KEY = "map@20"
LANGS = ("de", "en", "ru")     # the synthetic benchmark; ru is never trained on (TINY_LANGUAGES)
HR = ("en", "de", "ru")
N_Q = 40
# Per-language mono gain of a full dose of X-X-mono (alpha 1) over X-Y (alpha 0).
MONO_GAIN = {"en": 0.03, "de": 0.0, "ru": 0.015}
SEED_EFFECT = {s: 0.05 * math.sin(3 * s + 1) for s in range(4)}  # shared by a seed's conditions
N_BOOT = 2000


def _config(variant: str, seeds=(0, 1, 2, 3)):
    c = tradeoff3.get_config(variant)
    tradeoff.tiny_model(c)
    tradeoff3.apply_direction(c, "B" if variant == "B" else "A", tradeoff.TINY_LANGUAGES)
    e = c.experiment
    e.seeds, e.high_resource, e.n_bootstrap, e.edition = seeds, HR, N_BOOT, "third"
    e.seeds_b = seeds if variant in ("", "B") else e.seeds_b
    if variant == "":
        e.sweep_seeds = (0, 1, 2)
    return c


def _groups(alpha, seed, langs, scale: float, offset: float) -> dict:
    """pool=Y (mono rows: language Y; cross rows: the others) and multi (with rank distance)."""
    base = np.random.default_rng(7).uniform(0.3, 0.7, N_Q)
    rng = np.random.default_rng(zlib.crc32(f"{alpha}-{seed}-{scale}-{offset}".encode()))
    qid = np.array([f"{x}-{i}" for x in langs for i in range(N_Q)])
    lang = np.repeat(np.array(langs), N_Q)
    cluster = np.array([str(i) for _ in langs for i in range(N_Q)])
    a = 0.4 if alpha is None else alpha      # the zero-shot model: below every trained run
    common = np.tile(base, len(langs)) + offset + SEED_EFFECT.get(seed, 0.0)
    gain = np.array([MONO_GAIN.get(x, 0.0) for x in lang]) * scale * a

    def noisy(v):
        return v + rng.normal(0, 0.002, len(v))

    out = {f"pool={y}": {"qid": qid, "lang": lang, "cluster": cluster,
                         KEY: noisy(np.where(lang == y, common + gain, common - 0.02 * a))}
           for y in langs}
    out["multi"] = {"qid": qid, "lang": lang, "cluster": cluster,
                    KEY: noisy(common - 0.2 + 0.01 * a),
                    "rank_distance": noisy(common * 0 + 50 + 10 * (1 - a))}
    return out


def _metrics(groups: dict, langs) -> dict:
    def mean(g, x):
        t = groups[g]
        return {KEY: float(t[KEY][t["lang"] == x].mean())}

    m = groups["multi"]
    rd = {x: float(m["rank_distance"][m["lang"] == x].mean()) for x in langs}
    return {"type": "lareqa", "languages": list(langs),
            "mono": {"per_language": {x: mean(f"pool={x}", x) for x in langs}},
            "cross": {"per_query_language": {x: {KEY: float(np.mean(
                [mean(f"pool={y}", x)[KEY] for y in langs if y != x]))} for x in langs}},
            "multi": {"per_language": {x: mean("multi", x) for x in langs}},
            "rank_distance": {"macro": float(np.mean(list(rd.values()))),
                              "per_language": {x: {"rank_distance": v} for x, v in rd.items()}}}


def _write_grid(workdir, config, dataset, langs, skip=(), scale=1.0, offset=0.0):
    for spec in plan.plan(config):
        if spec.name in skip:
            continue
        folder = workdir / "runs" / spec.name / "eval" / dataset
        folder.mkdir(parents=True)
        groups = _groups(spec.alpha, spec.seed, langs, scale, offset)
        per_query.save(folder / "per_query.npz", groups)
        (folder / "metrics.json").write_text(json.dumps(_metrics(groups, langs)))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The main grid (hybrid-a0.5-s3 and hybrid-a0.75-s2 unfinished), direction B (seed 3
    unfinished), budget10 (seed 2 unfinished) and the weakened start; budget80 and both
    fractions absent. The report as the driver writes it."""
    root = tmp_path_factory.mktemp("third")
    w = root / "tradeoff3"
    config = _config("")
    config.experiment.see_also = ("tradeoff_second_edition.md|the second edition",)
    _write_grid(w, config, "xquad-r", LANGS, skip=("hybrid-a0.5-s3", "hybrid-a0.75-s2"))
    _write_grid(root / "tradeoff3-B", _config("B"), "mlqa-r", ("de", "en"),
                skip=("mono-s3", "hybrid-a0.5-s3"))
    _write_grid(root / "tradeoff3-budget10", _config("budget10", (0, 1, 2)), "xquad-r", LANGS,
                skip=("mono-s2",), scale=0.3)
    _write_grid(root / "tradeoff3-weak", _config("weak", (0, 1, 2)), "xquad-r", LANGS,
                scale=2.0, offset=-0.2)
    with contextlib.redirect_stdout(io.StringIO()):
        path = driver.run_experiment(config, w, report_only=True)
    data = json.loads((path.parent / "tradeoff" / "analysis.json").read_text())
    return {"w": w, "report": path, "text": path.read_text(), "a": data["analysis"],
            "config": config}


def _mono_matrix(run_dir, dataset, langs):
    """[questions] of one run's mono map@20 for `langs`, with the views and clusters."""
    groups = per_query.load(run_dir / "eval" / dataset / "per_query.npz")
    cols = [(x, groups[f"pool={x}"]) for x in langs]
    vals = np.concatenate([t[KEY][t["lang"] == x] for x, t in cols])
    views = np.concatenate([[x] * int((t["lang"] == x).sum()) for x, t in cols])
    clusters = np.concatenate([t["cluster"][t["lang"] == x] for x, t in cols])
    return vals, views, clusters


def _seed_arrays(w, cond, seeds, dataset="xquad-r", langs=HR):
    rows = [_mono_matrix(w / "runs" / f"{cond}-s{s}", dataset, sorted(langs)) for s in seeds]
    return np.array([r[0] for r in rows]), rows[0][1], rows[0][2]


def _macro(values, views):
    return float(np.mean([values[views == x].mean() for x in sorted(set(views))]))


def test_sibling_plans_match_the_registered_grids():
    for variant in ("B", "budget10", "weak"):
        c = _config(variant, (0, 1, 2))
        sib = next(s for s in third_grids.siblings(c.experiment, "xquad-r")
                   if s["name"] == variant)
        names = [r.name for r in third_grids.planned_runs((0, 1, 2), sib["zero_shot"], 0.5)]
        assert names == [s.name for s in plan.plan(c)]
    main = _config("")
    sibs = {s["name"]: s for s in third_grids.siblings(main.experiment, "xquad-r")}
    assert sibs["B"]["seeds"] == [0, 1, 2, 3] and sibs["B"]["dataset"] == "mlqa-r"
    assert sibs["budget80"]["seeds"] == list(tradeoff3.ARM_SEEDS)


def test_primary_is_the_seed_paired_macro_difference(study):
    a, w = study["a"], study["w"]
    r = a["primary"]
    assert r["seeds"] == [0, 1, 2] and r["unpaired"] == [3]  # hybrid-a0.5-s3 unfinished
    A, views, clusters = _seed_arrays(w, "hybrid-a0.5", (0, 1, 2))
    B, _, _ = _seed_arrays(w, "mono", (0, 1, 2))
    by_hand = np.mean([_macro(x, views) - _macro(y, views) for x, y in zip(A, B)])
    assert r["diff"] == pytest.approx(by_hand, abs=1e-12)
    assert r["diff"] == pytest.approx(-0.5 * np.mean(list(MONO_GAIN.values())), abs=0.002)
    paired = seed_stats.two_level_bootstrap(A, B, clusters=clusters, strata=views,
                                            n_resamples=N_BOOT, seed=0, paired_seeds=True)
    assert (r["ci_low"], r["ci_high"], r["se"]) == pytest.approx(
        (*paired.ci(0.95), paired.se), abs=1e-12)
    assert r["paired_seeds"] and r["n_resamples"] == N_BOOT
    unpaired = seed_stats.two_level_bootstrap(A, B, clusters=clusters, strata=views,
                                              n_resamples=N_BOOT, seed=0)
    assert unpaired.se > 3 * paired.se  # the seed effect cancels only when pairs are kept
    assert r["verdict"] == seed_stats.LOSS and r["p_holm"] == r["p"]
    assert r["power_at_delta"] == pytest.approx(power.power_two_sided(0.007, r["se"]))
    assert r["mde"] == pytest.approx(seed_stats.mde(r["se"], 0.05, 0.8))


def _holm(ps):
    order = np.argsort(ps, kind="stable")
    out, running = np.empty(len(ps)), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (len(ps) - i) * ps[j]))
        out[j] = running
    return out


def test_families_are_holm_adjusted_with_verdicts(study):
    a = study["a"]
    s1 = {r["scope"]: r for r in a["S1"]}
    assert list(s1) == list(HR) and all(r["family"] == "S1" for r in a["S1"])
    assert s1["en"]["verdict"] == seed_stats.LOSS
    assert s1["de"]["verdict"] == seed_stats.EQUIVALENT  # no mono gain in de: hybrid = mono
    for rows in (a["S1"], a["S2"]["rows"], a["S3"]):
        np.testing.assert_allclose([r["p_holm"] for r in rows], _holm([r["p"] for r in rows]))
        np.testing.assert_allclose([r["p_tost_holm"] for r in rows],
                                   _holm([r["p_tost"] for r in rows]))
    s2 = a["S2"]["rows"]
    assert [r["scope"] for r in s2] == ["macro", "en", "de"]  # MLQA-R here: no ru
    assert all(r["seeds"] == [0, 1, 2] for r in s2)
    assert [r["a"] for r in a["S3"]] == ["mono", "hybrid-a0.5"]


def test_against_the_zero_shot_only_the_trained_seeds_are_resampled(study):
    w, row = study["w"], study["a"]["S3"][0]
    A, views, clusters = _seed_arrays(w, "mono", (0, 1, 2, 3))
    Z = np.array([_mono_matrix(w / "runs" / "zero-shot", "xquad-r", sorted(HR))[0]])
    boot = seed_stats.two_level_bootstrap(A, Z, clusters=clusters, strata=views,
                                          n_resamples=N_BOOT, seed=0)
    assert (row["n_seeds_a"], row["n_seeds_b"], row["paired_seeds"]) == (4, 1, False)
    assert (row["diff"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (boot.diff, *boot.ci(0.95)), abs=1e-12)


def test_descriptive_rows_and_unseen_languages(study):
    d = study["a"]["descriptive"]
    assert [(r["setting"], r["metric"]) for r in d["rows"]] == [
        ("cross", KEY), ("multi", KEY), ("multi", "rank_distance")]
    assert all("uncorrected" in r["verdict"] for r in d["rows"] + d["unseen"])
    assert study["a"]["unseen_languages"] == ["ru"]
    assert [(r["scope"], r["setting"]) for r in d["unseen"]] == [("ru", "mono"), ("ru", "cross")]
    rd = d["rows"][2]
    assert rd["diff"] == pytest.approx(5.0, abs=0.01)  # 10 (1 - alpha): 5 more at alpha 0.5


def test_dose_response_slope_is_the_least_squares_slope(study):
    dose = study["a"]["dose"]
    assert dose["doses"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert dose["seeds"] == [0, 1]  # hybrid-a0.75-s2 unfinished
    rows = {r["metric"]: r for r in dose["rows"]}
    assert list(rows) == ["mono", "cross", "multi", "rank distance"]
    x, y = [], []
    for d, cond in third.dose_conditions(dose["doses"]).items():
        M, views, _ = _seed_arrays(study["w"], cond, (0, 1))
        for m in M:
            x.append(d)
            y.append(_macro(m, views))
    slope = np.polyfit(x, y, 1)[0]
    assert rows["mono"]["slope"] == pytest.approx(slope, abs=1e-10)
    assert rows["mono"]["slope"] == pytest.approx(np.mean(list(MONO_GAIN.values())), abs=0.002)
    assert rows["rank distance"]["slope"] == pytest.approx(-10, abs=0.01)
    assert rows["mono"]["n_seeds"] == 2 and rows["mono"]["ci_low"] < slope < rows["mono"][
        "ci_high"]
    np.testing.assert_allclose([r["p_holm"] for r in dose["rows"]],
                               _holm([r["p"] for r in dose["rows"]]))


def test_arms_points_and_missing_workdirs(study):
    pts = {(r["axis"], r["x"]): r for r in study["a"]["arms"]}
    assert list(pts) == [("budget", 10), ("budget", 20), ("budget", 80), ("fraction", 0.25),
                         ("fraction", 0.5), ("fraction", 1.0), ("start", "weakened"),
                         ("start", "full")]
    for absent in (("budget", 80), ("fraction", 0.25), ("fraction", 0.5)):
        assert pts[absent]["missing"] == "workdir absent"
    assert pts[("budget", 10)]["seeds"] == [0, 1]      # mono-s2 unfinished there
    assert pts[("budget", 20)]["seeds"] == [0, 1, 2]   # the main grid on the arm seeds
    assert pts[("budget", 20)]["diff"] == pytest.approx(study["a"]["primary"]["diff"], abs=0.002)
    assert pts[("budget", 10)]["diff"] == pytest.approx(0.3 * pts[("budget", 20)]["diff"],
                                                        abs=0.002)
    weak = pts[("start", "weakened")]
    assert weak["diff"] == pytest.approx(2 * pts[("budget", 20)]["diff"], abs=0.003)
    assert weak["zero_shot"] < pts[("start", "full")]["zero_shot"] - 0.1  # its own start


def test_report_sections_cuts_and_figures(study):
    text, a = study["text"], study["a"]
    assert ("The primary endpoint's runs are not complete: hybrid-a0.5-s3 of the main grid "
            "have not finished." in text)
    assert "See also: [the second edition](tradeoff_second_edition.md)." in text
    assert "The pilot's tables are not beside this grid (tradeoff3-pilot/report/" in text
    assert sections_third.answer_sentence(a) in text
    assert "**Yes: hybrid training cost monolingual accuracy.**" in text
    for title in ("## Primary endpoint", "Power reached: SE", "## S1:", "## S2:", "## S3:",
                  "## Descriptive", "Languages never seen in training (ru)",
                  "## The alpha dose-response", "## Exploratory arms", "## Runs finished",
                  "## Cuts"):
        assert title in text, title
    assert "- main: hybrid-a0.5-s3, hybrid-a0.75-s2" in text
    for r in a["S1"]:   # each row's SE, then the power it gives at ±delta
        assert f"| {r['se']:.4f} | {r['power_at_delta']:.2f} |" in text
    assert a["sequential"]["decision"] == "wait" and a["sequential"]["seed_pairs"] == 3
    assert "3 have finished, so it has not been applied yet." in text
    assert "- budget80 (workdir absent): mono-s0, hybrid-a0.5-s0" in text
    assert "## Scores on xquad-r" in text and "## Scores on mlqa-r" in text
    assert "- B: mono-s3, hybrid-a0.5-s3" in text
    assert "missing: workdir absent" in text
    assets = study["report"].parent / "tradeoff"
    assert {p.name for p in assets.glob("*.png")} == {"answer.png", "dose_response.png",
                                                      "arms.png"}
    assert "![dose-response](tradeoff/dose_response.png)" in text


@pytest.mark.parametrize("verdict,words", [
    (seed_stats.GAIN, "No, the opposite"), (seed_stats.EQUIVALENT, "No cost beyond ±0.007"),
    (seed_stats.INCONCLUSIVE, "Not answered: inconclusive")])
def test_answer_sentence_follows_the_verdict(study, verdict, words):
    a = json.loads(json.dumps(study["a"]))
    a["primary"]["verdict"] = verdict
    assert words in sections_third.answer_sentence(a)
    a["primary"] = None
    assert sections_third.answer_sentence(a).startswith("**No answer yet**")


def test_a_grid_without_pairs_or_siblings_renders(tmp_path):
    config = _config("")
    w = tmp_path / "tradeoff3"
    names = {s.name for s in plan.plan(config)}
    _write_grid(w, config, "xquad-r", LANGS, skip=names - {"zero-shot", "mono-s0"})
    with contextlib.redirect_stdout(io.StringIO()):
        text = driver.run_experiment(config, w, report_only=True).read_text()
    assert "The primary endpoint's runs are not complete: hybrid-a0.5-s0, mono-s1," in text
    assert "**No answer yet**" in text
    assert "Direction B's grid (workdir -B) is absent." in text
    assert "- weak (workdir absent): zero-shot, mono-s0" in text


# -- real tiny runs end to end ------------------------------------------------------------------

CACHE = "/tmp/hybrid_jax_test_xla_cache"


def _tiny_grid(variant: str):
    """The registered grid on the tiny model: en + de, 2 steps, the last step evaluated; direction
    A evaluates a dev fold of XQuAD-R as its subset (named as the registered set; direction B's
    counts of XQuAD-R articles cannot cut MLQA-R, whose en + de it evaluates whole)."""
    c = _config(variant, (0, 1))
    c.experiment.high_resource = tradeoff.TINY_LANGUAGES
    c.experiment.n_bootstrap = 200
    if variant != "B":
        c.eval.datasets = (dict(c.eval.datasets[0], fold="dev"),)
    if variant == "":
        c.experiment.sweep_seeds = (0, 1)
    c.train.num_steps, c.optim.warmup_steps = 2, 1
    c.train.select, c.train.select_at_start = "none", False
    c.train.compilation_cache_dir = CACHE
    return c


def test_real_tiny_runs_end_to_end(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(REPO)
    w, main_runs = tmp_path / "tradeoff3", ["zero-shot", "mono-s0", "hybrid-a0.5-s0",
                                            "mono-s1", "hybrid-a0.5-s1"]
    config = _tiny_grid("")
    with contextlib.redirect_stdout(io.StringIO()):
        driver.run_experiment(config, w, only=main_runs)
        driver.run_experiment(_tiny_grid("B"), tmp_path / "tradeoff3-B",
                              only=["mono-s0", "hybrid-a0.5-s0"])
        path = driver.run_experiment(config, w, report_only=True)
    a = json.loads((path.parent / "tradeoff" / "analysis.json").read_text())["analysis"]
    langs = tradeoff.TINY_LANGUAGES
    A, views, _ = _seed_arrays(w, "hybrid-a0.5", (0, 1), langs=langs)
    B, _, _ = _seed_arrays(w, "mono", (0, 1), langs=langs)
    by_hand = np.mean([_macro(x, views) - _macro(y, views) for x, y in zip(A, B)])
    assert a["primary"]["seeds"] == [0, 1] and a["primary"]["diff"] != 0
    assert a["primary"]["diff"] == pytest.approx(by_hand, abs=1e-12)
    assert [r["scope"] for r in a["S2"]["rows"]] == ["macro", "en", "de"]
    assert a["S2"]["rows"][0]["seeds"] == [0]
    assert a["dose"]["rows"] == [] and a["dose"]["seeds"] == []
    text = path.read_text()
    assert "planned runs have finished.** The primary endpoint, S1 and S3 are final" in text
    assert "will change: the dose-response, S2, the exploratory arms (budget10," in text
    assert "- main: cross-s0, hybrid-a0.25-s0, hybrid-a0.75-s0" in text
    assert "- B: zero-shot, mono-s1, hybrid-a0.5-s1" in text
    assert "Not yet: a slope needs at least two seeds" in text
    main_row = next(line for line in text.splitlines() if line.startswith("| main |"))
    assert "unrecorded" not in main_row  # the driver recorded the code of real runs


@pytest.mark.parametrize("pairs,power_,words", [
    (5, 0.965, "with 5 seed pairs the power at ±0.007 is 0.96, so no more were run."),
    (5, 0.6, "with 5 seed pairs the power at ±0.007 is 0.60, so another seed pair is due"),
    (10, 0.6, "the most it allows have run (power 0.60), so no more were run.")])
def test_the_report_states_the_sequential_rule_and_why(pairs, power_, words):
    q = power.sequential_decision(pairs, power_, after=5, most=10, target=0.8)
    assert words in sections_third.sequential_sentence(q, 0.007)
