"""The third edition (configs/tradeoff3.py): zero-shot in both directions with evaluation sets
disjoint from training and dev, the warm-up whose first update moves the model, the starting
model scored and selectable at step 0, and the recipe pilot end to end on its tiny variant."""
import contextlib
import io
import json
import os

import jax
import numpy as np
import optax
import pytest

from configs import tiny as tiny_config
from configs import tradeoff, tradeoff3
from hybrid_jax.data import pipeline
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation.datasets import load_dataset
from hybrid_jax.models import run_checkpoint
from hybrid_jax.evaluation import per_query
from hybrid_jax.study import pilot
from hybrid_jax.train import loop, optim

CACHE = "/tmp/hybrid_jax_test_xla_cache"


# -- zero-shot in both directions: nothing evaluated was trained or selected on -----------------

def _texts(examples) -> set:
    out = set()
    for e in examples:
        out.update(t.strip() for t in (*e.queries.values(), *e.passages.values()))
        out.update(t.strip() for ts in e.negatives.values() for t in ts)
    return out


@pytest.mark.parametrize("direction,evaluated,n_questions", [("A", "xquad-r", 1190 * 11),
                                                              ("B", "mlqa-r", 4199)])
def test_evaluation_set_is_disjoint_from_training_and_dev(shared_data, direction, evaluated,
                                                          n_questions):
    c = tradeoff3.get_config("B" if direction == "B" else "")
    (spec,) = c.eval.datasets
    assert spec["name"] == evaluated and spec["fold"] == "all"
    ds = load_dataset(spec)
    assert len(ds.questions) == n_questions  # every language of the benchmark
    answer_text = {u.uid: u.text.strip() for u in ds.candidates}
    trained, articles = [], {}
    for fold in ("train", "dev"):
        data = c.data.copy_and_resolve_references()
        data.train_fold = fold
        examples = pipeline.load_training_examples(data)
        articles[fold] = {e.article for e in examples}
        trained += examples
    assert articles["train"] and articles["dev"] and not articles["train"] & articles["dev"]
    keys, texts = {e.key for e in trained}, _texts(trained)
    assert not {q.qid for q in ds.questions} & keys
    assert not {answer_text[q.answer_uid] for q in ds.questions} & texts
    assert not {q.text.strip() for q in ds.questions} & texts


# -- the warm-up option ---------------------------------------------------------------------------

def _optim(**kw):
    c = tiny_config.get_config().optim
    c.update(dict(learning_rate=1e-3, warmup_steps=4, schedule="linear", end_lr_factor=0.0, **kw))
    return c


def test_warmup_not_from_zero_moves_the_model_at_the_first_update():
    off = optim.make_schedule(_optim(warmup_from_zero=False), 20)
    lrs = [float(off(i)) for i in range(6)]
    np.testing.assert_allclose(lrs[:4], [2.5e-4, 5e-4, 7.5e-4, 1e-3], rtol=1e-6)
    assert lrs[4] == pytest.approx(1e-3) and lrs[5] < 1e-3  # then the decay, as before
    default = optim.make_schedule(_optim(), 20)
    reference = optax.join_schedules([optax.linear_schedule(0.0, 1e-3, 4),
                                      optax.linear_schedule(1e-3, 0.0, 16)], [4])
    for i in range(20):  # the default is the schedule existing runs trained with
        assert float(default(i)) == float(reference(i))
    assert float(default(0)) == 0.0
    # The first AdamW update: none from zero, one not from zero.
    params = {"w": np.ones(3, np.float32)}
    grads = {"w": np.full(3, 0.5, np.float32)}
    for from_zero, moved in ((True, False), (False, True)):
        tx, _ = optim.make_optimizer(_optim(warmup_from_zero=from_zero, weight_decay=0.0), 20)
        updates, _ = tx.update(grads, tx.init(params), params)
        assert bool(np.any(np.asarray(updates["w"]) != 0)) == moved


# -- step 0 scored and selectable -----------------------------------------------------------------

def test_the_starting_model_is_scored_and_selected_when_nothing_beats_it(tmp_path):
    c = tradeoff3.get_config("tiny")
    del c.experiment
    c.optim.learning_rate = 0.0  # nothing moves: no later step can beat the start
    c.train.compilation_cache_dir = CACHE
    c.eval.datasets = (dict(tradeoff3.XQUAD_R_ALL, fold="dev", languages=("en",),
                            name="xquad-r-dev-en"),)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = loop.train_and_evaluate(c, str(tmp_path))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    scored = {r["step"]: r for r in rows if "select/mono" in r}
    assert sorted(scored) == [0, 2, 4]
    start = scored[0]
    for r in scored.values():  # mono, cross and multi apart; their mean is the score
        assert r["select/score"] == pytest.approx(
            -np.mean([r["select/mono"], r["select/cross"], r["select/multi"]]))
        assert (r["select/mono"], r["select/multi"]) == (start["select/mono"],
                                                         start["select/multi"])
        assert r["select/best_step"] == 0
    assert run_checkpoint.best_step(str(tmp_path)) == 0
    assert "final evaluation on the dev-selected step 0" in out.getvalue()
    assert "xquad-r-dev-en" in result["eval"]["datasets"]


def test_select_at_start_needs_a_selection_metric():
    from hybrid_jax import config as schema

    c = tiny_config.get_config()
    c.train.select, c.train.select_at_start = "none", True
    with pytest.raises(InputError, match="train.select_at_start"):
        schema.validate_config(c)
    c.train.select, c.train.select_at_start, c.train.select_per_query = "loss", False, True
    with pytest.raises(InputError, match="train.select_per_query"):
        schema.validate_config(c)


# -- the pilot ------------------------------------------------------------------------------------

def test_pilot_plan_and_run_configs():
    c = tradeoff3.get_config("pilot")
    runs = pilot.plan(c)
    names = [s.name for s, _, _ in runs]
    assert names[:2] == ["A-base-mono", "A-base-hybrid-a0.5"]
    assert len(names) == len(set(names)) == len(tradeoff3.PILOT_RUNS)
    base = pilot.run_config(c, *runs[1])
    assert (base.data.dataset_dir, base.data.sampling, base.data.alpha,
            base.data.mono_schedule) == (tradeoff3.MLQA_R_DIR, "hybrid", 0.5, "exact")
    assert (base.loss.temperature, base.optim.learning_rate, base.optim.warmup_from_zero,
            base.optim.freeze_word_embeddings, base.data.hard_negatives) == (0.01, 1e-5, False,
                                                                              True, 1)
    assert tuple(base.eval.datasets) == ()  # dev data only
    learned = pilot.run_config(c, *next(r for r in runs if r[2] == "temp-learned"))
    assert learned.loss.learn_temperature and learned.loss.max_logit_scale == 200.0
    c.experiment.pilot.settings = ("base:", "bad: optim.nope=1")
    c.experiment.pilot.runs = ("bad:mono",)
    with pytest.raises(InputError, match="unknown config key 'optim.nope'"):
        pilot.run_config(c, *pilot.plan(c)[0])
    for bad in ("base:both", "base:mono@x"):
        c.experiment.pilot.runs = (bad,)
        with pytest.raises(InputError, match="experiment.pilot.runs"):
            pilot.plan(c)


def test_pilot_seed_replication_plan():
    c = tradeoff3.get_config("pilot-seeds")
    runs = pilot.plan(c)
    by_name = {s.name: (s, setting) for s, _, setting in runs}
    assert len(by_name) == len(tradeoff3.PILOT_SEED_RUNS)
    spec, setting = by_name["A-lr3e-5-hybrid-a0.5-s2"]
    assert (spec.seed, spec.sampler, setting) == (2, "hybrid", "lr3e-5")
    run = pilot.run_config(c, spec, "A", setting)
    assert (run.seed, run.data.seed, run.optim.learning_rate) == (2, 2, 3e-5)
    assert run.train.select_per_query and tuple(run.eval.datasets) == ()
    # X-X-mono and hybrid of the leading setting on the same seeds (the power analysis's pairs)
    seeds = {cond: {s.seed for s, _, st in runs if st == "lr3e-5" and s.sampler == cond}
             for cond in ("mono", "hybrid")}
    assert seeds["mono"] == seeds["hybrid"] == {0, 1, 2, 3}


def test_pilot_end_to_end_on_tiny_both_directions(tmp_path, monkeypatch):
    from hybrid_jax.data.corpus_cache import CACHE_ENV

    monkeypatch.delenv(CACHE_ENV, raising=False)  # the driver's own corpus cache, shared by runs
    c = tradeoff3.get_config("tiny")
    c.train.compilation_cache_dir = CACHE
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        path = pilot.run_pilot(c, tmp_path)
    tables = json.loads(path.with_suffix(".json").read_text())
    assert tables["finished"] == tables["planned"] == 4
    by = {(e["direction"], e["setting"]): e for e in tables["settings"]}
    assert set(by) == {("A", "base"), ("B", "base")}
    for e in by.values():
        for run in e["runs"].values():
            assert [r["step"] for r in run["curve"]] == [0, 2, 4]
        # every run starts from the same model on the same dev fold
        starts = {json.dumps(r["curve"][0], sort_keys=True) for r in e["runs"].values()}
        assert len(starts) == 1
        crit = e["criteria"]
        mono = e["runs"]["mono"]["curve"]
        assert crit["a_mono_of_mono"]["worst"] == pytest.approx(
            min(r["mono"] - mono[0]["mono"] for r in mono[1:]))
        assert crit["a"] == (crit["a_mono_of_mono"]["worst"] >= 0)
    assert by[("A", "base")]["runs"]["mono"]["curve"][0] != by[("B", "base")]["runs"]["mono"][
        "curve"][0]  # each direction has its own dev fold
    markdown = path.read_text()
    assert "| A | base | 0 |" in markdown and "### B / base / seed 0" in markdown
    # train.select_per_query: each scoring's mono per-query dev scores, by step
    scored = tmp_path / "runs" / "A-base-mono" / "select"
    assert sorted(p.name for p in scored.iterdir()) == ["step_0", "step_2", "step_4"]
    groups = per_query.load(scored / "step_0" / "per_query.npz")
    assert set(groups) == {"pool=de", "pool=en"}
    for name, table in groups.items():  # the mono rows only: questions in the pool's language
        assert len(table["qid"]) > 0 and set(table["lang"]) == {name[len("pool="):]}
    # every run read the corpora prepared once in the pilot's workdir, none in its own
    assert len(list((tmp_path / "corpora").iterdir())) >= 2  # one per direction's dataset
    assert not list((tmp_path / "runs").glob("*/corpora"))
    # Weights of finished runs are gone; a second invocation skips every run.
    run_dir = tmp_path / "runs" / "A-base-mono"
    assert not (run_dir / "checkpoints").exists() and (run_dir / "metrics.jsonl").is_file()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        pilot.run_pilot(c, tmp_path)
    assert "4 finished, 0 to do" in out.getvalue() and "run 1/" not in out.getvalue()
    c.loss.temperature = 0.2  # another recipe in the same workdir is refused
    with pytest.raises(InputError, match="differs from this experiment's config"):
        pilot.run_pilot(c, tmp_path)


def test_entry_criteria_from_curves():
    from hybrid_jax.study import pilot_table

    def run(*points):
        return {"curve": [dict(step=5 * i, mono=m, cross=c, multi=x)
                          for i, (m, c, x) in enumerate(points)]}

    start = (0.70, 0.55, 0.35)
    keeps = run(start, (0.71, 0.56, 0.40), (0.705, 0.57, 0.42))
    dips = run(start, (0.69, 0.56, 0.40), (0.72, 0.57, 0.42))  # below the start once
    flat = run(start, (0.70, 0.555, 0.355), (0.70, 0.556, 0.356))  # rises by less than 0.01
    c = pilot_table.criteria({"mono": keeps, "hybrid": keeps, "cross": keeps}, 0.01)
    assert c["a"] and c["b"] and not c["b_without_cross"]
    assert c["a_mono_of_mono"]["worst"] == pytest.approx(0.005)
    assert c["b_multi_of_hybrid"]["change"] == pytest.approx(0.07)
    c = pilot_table.criteria({"mono": dips, "hybrid": keeps, "cross": flat}, 0.01)
    assert c["a"] is False and c["b"] is False  # X-Y's cross rose by 0.006 only
    assert c["a_mono_of_mono"]["worst"] == pytest.approx(-0.01)
    c = pilot_table.criteria({"mono": keeps, "hybrid": keeps}, 0.01)
    assert c["b"] and c["b_without_cross"] and c["b_cross_of_cross"] is None
    assert pilot_table.criteria({"hybrid": run(start)}, 0.01)["b"] is None  # no trained step


def test_pilot_power_analysis_from_seed_pairs(tmp_path):
    """Two seed pairs on the tiny model: the written analysis is power.Pilot.from_runs of the
    selected steps' mono per-query scores, aligned by hand here."""
    from hybrid_jax.evaluation.statistics import power
    from hybrid_jax.study import pilot_power

    c = tradeoff3.get_config("tiny")
    c.train.compilation_cache_dir = CACHE
    p = c.experiment.pilot
    p.directions = ("A",)
    p.runs = ("base:mono@0", "base:hybrid@0", "base:mono@1", "base:hybrid@1")
    p.power = dict(tradeoff3._power().to_dict(), setting="base",
                   languages=tradeoff.TINY_LANGUAGES, test_clusters=500)
    with contextlib.redirect_stdout(io.StringIO()):
        path = pilot.run_pilot(c, tmp_path)
    result = json.loads((path.parent / "tradeoff_pilot_power.json").read_text())
    assert result["seeds"] == [0, 1]
    cols = {}
    for cond in ("mono", "hybrid-a0.5"):
        for seed in (0, 1):
            run_dir = tmp_path / "runs" / f"A-base-{cond}-s{seed}"
            best = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
            groups = per_query.load(run_dir / "select" / f"step_{int(best['select/best_step'])}"
                                    / "per_query.npz")
            for lang in tradeoff.TINY_LANGUAGES:
                t = groups[f"pool={lang}"]
                for q, v, cl in zip(t["qid"], t["map@20"], t["cluster"]):
                    cols.setdefault((f"mono/{lang}", q), {})[(cond, seed)] = (v, cl)
    keys = sorted(cols)
    A = np.array([[cols[k][("hybrid-a0.5", s)][0] for k in keys] for s in (0, 1)])
    B = np.array([[cols[k][("mono", s)][0] for k in keys] for s in (0, 1)])
    expected = power.Pilot.from_runs(A, B, clusters=[cols[k][("mono", 0)][1] for k in keys],
                                     strata=[v for v, _ in keys])
    got = result["point"]["pilot"]
    assert got["n_seeds"] == 2 and got["n_clusters"] == expected.n_clusters
    assert got["seed_var_per_seed"] == pytest.approx(expected.seed_var_per_seed, rel=1e-9,
                                                     abs=1e-15)
    assert got["question_var"] == pytest.approx(expected.question_var, rel=1e-9, abs=1e-15)
    assert result["upper"]["pilot"]["seed_var_per_seed"] >= got["seed_var_per_seed"]
    assert "Power analysis from the pilot (A / base)" in (
        path.parent / "tradeoff_pilot_power.md").read_text()
    assert pilot_power.seed_pairs([], tmp_path, "A", "base") == []


# -- the registered grids -------------------------------------------------------------------------

def test_registered_grids_follow_the_protocol():
    from hybrid_jax.study import grid_checks, plan

    for variant in tradeoff3.GRIDS:
        c = tradeoff3.get_config(variant)
        grid_checks.check_protocol(c.experiment)  # the file still hashes as registered
        assert (c.optim.learning_rate, c.loss.temperature, c.data.global_batch_size,
                c.optim.grad_accum_steps, c.data.mono_schedule) == (3e-5, 0.01, 32, 2, "exact")
        assert not c.optim.warmup_from_zero and c.train.select_at_start
    main = plan.plan(tradeoff3.get_config(""))
    grid = [s for s in main if not s.sweep]
    assert grid[0].name == "zero-shot"
    assert {(s.sampler, s.seed) for s in grid[1:]} == {
        (k, s) for k in ("mono", "hybrid") for s in tradeoff3.SEEDS_A}
    # the dose-response after the whole grid: alphas 0, 0.25, 0.75 (0.5 and 1 are grid runs)
    dose = {(s.alpha, s.seed) for s in main if s.sweep}
    assert dose == {(a, s) for a in (0.0, 0.25, 0.75) for s in tradeoff3.DOSE_SEEDS}
    assert all(s.sampler == "cross" for s in main if s.sweep and s.alpha == 0.0)
    b = tradeoff3.get_config("B")
    assert [d["name"] for d in b.eval.datasets] == ["mlqa-r"]
    assert b.data.dataset_dir == tradeoff3.XQUAD_R_DIR
    long = tradeoff3.get_config("budget80")
    assert (long.train.num_steps, long.optim.warmup_steps, long.train.select_every) == (80, 8, 20)
    assert tradeoff3.get_config("fraction25").data.train_fraction == 0.25
    weak = tradeoff3.get_config("weak")
    assert weak.model.reinit_top_layers == 2 and weak.experiment.zero_shot
    assert not tradeoff3.get_config("budget10").experiment.zero_shot
