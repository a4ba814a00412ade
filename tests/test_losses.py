"""The sharded contrastive loss equals the single-device loss on the same global batch."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from hybrid_jax.train import losses
from hybrid_jax.train.losses import AXIS_NAME

N_DEV = 4
LOCAL = 3
DIM = 16


def _emb(seed, rows):
    x = np.random.RandomState(seed).randn(rows, DIM).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _valid(seed, rows):
    """Validity of `rows` hard negatives (1 real, 0 padding): about a third padding."""
    v = (np.random.RandomState(seed).rand(rows) > 0.35).astype(np.int32)
    assert 0 < v.sum() < rows
    return v


def _numpy_reference(q, p, scale, neg=None, valid=None):
    if neg is not None and valid is not None:
        neg = neg[valid > 0]  # padded negatives are simply not candidates
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
    valid = _valid(3, B * 2).reshape(B, 2) if with_negatives else None
    if with_negatives:
        neg[1::2] = p[(np.arange(B) + 1) % B]  # second negatives: the next pair's positive
        valid[1, 1] = 0                         # (pair 1's, a copy of positive 2, is padding)

    def per_device(q, p, neg, valid):
        loss, m = losses.contrastive_loss(q, p, scale=10.0, axis_name=AXIS_NAME,
                                          symmetric=symmetric, negative_emb=neg,
                                          negative_valid=valid)
        return loss, jax.lax.pmean(loss, AXIS_NAME), jax.lax.pmean(m["accuracy"], AXIS_NAME)

    shard = lambda x: None if x is None else x.reshape((N_DEV, -1) + x.shape[1:])
    fn = jax.pmap(per_device, axis_name=AXIS_NAME, devices=jax.devices()[:N_DEV],
                  in_axes=(0, 0) + ((None, None) if neg is None else (0, 0)))
    local, total, acc = fn(shard(q), shard(p), shard(neg), shard(valid))
    ref, ref_m = losses.contrastive_loss(
        jnp.asarray(q), jnp.asarray(p), scale=10.0, symmetric=symmetric,
        negative_emb=None if neg is None else jnp.asarray(neg),
        negative_valid=None if valid is None else jnp.asarray(valid))
    np.testing.assert_allclose(np.asarray(total), float(ref), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(acc), float(ref_m["accuracy"]), rtol=1e-6)
    if not symmetric:
        # Device d's loss is the mean over *its* queries with positives at d * LOCAL + i.
        per_query, _ = _numpy_reference(q, p, 10.0, neg, None if valid is None else valid.ravel())
        np.testing.assert_allclose(np.asarray(local), per_query.reshape(N_DEV, LOCAL).mean(1),
                                   rtol=1e-5)


def test_shard_map_embedding_gradients_match_reference():
    """Gradients with respect to queries, positives and hard negatives (some of them padding)."""
    B, H = N_DEV * LOCAL, 2
    q, p, n = (jnp.asarray(_emb(i, rows)) for i, rows in enumerate((B, B, B * H)))
    valid = jnp.asarray(_valid(3, B * H).reshape(B, H))
    mesh = Mesh(np.array(jax.devices()[:N_DEV]), (AXIS_NAME,))

    def loss(q, p, n, valid, axis_name=None):
        return losses.contrastive_loss(q, p, scale=10.0, axis_name=axis_name, symmetric=True,
                                       negative_emb=n, negative_valid=valid)[0]

    def per_device(q, p, n, valid):
        f = lambda q, p, n: jax.lax.pmean(loss(q, p, n, valid, AXIS_NAME), AXIS_NAME)
        return jax.grad(f, argnums=(0, 1, 2))(q, p, n)

    got = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(AXIS_NAME),) * 4,
                                out_specs=(P(AXIS_NAME),) * 3))(q, p, n, valid)
    ref = jax.grad(loss, argnums=(0, 1, 2))(q, p, n, valid)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, atol=1e-6)
    gn = np.asarray(got[2]).reshape(B, H, DIM)
    assert np.all(gn[np.asarray(valid) == 0] == 0)      # padding gets no gradient
    assert np.all(np.abs(gn[np.asarray(valid) > 0]).sum(-1) > 0)


@pytest.mark.parametrize("symmetric", [False, True])
def test_padded_negatives_do_not_count(symmetric):
    """All padding = no negatives at all; padded negatives identical to a positive, or scoring
    above one, change neither loss nor accuracy, while the same negatives marked real do."""
    B, H = 8, 2
    q = _emb(0, B)
    p = q + 0.3 * _emb(1, B)
    p /= np.linalg.norm(p, axis=1, keepdims=True)  # every query's positive is its closest passage
    neg = _emb(2, B * H)
    kw = dict(scale=20.0, symmetric=symmetric)
    loss = lambda neg, valid: losses.contrastive_loss(jnp.asarray(q), jnp.asarray(p),
                                                      negative_emb=neg, negative_valid=valid, **kw)
    base, base_m = loss(None, None)
    none, none_m = loss(neg, np.zeros((B, H), np.int32))
    np.testing.assert_allclose(float(none), float(base), rtol=1e-6)
    assert float(none_m["accuracy"]) == float(base_m["accuracy"]) == 1.0

    valid = np.ones((B, H), np.int32)
    valid[3] = 0
    neg[3 * H] = p[0]      # pair 3's negatives: query 0's positive itself, and a passage that
    neg[3 * H + 1] = q[1]  # scores higher for query 1 than its positive does
    padded, padded_m = loss(neg, valid)
    other_neg = neg.copy()
    other_neg[3 * H:4 * H] = _emb(9, H)  # what padded rows hold is irrelevant
    other, other_m = loss(other_neg, valid)
    np.testing.assert_allclose(float(padded), float(other), rtol=1e-6)
    assert float(padded_m["accuracy"]) == float(other_m["accuracy"]) == 1.0
    real, real_m = loss(neg, np.ones((B, H), np.int32))
    assert float(real) > float(padded) + 0.05
    assert float(real_m["accuracy"]) == 1.0 - 1 / B  # query 1 ranks the negative first


def test_learnable_temperature():
    cfg = ml_collections.ConfigDict(dict(temperature=0.05, learn_temperature=True,
                                         max_logit_scale=100.0))
    params = losses.init_loss_params(cfg)
    np.testing.assert_allclose(float(losses.logit_scale(params, cfg)), 20.0, rtol=1e-5)
    cfg.learn_temperature = False
    assert losses.init_loss_params(cfg) == {}
    np.testing.assert_allclose(float(losses.logit_scale({}, cfg)), 20.0, rtol=1e-6)
