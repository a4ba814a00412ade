"""The per-device step under pmap and shard_map, with and without GradCache accumulation and hard
negatives, equals one device on the same global batch."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from hybrid_jax.train import losses, optim
from hybrid_jax.train import runner as runner_lib
from hybrid_jax.train import step as step_lib
from hybrid_jax.models import config as config_lib
from hybrid_jax.models.dual_encoder import DualEncoder

N_DEV = 4
B, LQ, LP = 8, 6, 10


@pytest.fixture(scope="module")
def model():
    cfg = config_lib.tiny(vocab_size=1000, num_layers=1, hidden_dropout=0.0, attention_dropout=0.0)
    module = DualEncoder(cfg, tied=True)
    ids = jnp.zeros((1, 4), jnp.int32)
    params = jax.jit(module.init)(jax.random.key(0), ids, ids, ids, ids)["params"]
    return module, params


def synthetic_batch(seed, b=B, hard_negatives=0):
    rng = np.random.RandomState(seed)
    out = {}
    for role, length in (("query", LQ), ("passage", LP)):
        ids = rng.randint(5, 1000, size=(b, length)).astype(np.int32)
        lengths = rng.randint(2, length + 1, size=b)
        mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
        out[f"{role}_ids"], out[f"{role}_mask"] = ids * mask + (1 - mask), mask
    if hard_negatives:
        shape = (b, hard_negatives)
        ids = rng.randint(5, 1000, size=shape + (LP,)).astype(np.int32)
        lengths = rng.randint(1, LP + 1, size=shape)
        mask = (np.arange(LP) < lengths[..., None]).astype(np.int32)
        valid = (rng.rand(*shape) > 0.3).astype(np.int32)
        valid[1, 0] = valid[b - 2, -1] = 0  # padding on the first and on the last device
        out.update(negative_ids=ids * mask + (1 - mask), negative_mask=mask, negative_valid=valid)
    return out


def _loss_config(**kw):
    c = default.get_config().loss
    c.update(kw)
    return c


def _reference(module, params, batch, tx, loss_cfg, frozen_fn=lambda p: False, **kw):
    trainable, frozen = optim.split_params({"model": params, "loss": losses.init_loss_params(loss_cfg)},
                                           frozen_fn)
    state = step_lib.create_state(trainable, tx)
    step = jax.jit(step_lib.make_train_step(module, tx, lambda s: 1.0, loss_cfg, axis_name=None,
                                         deterministic=True, **kw))
    return step(state, frozen, {k: jnp.asarray(v) for k, v in batch.items()})


def _sharded(parallelism, module, params, batch, tx, loss_cfg, frozen_fn=lambda p: False,
             n_dev=N_DEV, **kw):
    trainable, frozen = optim.split_params({"model": params, "loss": losses.init_loss_params(loss_cfg)},
                                           frozen_fn)
    runner = runner_lib.make_runner(parallelism, module, tx, lambda s: 1.0, loss_cfg,
                               devices=jax.devices()[:n_dev], deterministic=True, **kw)
    state = runner.replicate(step_lib.create_state(trainable, tx))
    new_state, metrics = runner(state, runner.replicate(frozen), runner.shard_batch(batch))
    return runner.unreplicate(new_state), runner.metrics_to_host(metrics)


def _max_abs_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _assert_trees_close(a, b, atol):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-5, atol=atol), a, b)


_REFERENCES = {}


def _variant(name):
    """'plain', or 'negatives<H>': H hard negatives per pair (some padding), symmetric loss and
    a learned temperature (whose gradient also flows through the negatives' columns)."""
    if name == "plain":
        return _loss_config(), synthetic_batch(0)
    return (_loss_config(symmetric=True, learn_temperature=True),
            synthetic_batch(0, hard_negatives=int(name[len("negatives"):])))


def _cached_reference(model, name):
    if name not in _REFERENCES:
        cfg, batch = _variant(name)
        _REFERENCES[name] = _reference(*model, batch, optax.sgd(1.0), cfg)
    return _REFERENCES[name]


# (parallelism, devices, grad_accum_steps); parallelism None: one device, no device axis.  With B = 8
# the last layouts put one pair per device or per micro-batch.
LAYOUTS = {"pmap2": ("pmap", 2, 1), "pmap4": ("pmap", 4, 1), "pmap8": ("pmap", 8, 1),
           "shard_map2": ("shard_map", 2, 1), "shard_map4": ("shard_map", 4, 1),
           "shard_map8": ("shard_map", 8, 1), "accum2": (None, 1, 2), "accum4": (None, 1, 4),
           "pmap4_accum2": ("pmap", 4, 2), "shard_map4_accum2": ("shard_map", 4, 2),
           "pmap2_accum4": ("pmap", 2, 4), "shard_map2_accum4": ("shard_map", 2, 4)}
CASES = ([("plain", k) for k in ("pmap4", "shard_map4", "pmap4_accum2", "shard_map4_accum2")]
         + [("negatives2", k) for k in LAYOUTS]
         + [("negatives1", k) for k in ("pmap8", "shard_map4_accum2")])


@pytest.mark.parametrize("variant,layout", CASES)
def test_step_equals_single_device(model, variant, layout):
    """Loss, accuracy, gradient norm and SGD-updated params equal the single-device step on the
    same global batch.  SGD with lr 1 makes the update the gradient itself (Adam would hide an
    n_devices scale such as shard_map's gradient summing)."""
    module, params = model
    cfg, batch = _variant(variant)
    ref_state, ref_m = _cached_reference(model, variant)
    parallelism, n_dev, accum = LAYOUTS[layout]
    if parallelism is None:
        state, m = _reference(module, params, batch, optax.sgd(1.0), cfg, grad_accum_steps=accum)
        m = {k: float(v) for k, v in m.items()}
    else:
        state, m = _sharded(parallelism, module, params, batch, optax.sgd(1.0), cfg, n_dev=n_dev,
                            grad_accum_steps=accum)
    np.testing.assert_allclose(m["loss"], float(ref_m["loss"]), rtol=1e-5)
    np.testing.assert_allclose(m["accuracy"], float(ref_m["accuracy"]))
    np.testing.assert_allclose(m["grad_norm"], float(ref_m["grad_norm"]), rtol=1e-4)
    assert m["grad_norm"] > 0
    _assert_trees_close(state.params, ref_state.params, atol=2e-6)
    diff = _max_abs_diff(state.params, ref_state.params)
    print(f"{variant} {layout}: |loss diff| {abs(m['loss'] - float(ref_m['loss'])):.1e}, "
          f"max |param diff| {diff:.1e}")


def test_padded_negatives_change_nothing(model):
    """The step sees negative_valid: with every negative padding it is the step without any."""
    cfg, _ = _variant("plain")
    ref_state, ref_m = _cached_reference(model, "plain")
    batch = synthetic_batch(0, hard_negatives=2)  # the same pairs, then negatives
    batch["negative_valid"][:] = 0
    state, m = _reference(*model, batch, optax.sgd(1.0), cfg)
    np.testing.assert_allclose(float(m["loss"]), float(ref_m["loss"]), rtol=1e-6)
    # (not bit-equal: softmax sums over 8 + 16 columns are reduced in another order)
    _assert_trees_close(state.params, ref_state.params, atol=2e-6)


def test_shard_map_gradient_trap_is_real():
    """Pins the trap the step avoids: under shard_map, the gradient of the *local* loss with
    respect to replicated params comes back summed over devices (n x too large); the gradient of
    the pmean'd loss is right.  Under pmap, the local loss's gradient + pmean is right."""
    w = jnp.asarray(np.random.RandomState(0).randn(3, 4).astype(np.float32))
    x = jnp.asarray(np.random.RandomState(1).randn(8, 3).astype(np.float32))

    def local_loss(w, x, axis_name):
        e = jnp.tanh(x @ w)
        return losses.contrastive_loss(e, e[:, ::-1], scale=3.0, axis_name=axis_name)[0]

    ref = jax.grad(local_loss)(w, x, None)
    mesh = runner_lib.Runner("shard_map", jax.devices()[:N_DEV]).mesh
    spec = jax.sharding.PartitionSpec
    sm = lambda f: jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(spec(), spec(losses.AXIS_NAME)),
                                         out_specs=spec()))(w, x)
    naive = sm(lambda w, x: jax.grad(local_loss)(w, x, losses.AXIS_NAME))
    right = sm(lambda w, x: jax.grad(
        lambda w: jax.lax.pmean(local_loss(w, x, losses.AXIS_NAME), losses.AXIS_NAME))(w))
    np.testing.assert_allclose(naive, N_DEV * ref, rtol=1e-5)
    np.testing.assert_allclose(right, ref, rtol=1e-5, atol=1e-7)
    pm = jax.pmap(lambda w, x: jax.lax.pmean(jax.grad(local_loss)(w, x, losses.AXIS_NAME),
                                             losses.AXIS_NAME),
                  axis_name=losses.AXIS_NAME, in_axes=(None, 0), devices=jax.devices()[:N_DEV])
    np.testing.assert_allclose(pm(w, x.reshape(N_DEV, -1, 3))[0], ref, rtol=1e-5, atol=1e-7)


def test_frozen_word_embeddings_have_no_state_and_no_update(model):
    module, params = model
    ocfg = default.get_config().optim
    ocfg.freeze_word_embeddings = True
    ocfg.warmup_steps = 0
    frozen_fn = optim.frozen_predicate(ocfg)
    tx, _ = optim.make_optimizer(ocfg, 10)
    trainable, frozen = optim.split_params({"model": params, "loss": {}}, frozen_fn)
    assert "word_embeddings" not in trainable["model"]["encoder"]
    assert frozen["model"]["encoder"]["word_embeddings"]["embedding"].shape == (1000, 32)
    state = step_lib.create_state(trainable, tx)
    n_state = sum(x.size for x in jax.tree.leaves(state.opt_state))
    n_train = sum(x.size for x in jax.tree.leaves(trainable))
    assert n_state < 3 * n_train + 10 and n_train < 1000 * 32 * 2  # no moments for the table
    new_state, m = _reference(module, params, synthetic_batch(3), tx, _loss_config(), frozen_fn)
    assert float(m["grad_norm"]) > 0
    # the frozen table is not even an output of the step; trainable params moved
    assert "word_embeddings" not in new_state.params["model"]["encoder"]
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new_state.params, trainable)
    assert max(jax.tree.leaves(moved)) > 0


def test_weight_decay_mask():
    mask = optim.decay_mask({"model": {"l": {"kernel": 1, "bias": 2}, "norm": {"scale": 3}},
                             "loss": {"log_scale": 4}})
    assert mask == {"model": {"l": {"kernel": True, "bias": False}, "norm": {"scale": False}},
                    "loss": {"log_scale": False}}


def test_schedules():
    c = default.get_config().optim
    c.learning_rate, c.warmup_steps = 1.0, 10
    for name in ("linear", "cosine", "constant"):
        c.schedule = name
        s = optim.make_schedule(c, 110)
        assert float(s(0)) == 0.0 and abs(float(s(5)) - 0.5) < 1e-6 and abs(float(s(10)) - 1) < 1e-6
        assert float(s(110)) == (1.0 if name == "constant" else 0.0)
    c.schedule = "cosine"
    assert abs(float(optim.make_schedule(c, 110)(60)) - 0.5) < 1e-6


@pytest.mark.parametrize("parallelism", ["pmap", "shard_map"])
def test_step_compiles_once_and_dropout_differs_per_device_and_step(model, parallelism):
    module, params = model
    module = DualEncoder(module.config.replace(hidden_dropout=0.1), tied=True)
    cfg, tx = _loss_config(), optax.adamw(1e-3)
    traces = []
    per_device = step_lib.make_train_step(module, tx, lambda s: 1e-3, cfg,
                                       reduce_grads=(parallelism == "pmap"), prng_impl="rbg")

    def counted(*args):
        traces.append(1)
        return per_device(*args)

    runner = runner_lib.Runner(parallelism, jax.devices()[:N_DEV]).compile(counted)
    state = runner.replicate(step_lib.create_state({"model": params, "loss": {}}, tx))
    losses_seen = []
    for i in range(3):
        state, m = runner(state, {}, runner.shard_batch(synthetic_batch(10, hard_negatives=1)))
        losses_seen.append(runner.metrics_to_host(m)["loss"])
    assert len(traces) == 1
    assert int(runner.unreplicate(state).step) == 3
    assert len(set(losses_seen)) == 3


def test_bfloat16_compute_matches_float32_loosely(model):
    module, params = model
    cfg, batch = _variant("plain")
    _, ref_m = _cached_reference(model, "plain")
    bf16 = DualEncoder(module.config.replace(compute_dtype="bfloat16"), tied=True)
    state, m = _reference(bf16, params, batch, optax.sgd(1.0), cfg)
    assert jax.tree.leaves(state.params)[0].dtype == jnp.float32  # params stay float32
    np.testing.assert_allclose(float(m["loss"]), float(ref_m["loss"]), rtol=3e-2)
