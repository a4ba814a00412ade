"""The second edition's grid (configs/tradeoff2.py): the registered plan, the protocol pin, and
the driver end to end on its tiny variant with two benchmarks and a two-point budget curve."""
import contextlib
import hashlib
import io
import json
import shutil

import pytest

from conftest import REPO
from configs import tradeoff2
from hybrid_jax.study import driver, plan
from hybrid_jax.errors import InputError

CACHE = "/tmp/hybrid_jax_test_xla_cache"


def test_the_registered_protocol_is_unedited():
    digest = hashlib.sha256((REPO / tradeoff2.PROTOCOL).read_bytes()).hexdigest()
    assert digest == tradeoff2.PROTOCOL_SHA256, (
        "docs/tradeoff_protocol.md changed after registration: report deviations in "
        "docs/tradeoff_second_edition.md instead")


def test_plan_main_grid_first_then_the_sweep():
    config = tradeoff2.get_config()
    specs = plan.plan(config)
    names = [s.name for s in specs]
    main = [f"{c}-s{seed}" for seed in range(5) for c in ("mono", "cross", "hybrid-a0.5")]
    sweep = [f"hybrid-a{a}-s{seed}" for seed in range(3) for a in ("0.25", "0.75")]
    assert names == ["zero-shot"] + main + sweep
    datasets = plan.run_datasets(config, specs)
    assert datasets["hybrid-a0.5-s4"] == ["xquad-r-test", "mlqa-r"]
    assert datasets["hybrid-a0.75-s2"] == ["xquad-r-test"]
    c = plan.run_config(config, specs[-1])
    assert [d["name"] for d in c.eval.datasets] == ["xquad-r-test"]
    assert (c.data.sampling, c.data.alpha, c.seed) == ("hybrid", 0.75, 2)
    main_cfg = plan.run_config(config, specs[1])
    assert [d["name"] for d in main_cfg.eval.datasets] == ["xquad-r-test", "mlqa-r"]
    assert tuple(main_cfg.eval.every_datasets) == ("xquad-r-test",)
    # The recipe the protocol registers.
    assert (main_cfg.data.global_batch_size, main_cfg.optim.grad_accum_steps,
            main_cfg.data.hard_negatives, main_cfg.train.num_steps,
            main_cfg.train.select, main_cfg.eval.every_steps) == (64, 4, 1, 20, "loss", 5)


@pytest.mark.parametrize("key,value,message", [
    ("sweep_alphas", (1.0,), "experiment.sweep_alphas"),
    ("sweep_datasets", ("nope",), "experiment.sweep_datasets"),
])
def test_bad_sweep_config(key, value, message):
    config = tradeoff2.get_config()
    config.experiment[key] = value
    with pytest.raises(InputError, match=message):
        plan.run_datasets(config, plan.plan(config))


def test_an_edited_protocol_stops_the_driver_before_anything_runs(tmp_path, monkeypatch):
    protocol = tmp_path / "protocol.md"
    shutil.copy(REPO / tradeoff2.PROTOCOL, protocol)
    with protocol.open("a") as f:
        f.write("\nOne more endpoint.\n")
    config = tradeoff2.get_config("tiny")
    config.experiment.protocol = str(protocol)
    with pytest.raises(InputError, match="edited after registration"):
        driver.run_experiment(config, tmp_path / "w")
    assert not (tmp_path / "w" / "runs").exists()


def _files(d):
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_tiny_grid_two_benchmarks_and_a_budget_curve(tmp_path, shared_data, monkeypatch):
    monkeypatch.chdir(REPO)
    config = tradeoff2.get_config("tiny")
    config.train.compilation_cache_dir = CACHE
    workdir = tmp_path / "w"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        report = driver.run_experiment(config, workdir)
    runs = workdir / "runs"
    assert _files(runs) == ["cross-s0", "hybrid-a0.25-s0", "hybrid-a0.5-s0", "mono-s0",
                            "zero-shot"]
    for name in ("mono-s0", "cross-s0", "hybrid-a0.5-s0"):
        run = runs / name
        assert _files(run / "eval") == ["mlqa-r", "xquad-r-test"]
        # The curve: XQuAD-R test at both budgets, MLQA-R never.
        assert _files(run / "eval_steps") == ["step_2", "step_4"]
        for step in (2, 4):
            assert _files(run / "eval_steps" / f"step_{step}" / "eval") == ["xquad-r-test"]
            m = json.loads((run / "eval_steps" / f"step_{step}" / "eval" / "xquad-r-test" /
                            "metrics.json").read_text())
            assert m["model"].endswith(f"@{step}") and m["languages"] == ["de", "en"]
        # The selected step is a curve point: its XQuAD-R embeddings come from the run's cache
        # (2 curve points x questions and candidates), only MLQA-R is encoded again.
        assert len(_files(run / "embedding_cache")) == 2 * 2 + 2
        best = json.loads((run / "eval" / "xquad-r-test" / "metrics.json").read_text())["model"]
        step = int(best.rsplit("@", 1)[1])
        curve = json.loads((run / "eval_steps" / f"step_{step}" / "eval" / "xquad-r-test" /
                            "metrics.json").read_text())
        assert curve["mono"]["macro"] == json.loads(
            (run / "eval" / "xquad-r-test" / "metrics.json").read_text())["mono"]["macro"]
    sweep = runs / "hybrid-a0.25-s0"
    assert _files(sweep / "eval") == ["xquad-r-test"]
    assert json.loads((sweep / "config.json").read_text())["data"]["alpha"] == 0.25
    assert report is not None and report.is_file()
    text = report.read_text()
    assert "not complete" not in text and "tradeoff_protocol.md" in text
    # the config's words around the figures: companion reports, machine, no deviations
    assert "See also: [the third edition, the study's answer" in text
    assert "[the same grid at the paper's batch of 100" in text
    assert "one at a time on 2 CPU cores (AMD Zen 4)" in text and "CPU-hours" in text
    for title in ("Primary endpoint", "S1:", "S2:", "S3:", "Budget curve on xquad-r-test",
                  "The alpha sweep", "Side by side with the paper", "Precision reached"):
        assert title in text, title
    assets = report.parent / report.stem
    data = json.loads((assets / "analysis.json").read_text())
    xq, ml = data["analysis"]["benchmarks"]["xquad-r-test"], data["analysis"]["benchmarks"]["mlqa-r"]
    assert [r["scope"] for r in xq["families"]["primary"]] == ["en"]
    assert [r["family"] for r in ml["families"]["S1"]] == ["S1"]
    assert sorted({r["step"] for r in xq["curves"]}) == [2, 4] and not ml["curves"]
    assert [r["alpha"] for r in data["analysis"]["sweep"]] == [0.0, 0.25, 0.5, 1.0]
    assert {p.name for p in assets.glob("*.png")} >= {
        "answer_xquad-r-test.png", "answer_mlqa-r.png", "budget_curves_xquad-r-test.png",
        "alpha_sweep.png"}
    # A rerun has nothing left to do.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        driver.run_experiment(config, workdir)
    assert "0 to do" in out.getvalue()
