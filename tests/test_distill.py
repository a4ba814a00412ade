"""Distillation from teacher scores: the two losses against numpy, zero weight = plain contrastive,
every device layout and GradCache = one device, the JSONL score fields, the batch's scores, the
teacher-model scores and their cache, and the config checks."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from configs import default
from hybrid_jax import config as schema
from hybrid_jax.data import pairs_jsonl, pipeline, teacher_scores
from hybrid_jax.data.examples import ParallelExample
from hybrid_jax.errors import InputError
from hybrid_jax.models import config as config_lib
from hybrid_jax.models.dual_encoder import DualEncoder
from hybrid_jax.train import losses, optim
from hybrid_jax.train import runner as runner_lib
from hybrid_jax.train import step as step_lib
from hybrid_jax.train.losses import AXIS_NAME

KINDS = ("kl", "margin_mse")


# ----------------------------------------------------------------------------- the losses

def _unit(seed, *shape):
    x = np.random.RandomState(seed).randn(*shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _numpy_distill(q, p, n, pos, neg, valid, scale, temperature, kind):
    """Independent reference: loops over pairs, only the real and scored candidates."""
    terms = []
    for i in range(len(q)):
        keep = [j for j in range(n.shape[1]) if valid[i, j] and np.isfinite(neg[i, j])]
        if not np.isfinite(pos[i]) or not keep:
            continue
        s = scale * np.array([q[i] @ p[i]] + [q[i] @ n[i, j] for j in keep], np.float64)
        t = np.array([pos[i]] + [neg[i, j] for j in keep], np.float64) / temperature
        if kind == "kl":
            pt, ps = np.exp(t - t.max()), np.exp(s - s.max())
            pt, ps = pt / pt.sum(), ps / ps.sum()
            terms.append(np.sum(pt * np.log(pt / ps)))
        else:
            terms.extend(((s[0] - s[1:]) - (t[0] - t[1:])) ** 2)
    return float(np.mean(terms))


def _distill(q, p, n, pos, neg, valid, kind, scale=10.0, temperature=0.5, axis_name=None):
    return losses.distill_loss(q, p, n.reshape(-1, n.shape[-1]), pos, neg, scale=scale, kind=kind,
                               temperature=temperature, negative_valid=valid,
                               axis_name=axis_name)


def test_hand_cases():
    """One pair, one negative: student logits [1, 0] (scale 1), teacher scores [2, 0]."""
    q, p, n = (np.array([[v]], np.float32) for v in ([1.0, 0.0], [1.0, 0.0], [0.0, 1.0]))
    args = (q[0], p[0], n, np.array([2.0], np.float32), np.array([[0.0]], np.float32), None)
    # margins: student 1 - 0, teacher (2 - 0) / T
    assert float(_distill(*args, "margin_mse", scale=1.0, temperature=1.0)) == pytest.approx(1.0)
    assert float(_distill(*args, "margin_mse", scale=1.0, temperature=2.0)) == pytest.approx(0.0)
    pt = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()
    ps = np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum()
    kl = float(_distill(*args, "kl", scale=1.0, temperature=1.0))
    assert kl == pytest.approx(float(np.sum(pt * np.log(pt / ps))), rel=1e-5)
    # 0.8808 ln(0.8808 / 0.7311) + 0.1192 ln(0.1192 / 0.2689) = 0.1641 - 0.0970
    assert kl == pytest.approx(0.0671, abs=1e-4)
    assert float(_distill(*args, "kl", scale=1.0, temperature=2.0)) == pytest.approx(0.0, abs=1e-7)


def _scored_batch(seed, b=8, h=3, dim=16):
    q, p, n = _unit(seed, b, dim), _unit(seed + 1, b, dim), _unit(seed + 2, b, h, dim)
    rng = np.random.RandomState(seed + 3)
    pos = rng.uniform(0.6, 0.9, b).astype(np.float32)
    neg = rng.uniform(0.3, 0.8, (b, h)).astype(np.float32)
    valid = (rng.rand(b, h) > 0.2).astype(np.int32)
    pos[2] = np.nan                 # a pair without a positive score: left out entirely
    neg[5, :] = np.nan              # a pair whose negatives have no scores: left out too
    neg[1, 0] = np.nan              # one unscored negative
    valid[3, 1] = 0                 # padding with a finite score: still left out
    valid[6, :] = 1
    return q, p, n, pos, neg, valid


@pytest.mark.parametrize("kind", KINDS)
def test_losses_match_numpy_and_leave_out_missing_scores(kind):
    q, p, n, pos, neg, valid = _scored_batch(0)
    got = float(_distill(q, p, n, pos, neg, valid, kind))
    assert np.isfinite(got) and got > 0
    assert got == pytest.approx(_numpy_distill(q, p, n, pos, neg, valid, 10.0, 0.5, kind),
                                rel=1e-5)
    # What is left out changes nothing: other embeddings or scores where there is no score.
    n2, pos2 = n.copy(), pos.copy()
    n2[2], n2[5], n2[1, 0], n2[3, 1] = _unit(10, 3, 16), _unit(11, 3, 16), _unit(12, 16), \
        _unit(13, 16)
    pos2[5] = 0.1
    assert float(_distill(q, p, n2, pos2, neg, valid, kind)) == pytest.approx(got, rel=1e-6)
    grads = jax.grad(lambda n: _distill(q, p, n, pos, neg, valid, kind))(jnp.asarray(n))
    assert np.all(np.asarray(grads)[[2, 5]] == 0) and np.all(np.asarray(grads)[1, 0] == 0)
    assert np.isfinite(np.asarray(grads)).all()


@pytest.mark.parametrize("kind", KINDS)
def test_sharded_loss_and_gradients_match_one_device(kind):
    """shard_map over 4 devices, unequal numbers of scored terms per device: the loss and the
    gradients of queries, positives and negatives equal one device's."""
    q, p, n, pos, neg, valid = (jnp.asarray(x) for x in _scored_batch(4))
    mesh = Mesh(np.array(jax.devices()[:4]), (AXIS_NAME,))

    def loss(q, p, n, pos, neg, valid, axis_name=None):
        return _distill(q, p, n, pos, neg, valid, kind, axis_name=axis_name)

    def per_device(q, p, n, pos, neg, valid):
        f = lambda q, p, n: jax.lax.pmean(loss(q, p, n, pos, neg, valid, AXIS_NAME), AXIS_NAME)
        return f(q, p, n), jax.grad(f, argnums=(0, 1, 2))(q, p, n)

    value, grads = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(AXIS_NAME),) * 6,
                                         out_specs=(P(), (P(AXIS_NAME),) * 3)))(
        q, p, n, pos, neg, valid)
    np.testing.assert_allclose(float(value), float(loss(q, p, n, pos, neg, valid)), rtol=1e-5)
    ref = jax.grad(loss, argnums=(0, 1, 2))(q, p, n, pos, neg, valid)
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(g, r, atol=1e-6)
