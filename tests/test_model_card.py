"""The model card (README.md) an export writes: the recipe, selected step, evaluation table and
data licences of a tiny real run; unknowns stated for a bare spec; datasets named only when their
files are verified copies."""
import json
import pathlib
import shutil

import pytest

from hybrid_jax import export
from hybrid_jax.evaluation import data_licences, model_card
from hybrid_jax.models import run_checkpoint
from hybrid_jax.models.pretrained import load_pretrained
from hybrid_jax.train import loop
from test_selection import _select_config


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    """4 steps on XQuAD-R en + de with dev-loss selection, then evaluation on the test fold."""
    workdir = tmp_path_factory.mktemp("card_run")
    config = _select_config(shared_data, **{"train.num_steps": 4})
    config.eval.datasets = ({"name": "xquad-r-test", "type": "xquad-r",
                             "path": str(shared_data / "xquad-r"), "fold": "test",
                             "languages": ("en", "de")},)
    config.eval.plots = False
    config.eval.every_steps = 2  # eval_steps/step_2/ and step_4/, then eval/ of the best step
    loop.train_and_evaluate(config, workdir)
    return workdir


def _card(spec):
    """The card an export of `spec` writes, without writing the weights again."""
    return model_card.card_text(spec, load_pretrained(spec))


def _row(card, label):
    (line,) = [x for x in card.splitlines() if x.startswith(f"| {label} |")]
    return line


def test_card_of_the_selected_step(run, shared_data, tmp_path):
    (directory,) = export.run(f"ckpt:{run}@best", str(tmp_path / "best"))
    card = (pathlib.Path(directory) / "README.md").read_text(encoding="utf-8")
    best = run_checkpoint.best_step(run)
    meta = json.loads((run / "best" / str(best) / "meta.json").read_text())
    assert card.startswith("---\nlibrary_name: sentence-transformers\n")
    assert "language: [en, de]" in card
    assert "queries start with `'query: '`, passages with `'passage: '`" in card
    assert "random weights of the test architecture `tiny`" in card
    assert "hybrid, alpha = 0.5" in _row(card, "sampler")
    assert "8 pairs" in _row(card, "batch")
    assert _row(card, "steps") == "| steps | 4 |"
    assert f"| exported step | {best} (dev-selected: best dev loss score {meta['score']!r}" \
        in card
    assert "temperature 0.1 " in _row(card, "loss")
    assert _row(card, "learning rate").startswith("| learning rate | 0.003, linear")
    assert "fold train" in _row(card, "training data")
    metrics = json.loads((run / "eval" / "xquad-r-test" / "metrics.json").read_text())
    mono = _row(card, "mono (macro)")
    for name in ("map@20", "ndcg@10", "recall@1", "mrr"):
        assert f"{metrics['mono']['macro'][name]:.4f}" in mono, name
    assert f"{metrics['multi']['micro']['map@20']:.4f}" in _row(card, "multi (micro)")
    assert "fold test, languages en, de" in card
    licences = card.split("## Data licences", 1)[1]
    assert f"`{shared_data / 'xquad-r'}`: XQuAD-R (LAReQA), CC BY-SA 4.0" in licences
    assert licences.count("\n- ") == 1  # training and evaluation share one folder


def test_card_of_an_earlier_step_uses_that_step_s_evaluation(run):
    card = _card(f"ckpt:{run}@2")
    assert "| exported step | 2 (named in the export spec) |" in card
    at_2 = json.loads((run / "eval_steps" / "step_2" / "eval" / "xquad-r-test" /
                       "metrics.json").read_text())
    final = json.loads((run / "eval" / "xquad-r-test" / "metrics.json").read_text())
    assert at_2["model"].endswith("@2") and not final["model"].endswith("@2")
    assert f"{at_2['mono']['macro']['map@20']:.4f}" in _row(card, "mono (macro)")
    hidden = run / "eval_steps_hidden"
    (run / "eval_steps").rename(hidden)
    try:
        card = _card(f"ckpt:{run}@2")
    finally:
        hidden.rename(run / "eval_steps")
    assert f"Evaluated model: `{final['model']}`, not the exported step 2: no figures" in card
    assert "| mono (macro) |" not in card


def test_card_of_a_bare_spec_states_what_is_unknown():
    card = _card("random:tiny")
    assert "Unknown here: this folder was exported from the model spec `random:tiny`" in card
    assert "| sampler |" not in card and "language:" not in card
    assert "No training or evaluation data recorded" in card
    assert "`pooler.dense` is written as zeros" in card


def test_datasets_are_named_only_for_verified_copies(shared_data, tmp_path):
    subset = tmp_path / "subset"
    subset.mkdir()
    shutil.copy(shared_data / "xquad-r" / "en.json", subset)
    assert data_licences.identify(str(subset)).dataset == "xquad-r"
    mlqa = data_licences.identify(str(shared_data / "mlqa-r"))
    assert mlqa.dataset == "mlqa-r" and mlqa.licence_files == ("LICENSE-CC-BY-NC-4.0.txt",)
    assert "CC BY-NC 4.0" in mlqa.describe()
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "en.json").write_bytes((subset / "en.json").read_bytes() + b" ")
    assert data_licences.identify(str(edited)).dataset is None
    assert "licence is unknown" in data_licences.identify(str(edited)).describe()
    assert "not found" in data_licences.identify(str(tmp_path / "missing")).describe()
