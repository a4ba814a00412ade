"""The sharded contrastive loss equals the single-device loss on the same global batch."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from hybrid_jax import losses
from hybrid_jax.losses import AXIS_NAME

N_DEV = 4
LOCAL = 3
DIM = 16


def _emb(seed, rows):
    x = np.random.RandomState(seed).randn(rows, DIM).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _numpy_reference(q, p, scale, neg=None):
    cands = p if neg is None else np.concatenate([p, neg])
    logits = scale * q @ cands.T
    logits = logits - logits.max(1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    per_query = -logp[np.arange(len(q)), np.arange(len(q))]
    acc = (logits.argmax(1) == np.arange(len(q))).mean()
    return per_query, acc


def test_single_device_matches_numpy():
    q, p = _emb(0, 12), _emb(1, 12)
    p[:6] = q[:6]  # make some pairs easy so accuracy is neither 0 nor 1
    loss, m = losses.contrastive_loss(jnp.asarray(q), jnp.asarray(p), scale=20.0)
    per_query, acc = _numpy_reference(q, p, 20.0)
    np.testing.assert_allclose(float(loss), per_query.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(m["accuracy"]), acc)
    assert 0 < acc < 1


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("with_negatives", [False, True])
def test_pmap_loss_and_offsets_match_reference(symmetric, with_negatives):
    B = N_DEV * LOCAL
    q, p = _emb(0, B), _emb(1, B)
    p[::2] = q[::2]
    neg = _emb(2, B * 2) if with_negatives else None

    def per_device(q, p, neg):
        loss, m = losses.contrastive_loss(q, p, scale=10.0, axis_name=AXIS_NAME,
                                          symmetric=symmetric, negative_emb=neg)
        return loss, jax.lax.pmean(loss, AXIS_NAME), jax.lax.pmean(m["accuracy"], AXIS_NAME)

    shard = lambda x: None if x is None else x.reshape(N_DEV, -1, DIM)
    fn = jax.pmap(per_device, axis_name=AXIS_NAME, devices=jax.devices()[:N_DEV],
                  in_axes=(0, 0, None if neg is None else 0))
    local, total, acc = fn(shard(q), shard(p), shard(neg))
    ref, ref_m = losses.contrastive_loss(jnp.asarray(q), jnp.asarray(p), scale=10.0,
                                         symmetric=symmetric,
                                         negative_emb=None if neg is None else jnp.asarray(neg))
    np.testing.assert_allclose(np.asarray(total), float(ref), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(acc), float(ref_m["accuracy"]), rtol=1e-6)
    if not symmetric:
        # Device d's loss is the mean over *its* queries with positives at d * LOCAL + i.
        per_query, _ = _numpy_reference(q, p, 10.0, neg)
        np.testing.assert_allclose(np.asarray(local), per_query.reshape(N_DEV, LOCAL).mean(1),
                                   rtol=1e-5)


def test_shard_map_embedding_gradients_match_reference():
    B = N_DEV * LOCAL
    q, p = jnp.asarray(_emb(0, B)), jnp.asarray(_emb(1, B))
    mesh = Mesh(np.array(jax.devices()[:N_DEV]), (AXIS_NAME,))

    def per_device(q, p):
        def f(q, p):
            loss, _ = losses.contrastive_loss(q, p, scale=10.0, axis_name=AXIS_NAME, symmetric=True)
            return jax.lax.pmean(loss, AXIS_NAME)
        return jax.grad(f, argnums=(0, 1))(q, p)

    gq, gp = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(AXIS_NAME), P(AXIS_NAME)),
                                   out_specs=(P(AXIS_NAME), P(AXIS_NAME))))(q, p)
    rq, rp = jax.grad(lambda q, p: losses.contrastive_loss(q, p, scale=10.0, symmetric=True)[0],
                      argnums=(0, 1))(q, p)
    np.testing.assert_allclose(gq, rq, atol=1e-6)
    np.testing.assert_allclose(gp, rp, atol=1e-6)


def test_learnable_temperature():
    cfg = ml_collections.ConfigDict(dict(temperature=0.05, learn_temperature=True,
                                         max_logit_scale=100.0))
    params = losses.init_loss_params(cfg)
    np.testing.assert_allclose(float(losses.logit_scale(params, cfg)), 20.0, rtol=1e-5)
    cfg.learn_temperature = False
    assert losses.init_loss_params(cfg) == {}
    np.testing.assert_allclose(float(losses.logit_scale({}, cfg)), 20.0, rtol=1e-6)
