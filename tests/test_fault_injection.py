"""Faults that must never end in silent garbage, on configs/tiny.py (random:tiny, synthetic data):
a model whose parameters overflow, a resume under another data or model config, and a checkpoint
whose bytes changed on disk.  Each must stop with one line that says what happened."""
import jax
import numpy as np
import pytest

from hybrid_jax.errors import InputError
from hybrid_jax.evaluation.run import evaluate
from hybrid_jax.models.pretrained import load_pretrained
from hybrid_jax.retrieval.encode import NonFiniteEmbeddingError
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
