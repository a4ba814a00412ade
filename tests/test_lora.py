"""LoRA adapters (models/lora.py) on the tiny random model: exact at initialisation, only the
adapters train, checkpoints hold them alone, `ckpt:` and export give the adapted model back."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from configs import tiny
from hybrid_jax import config as schema
from hybrid_jax import export
from hybrid_jax.errors import InputError
from hybrid_jax.models import DualEncoder, ModelBundle, lora, run_checkpoint
from hybrid_jax.models.pretrained import load_pretrained
from hybrid_jax.train import compilation_cache, loop, run_setup

CACHE = "/tmp/hybrid_jax_test_xla_cache"  # shared with tests/test_train.py
IDS = np.random.RandomState(0).randint(5, 30000, (4, 9)).astype(np.int32)
MASK = (np.arange(9)[None, :] < np.array([[9], [5], [7], [2]])).astype(np.int32)


def _config(**overrides):
    c = tiny.get_config()
    c.train.compilation_cache_dir = CACHE
    c.num_devices = 2
    c.train.num_steps = 8
    c.train.log_every = 2
    c.train.checkpoint_every = 4
    c.optim.learning_rate = 1e-2  # large enough that a few steps move every adapter
    c.loss.learn_temperature = True  # the loss's own params train beside the adapters
    c.update_from_flattened_dict({"model.lora_rank": 4, "model.lora_alpha": 8.0, **overrides})
    return c


def _embed(pre, tied=True, params=None, role="query"):
    """Embeddings of IDS by the model's compiled encoder (no tokenizer needed)."""
    params = pre.dual_params(tied) if params is None else params
    bundle = ModelBundle(pre.name, DualEncoder(pre.config, tied=tied), params, None, {})
    return np.asarray(bundle.apply_fn(role)(bundle.params, IDS, MASK))


def _leaves(tree) -> dict:
    return traverse_util.flatten_dict(jax.device_get(tree))


@pytest.fixture(scope="module")
def base():
    return load_pretrained("random:tiny")  # not changed by the code under test (it copies)


@pytest.mark.parametrize("tied", [True, False])
def test_fresh_adapters_leave_the_embeddings_exactly_as_they_were(base, tied):
    adapted = lora.for_training(base, _config().model, seed=0)
    assert adapted.config.lora_rank == 4 and base.config.lora_rank == 0
    flat = _leaves(adapted.dual_params(tied))
    adapters = [k for k in flat if lora.is_adapter(k)]
    assert len(adapters) == 2 * 6 * 2 * (1 if tied else 2)  # a, b x 6 targets x 2 layers
    assert all(np.abs(flat[k]).max() > 0 for k in adapters if k[-1] == "lora_a")
    # Op by op a zero adapter adds exactly 0.0; compiled, XLA fuses the graph with the adapter
    # differently (a layer norm's reduction may be tiled otherwise): within a float32 ulp.
    if tied:
        with jax.disable_jit():
            np.testing.assert_array_equal(_embed(adapted), _embed(base))
    for role in ("query", "passage"):
        np.testing.assert_allclose(_embed(adapted, tied, role=role),
                                   _embed(base, tied, role=role), rtol=0, atol=3e-7)


def test_merge_equals_the_adapted_model_and_targets_select_projections(base):
    adapted = lora.for_training(base, _config(**{"model.lora_targets": ("query", "output")}).model,
                                seed=0)
    flat = _leaves(adapted.encoder_params)
    targeted = sorted({k[1:-1] for k in flat if lora.is_adapter(k)})
    assert targeted == [("attention", "query"), ("output",)]
    rng = np.random.RandomState(1)  # non-zero B: the adapters now change the model
    flat = {k: rng.normal(0, 0.2, v.shape).astype(np.float32) if k[-1] == "lora_b" else v
            for k, v in flat.items()}
    adapted.encoder_params = traverse_util.unflatten_dict(flat)
    merged = lora.merged(adapted)
    assert merged.config == base.config
    assert not any(lora.is_adapter(k) for k in _leaves(merged.encoder_params))
    assert np.abs(_embed(adapted) - _embed(base)).max() > 1e-3
    np.testing.assert_allclose(_embed(merged), _embed(adapted), atol=2e-6)


def test_only_the_adapters_and_loss_params_train(tmp_path, base):
    config = _config()
    compilation_cache.enable(config)  # the loop test below compiles the same step
    run = run_setup.setup(config, str(tmp_path), base)
    before = _leaves(run.runner.unreplicate(run.state.params))
    assert all(lora.is_adapter(k) or k[0] == "loss" for k in before)
    assert any(k[0] == "loss" for k in before)
    state = run.state
    for _ in range(3):
        state, _ = run.runner(state, run.frozen, run.runner.shard_batch(next(run.iterator)))
    after = _leaves(run.runner.unreplicate(state.params))
    assert after.keys() == before.keys()
    assert all(np.any(after[k] != before[k]) for k in after)  # every adapter and the temperature
    frozen = _leaves(run.runner.unreplicate(run.frozen))
    expected = _leaves({"model": base.dual_params(True)})
    assert frozen.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(frozen[k], expected[k])
    run.checkpointer.close()


def test_checkpoints_hold_adapters_resume_exactly_and_export_merges(tmp_path, capsys, base):
    config = _config()
    loop.train_and_evaluate(config, tmp_path / "straight", evaluate=False)
    loop.train_and_evaluate(config, tmp_path / "resumed", evaluate=False, stop_at=4)
    loop.train_and_evaluate(config, tmp_path / "resumed", evaluate=False)
    assert "resuming from" in capsys.readouterr().out
    run = tmp_path / "straight"
    a, _ = run_checkpoint.restore_params(run)
    b, _ = run_checkpoint.restore_params(tmp_path / "resumed")
    jax.tree.map(np.testing.assert_array_equal, a, b)
    with pytest.raises(InputError, match="model.lora_rank: saved 4, now 2"):
        run_setup.check_resume(_config(**{"model.lora_rank": 2}), str(tmp_path / "resumed"))

    # the step's params item: adapters (and the temperature) only; no frozen_params/, the
    # base's digests instead
    saved = run_checkpoint.flat_arrays(run_checkpoint._restore_tree(
        str(run / "checkpoints" / "8" / "params")))
    assert saved.keys() - {"loss/log_scale"}
    assert all(name.rsplit("/", 1)[-1] in lora.ADAPTER_LEAVES
               for name in saved.keys() - {"loss/log_scale"})
    assert not (run / "frozen_params").exists() and (run / "frozen_params.sha256.json").exists()

    # ckpt: the run's base (model.spec) with its adapters, bit for bit
    trained = load_pretrained(f"ckpt:{run}")
    assert trained.config.lora_rank == 4 and trained.config.lora_scale == 2.0
    flat, base_flat, adapters = (_leaves(trained.encoder_params), _leaves(base.encoder_params),
                                 _leaves(a["encoder"]))
    assert flat.keys() == base_flat.keys() | adapters.keys()
    for k, v in flat.items():
        np.testing.assert_array_equal(v, adapters[k] if lora.is_adapter(k) else base_flat[k])
    assert all(np.abs(v).max() > 0 for k, v in adapters.items() if k[-1] == "lora_b")
    embeddings = _embed(trained)
    assert np.abs(embeddings - _embed(base)).max() > 1e-3  # training moved the model

    # export writes merged weights a plain encoder reads back
    (out,) = export.run(f"ckpt:{run}", str(tmp_path / "hf"))
    back = load_pretrained(f"hf:{out}")
    assert back.config.lora_rank == 0
    np.testing.assert_allclose(_embed(back), embeddings, atol=2e-6)

    # a base that is not the one the run trained on is refused
    digests = json.loads((run / "frozen_params.sha256.json").read_text())
    name = next(iter(digests))
    digests[name] = "0" * 64
    (run / "frozen_params.sha256.json").write_text(json.dumps(digests))
    with pytest.raises(InputError, match="base model"):
        load_pretrained(f"ckpt:{run}")


@pytest.mark.parametrize("key,value", [
    ("model.lora_rank", -1), ("model.lora_alpha", 0.0), ("model.lora_dropout", 1.0),
    ("model.lora_targets", ("query", "ffn")), ("model.lora_targets", ()),
])
def test_config_errors_name_the_key(key, value):
    with pytest.raises(InputError, match=key.replace(".", r"\.")):
        schema.validate_config(_config(**{key: value}))


def test_a_rank_wider_than_a_projection_is_refused(base):
    with pytest.raises(InputError, match="model.lora_rank: 40 exceeds"):
        lora.for_training(base, _config(**{"model.lora_rank": 40}).model, seed=0)


def test_off_by_default(base):
    from configs import default
    assert default.get_config().model.lora_rank == 0
    assert lora.for_training(base, default.get_config().model, seed=0) is base
    assert lora.merged(base) is base


def test_the_final_evaluation_scores_the_selected_adapters(shared_data, tmp_path):
    """A LoRA run with dev selection evaluates the selected step's adapters on its base: the same
    scores as --mode evaluate, which loads ckpt:<workdir>@best."""
    from test_selection import _select_config

    from hybrid_jax.evaluation import entry

    config = _select_config(shared_data, **{"train.num_steps": 4, "model.lora_rank": 4,
                                            "model.lora_alpha": 8.0})
    config.eval.datasets = ({"name": "xquad-r-test", "type": "xquad-r",
                             "path": str(shared_data / "xquad-r"), "fold": "test",
                             "languages": ("en", "de")},)
    config.eval.plots = False
    final = loop.train_and_evaluate(config, tmp_path / "run")
    again = entry.evaluate_checkpoint(config, tmp_path / "run")
    assert final["eval"]["scalars"] and final["eval"]["scalars"] == again["scalars"]
