"""model.reinit_top_layers: the top k layers of the starting model drawn afresh, the rest kept."""
import jax
import numpy as np
import pytest

from configs import default
from hybrid_jax.config import validate_config
from hybrid_jax.errors import InputError
from hybrid_jax.models import reinit
from hybrid_jax.models.from_config import load_model
from hybrid_jax.models.pretrained import load_pretrained


def _leaves(tree):
    return jax.tree_util.tree_leaves_with_path(tree)


def _same(x, y) -> bool:
    return jax.tree_util.tree_structure(x) == jax.tree_util.tree_structure(y) and all(
        np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(x),
                                             jax.tree_util.tree_leaves(y)))


def _config(k):
    c = default.get_config()
    c.model.spec = "random:tiny"
    c.model.reinit_top_layers = k
    return c


@pytest.fixture(scope="module")
def loaded():
    return load_pretrained("random:tiny").encoder_params


def test_top_layer_is_fresh_deterministic_and_the_rest_untouched(loaded):
    top = f"layer_{len([n for n in loaded if n.startswith('layer_')]) - 1}"
    first = load_model(_config(1)).encoder_params
    before = dict(_leaves(loaded[top]))
    for path, leaf in _leaves(first[top]):
        assert leaf.shape == before[path].shape and leaf.dtype == np.float32
        name = jax.tree_util.keystr(path)
        if "kernel" in name:                                  # N(0, 0.02^2), unlike the loaded
            assert not np.array_equal(leaf, before[path])
            assert 0.01 < leaf.std() < 0.03
        elif "scale" in name:
            assert np.all(leaf == 1.0)
        else:                                                 # biases of dense and norm layers
            assert np.all(leaf == 0.0)
    for name in loaded:
        if name != top:
            assert _same(first[name], loaded[name]), name
    # A second load draws the same values (a fixed key), and layer i's draw does not depend on
    # how many layers are drawn.
    both = load_model(_config(2)).encoder_params
    assert _same(both[top], first[top]) and not _same(both["layer_0"], loaded["layer_0"])
    assert not _same(both["layer_0"], both[top])
    assert _same(both["word_embeddings"], loaded["word_embeddings"])


def test_zero_keeps_the_loaded_model_and_checkpoints_load_as_saved(loaded):
    assert _same(load_model(_config(0)).encoder_params, loaded)
    # a spec passed explicitly (a checkpoint to evaluate) is not re-initialised
    assert _same(load_model(_config(1), "random:tiny").encoder_params, loaded)


def test_untied_towers_get_the_same_fresh_layers():
    pre = load_pretrained("random:tiny")
    towers = {"query": pre.encoder_params, "passage": pre.encoder_params}
    pre.towers = towers
    from hybrid_jax.models import pretrained as pretrained_lib
    pretrained_lib._reinit(pre, 1)
    assert _same(pre.towers["query"], pre.towers["passage"])
    assert _same(pre.towers["query"], pre.encoder_params)
    assert not _same(pre.towers["query"], towers["query"])


def test_bad_values_name_the_key():
    with pytest.raises(InputError, match="model.reinit_top_layers"):
        validate_config(_config(-1), num_devices=1)
    validate_config(_config(2), num_devices=1)
    with pytest.raises(InputError, match=r"model.reinit_top_layers: .*\[0, 2\]"):
        load_model(_config(3))          # random:tiny has two layers
    assert reinit.REINIT_SEED == 0
