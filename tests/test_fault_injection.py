"""Faults that must never end in silent garbage, on configs/tiny.py (random:tiny, synthetic data):
a model whose parameters overflow, a resume under another data or model config, and a checkpoint
whose bytes changed on disk.  Each must stop with one line that says what happened."""
import hashlib
import json
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from configs import tiny
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation.run import evaluate
from hybrid_jax.models import run_checkpoint
from hybrid_jax.models.pretrained import load_pretrained
from hybrid_jax.retrieval.encode import NonFiniteEmbeddingError
from hybrid_jax.train import loop
from test_eval_lareqa import make_dataset


@pytest.fixture(scope="module")
def tiny_model():
    return load_pretrained("random:tiny")


def test_overflowed_parameters_stop_the_evaluation(tiny_model, tmp_path):
    bundle = tiny_model.bundle(tied=True)
    bundle.params = jax.tree.map(lambda a: np.asarray(a) * np.float32(1e38), bundle.params)
    ds, _, _ = make_dataset(n_q=4)
    cfg = {"k": 5, "depth": 10, "batch_size": 8, "max_length": 16, "buckets": (8,),
           "progress": False, "plots": False}
    with pytest.raises(NonFiniteEmbeddingError) as err:
        evaluate(bundle, [ds], tmp_path, cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"evaluation of {ds.name}: ")
    assert "non-finite embeddings" in message and "diverged" in message and "corrupted" in message
    assert not (tmp_path / "eval" / ds.name / "metrics.json").exists()


def test_a_metric_out_of_range_is_never_written():
    from hybrid_jax.evaluation.metric_ranges import check_metrics
    check_metrics("toy", {"mono": {"macro": {"map@20": 1.0, "mrr": 0.0}}, "rank_distance": 3.5})
    with pytest.raises(InputError, match=r"^evaluation of toy: metric mono/macro/map@20 = inf "):
        check_metrics("toy", {"mono": {"macro": {"map@20": float("inf")}}})
    with pytest.raises(InputError, match=r"metric cross/recall@1 = 1.5 is outside its range"):
        check_metrics("toy", {"cross": {"recall@1": 1.5}})
    with pytest.raises(InputError, match=r"rank_distance = nan is outside its range \(finite\)"):
        check_metrics("toy", {"rank_distance": float("nan")})


# ------------------------------------------------------------------- resume with another config

CACHE = "/tmp/hybrid_jax_test_xla_cache"


def _config(**overrides):
    c = tiny.get_config()
    c.num_devices = 2
    c.train.compilation_cache_dir = CACHE
    c.train.num_steps = 4
    c.update_from_flattened_dict({k.replace("__", "."): v for k, v in overrides.items()})
    return c


def _files(root: pathlib.Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 4-step tiny run (checkpoint at step 4); tests copy it before changing it."""
    workdir = tmp_path_factory.mktemp("fault") / "run"
    loop.train_and_evaluate(_config(), workdir, evaluate=False)
    return workdir


def _copy(trained, tmp_path) -> pathlib.Path:
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    return workdir


@pytest.mark.parametrize("overrides, expected", [
    (dict(data__synthetic=False), "data.synthetic: saved True, now False"),
    (dict(model__tied=False), "model.tied: saved True, now False"),
    (dict(model__reinit_top_layers=1), "model.reinit_top_layers: saved 0, now 1"),
    (dict(data__alpha=0.25, data__global_batch_size=16),
     "data.alpha: saved 0.5, now 0.25; data.global_batch_size: saved 8, now 16"),
])
def test_resume_with_another_config_stops_before_writing(trained, tmp_path, overrides, expected):
    workdir = _copy(trained, tmp_path)
    before = _files(workdir)
    config = _config(train__num_steps=8, **overrides)
    with pytest.raises(InputError) as err:
        loop.train_and_evaluate(config, workdir, evaluate=False)
    message = str(err.value)
    assert "\n" not in message
    assert f"cannot resume step 4 with another config ({expected})" in message
    assert _files(workdir) == before


def test_synthetic_iterator_names_a_foreign_state():
    from hybrid_jax.data.synthetic import SyntheticIterator
    it = SyntheticIterator(_config().data, vocab_size=100)
    with pytest.raises(InputError, match="was not saved by synthetic batches"):
        it.set_state({"sampler": 3})


# ------------------------------------------------------------------- a checkpoint changed on disk

def _damage(params_dir: pathlib.Path) -> str:
    """One value of the largest array changed on disk, the file still well-formed (as a bad disk
    inside a stored block, or a partial copy from another run, leaves it): the item is rewritten
    with that value scaled by 1e30.  Returns the array's path."""
    import orbax.checkpoint as ocp
    tree = jax.tree.map(np.asarray, run_checkpoint._restore_tree(str(params_dir)))
    name, array = max(run_checkpoint.flat_arrays(tree).items(), key=lambda kv: kv[1].size)
    changed = array.copy()
    changed.reshape(-1)[array.size // 2] *= np.float32(1e30)
    tree = jax.tree_util.tree_map(lambda a: changed if a is array else a, tree)
    rewritten = params_dir.with_name("params.rewritten")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(rewritten, tree)
    shutil.rmtree(params_dir)
    rewritten.rename(params_dir)
    return name


def test_damaged_checkpoint_stops_resume_and_loading(trained, tmp_path, monkeypatch):
    workdir = _copy(trained, tmp_path)
    damaged = _damage(workdir / "checkpoints" / "4" / "params")
    before = _files(workdir)
    with pytest.raises(InputError) as err:
        loop.train_and_evaluate(_config(train__num_steps=8), workdir, evaluate=False)
    message = str(err.value)
    assert "\n" not in message
    assert re.search(rf"^checkpoint {workdir}/checkpoints/4: array params/{damaged} does not match "
                     r"the digest saved with it .* move \S+/checkpoints/4 away", message), message
    with pytest.raises(InputError, match=r"checkpoints/4: array params/\S+ does not match the "
                                         r"digest.* load an earlier step with ckpt:"):
        run_checkpoint.read(f"ckpt:{workdir}@4")
    assert _files(workdir) == before
    monkeypatch.setenv(run_checkpoint.VERIFY_ENV, "off")  # the user accepts the risk
    params, _, _ = run_checkpoint.read(f"ckpt:{workdir}@4")
    assert jax.tree.leaves(params)


def test_checkpoint_without_digests_loads_with_a_note(trained, tmp_path, caplog):
    workdir = _copy(trained, tmp_path)
    (workdir / run_checkpoint.FROZEN_DIGESTS).unlink()
    meta = workdir / "checkpoints" / "4" / "meta" / "metadata"
    meta.write_text(json.dumps({"step": 4}))
    params, _, _ = run_checkpoint.read(f"ckpt:{workdir}")
    assert jax.tree.leaves(params)
    notes = [r.getMessage() for r in caplog.records if "recorded no digests" in r.getMessage()]
    assert len(notes) == 2 and all("\n" not in n for n in notes)


def test_damaged_best_step_stops_loading(trained, tmp_path):
    from hybrid_jax.train.checkpoints import BestKeeper
    workdir = _copy(trained, tmp_path)
    trainable = run_checkpoint._restore_tree(str(workdir / "checkpoints" / "4" / "params"))
    BestKeeper(str(workdir), "loss").offer(4, 0.5, trainable)
    assert jax.tree.leaves(run_checkpoint.read(f"ckpt:{workdir}@best")[0])
    damaged = _damage(workdir / "best" / "4" / "params")
    expected = (rf"^checkpoint {workdir}/best/4: array params/{damaged} does not match .* "
                r"ckpt:\S+@<step> \(saved steps: \[4\]\)")
    with pytest.raises(InputError, match=expected):
        run_checkpoint.read(f"ckpt:{workdir}@best")
