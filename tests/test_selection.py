"""Dev-selected checkpoints on real XQuAD-R articles (tiny random model, en + de): the kept step is
the best dev score, `@best` loads exactly that step, the final evaluation uses it, and a resumed
run selects the same step with the same params as an uninterrupted one."""
import json

import jax
import numpy as np
import pytest

from hybrid_jax.evaluation import entry as eval_entry
from hybrid_jax.train import loop
from hybrid_jax.errors import InputError
from hybrid_jax.models import run_checkpoint
from hybrid_jax.models.pretrained import load_pretrained
from test_train import _config


def _select_config(shared_data, **overrides):
    settings = {"data.synthetic": False, "data.dataset_dir": str(shared_data / "xquad-r"),
                "data.languages": ("en", "de"), "data.global_batch_size": 8,
                "data.query_max_length": 16, "data.passage_max_length": 24,
                "data.prefetch": 1, "train.num_steps": 6, "train.log_every": 2,
                "train.checkpoint_every": 2, "train.keep_checkpoints": 3,
                "train.select": "loss", "train.select_every": 2, "train.select_batches": 2,
                "optim.learning_rate": 3e-3, "optim.warmup_steps": 0}
    settings.update(overrides)
    return _config(**settings)


def _rows(workdir):
    return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def _same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def selected(shared_data, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("selected")
    loop.train_and_evaluate(_select_config(shared_data), workdir, evaluate=False)
    return workdir


def test_kept_step_is_the_best_dev_score_and_loads_as_best(selected):
    scores = {r["step"]: r["select/score"] for r in _rows(selected) if "select/score" in r}
    assert sorted(scores) == [2, 4, 6]
    best = min(scores, key=scores.get)
    assert run_checkpoint.best_step(selected) == best
    meta = json.loads((selected / "best" / str(best) / "meta.json").read_text())
    assert meta == {"step": best, "score": scores[best], "metric": "loss"}
    assert [d.name for d in (selected / "best").iterdir()] == [str(best)]  # older bests deleted
    kept, _ = run_checkpoint.restore_params(selected, "best")
    _same(kept, run_checkpoint.restore_params(selected, best)[0])
    loaded = load_pretrained(f"ckpt:{selected}@best")
    _same(loaded.encoder_params, kept["encoder"])


def test_final_evaluation_uses_the_selected_step(shared_data, selected, monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(eval_entry, "run_evaluation",
                        lambda model, config, d, step, name, writer=None: seen.append(model) or {})
    config = _select_config(shared_data)
    config.eval.datasets = ({"name": "x", "type": "xquad-r", "path": "unused"},)
    loop.train_and_evaluate(config, tmp_path)
    best = run_checkpoint.best_step(tmp_path)
    (bundle,) = seen
    assert bundle.name == f"{tmp_path}@{best}"
    _same(bundle.params, run_checkpoint.restore_params(tmp_path, "best")[0])


def test_resume_with_hard_negatives_is_bit_identical(shared_data, tmp_path):
    """Same-paragraph hard negatives (in the training and the dev batches) and selection: a run
    stopped at step 4 and resumed ends with the same params, scores and selected step as an
    uninterrupted one."""
    config = _select_config(shared_data, **{"data.hard_negatives": 1})
    loop.train_and_evaluate(config, tmp_path / "straight", evaluate=False)
    loop.train_and_evaluate(config, tmp_path / "resumed", evaluate=False, stop_at=4)
    loop.train_and_evaluate(config, tmp_path / "resumed", evaluate=False)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_checkpoint.best_step(resumed) == run_checkpoint.best_step(straight) is not None
    for step in (None, "best"):
        _same(run_checkpoint.restore_params(resumed, step)[0],
              run_checkpoint.restore_params(straight, step)[0])
    first = {r["step"]: r["select/score"] for r in _rows(straight) if "select/score" in r}
    again = {r["step"]: r["select/score"] for r in _rows(resumed) if "select/score" in r}
    assert again == first and sorted(first) == [2, 4, 6]


def test_map_selection_and_bad_settings(shared_data, tmp_path):
    config = _select_config(shared_data, **{"train.select": "map", "train.num_steps": 2})
    loop.train_and_evaluate(config, tmp_path, evaluate=False)
    (row,) = [r for r in _rows(tmp_path) if "select/score" in r]
    assert -1.0 <= row["select/score"] < 0  # minus the mean dev mAP@20: lower is better
    from hybrid_jax import config as schema
    for key, value, message in [("train.select", "accuracy", "train.select"),
                                ("data.synthetic", True, "needs a dev fold")]:
        with pytest.raises(InputError, match=message):
            schema.validate_config(_select_config(shared_data, **{key: value}))
    with pytest.raises(InputError, match="kept no dev-selected step"):
        run_checkpoint.restore_params(tmp_path / "nowhere", "best")
