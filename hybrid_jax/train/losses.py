"""Global in-batch contrastive loss (InfoNCE over cosine scores).

Every device holds a slice of the global batch.  Queries on a device are scored against *all*
passages of the global batch (gathered with `all_gather`), so query i of device d has its positive
at column `d * local_batch + i`.  Optional hard negatives are gathered the same way and appended as
extra columns (they are never positives), so every query also sees the hard negatives of every
other pair of the global batch.  A validity mask, gathered with them, gives padded negatives (pairs
with fewer candidates than asked) a logit of `MASKED_LOGIT`: they receive no probability, no
gradient, and never win the accuracy argmax.

The function returns the *local* mean loss: the step averages it over devices (`pmean`), which is
the global mean because every device holds the same number of queries.  Called without an axis
name it is the plain single-device loss, the reference the sharded versions are tested against.

`distill_loss` (loss.distill) adds a teacher's scores: per pair, over its candidates (its positive
and its own hard negatives), the KL divergence between the teacher's and the student's softmax, or
the MSE between their positive-minus-negative margins.  It needs no collective but the count that
makes its mean global.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

AXIS_NAME = "batch"  # the device axis shared by the loss, pmap and the shard_map mesh
# Finite, so that `logits - max` in log_softmax stays finite (no inf - inf), yet so far below any
# real logit (scale * cosine, |cosine| <= 1) that exp() of it underflows to exactly 0 in float32.
MASKED_LOGIT = -1e9


def gather(x, axis_name: Optional[str]):
    """[b, ...] per device -> [n * b, ...] in device order (identity without an axis)."""
    if axis_name is None:
        return x
    return jax.lax.all_gather(x, axis_name, tiled=True)


def label_offset(local_batch: int, axis_name: Optional[str]):
    """Index of this device's first example in the global batch."""
    if axis_name is None:
        return 0
    return jax.lax.axis_index(axis_name) * local_batch


def _cross_entropy(logits, labels):
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return nll.mean(), correct.mean()


def contrastive_loss(query_emb, passage_emb, *, scale, axis_name: Optional[str] = None,
                     symmetric: bool = False, negative_emb=None, negative_valid=None):
    """InfoNCE of L2-normalised embeddings with negatives from the whole global batch.

    Args:
      query_emb, passage_emb: [b, D] this device's (normalised) embeddings; row i of each is a pair.
      scale: logit scale (1 / temperature), a scalar (may be a learnable parameter).
      axis_name: device axis to gather over (None: the batch is global already).
      symmetric: also add the passage->query loss (average of both directions).  That direction
        scores each positive passage against the queries of the global batch only: hard negatives
        take no part in it (they have no query of their own).
      negative_emb: optional [b * H, D] hard-negative passages of this device's pairs (pair-major:
        rows i * H .. i * H + H - 1 belong to pair i); they are gathered too and score as extra
        columns for every query.
      negative_valid: optional [b, H] (or [b * H]) 1 = real negative, 0 = padding; padded columns
        are masked out for every query.  None: all negatives are real.

    Returns:
      (loss, metrics): the local mean loss and {'loss', 'accuracy'} (query->passage in-batch
      accuracy: how often the positive scores highest among all candidates).
    """
    b = query_emb.shape[0]
    labels = label_offset(b, axis_name) + jnp.arange(b)
    logits = scale * jnp.einsum("qd,pd->qp", query_emb, gather(passage_emb, axis_name),
                                preferred_element_type=jnp.float32)
    if negative_emb is not None:
        logits = jnp.concatenate(
            [logits, _negative_logits(query_emb, negative_emb, negative_valid, scale, axis_name)],
            axis=1)
    loss, accuracy = _cross_entropy(logits, labels)
    metrics = {"qp_loss": loss, "accuracy": accuracy}
    if symmetric:
        all_queries = gather(query_emb, axis_name)
        logits_pq = scale * jnp.einsum("pd,qd->pq", passage_emb, all_queries,
                                       preferred_element_type=jnp.float32)
        loss_pq, accuracy_pq = _cross_entropy(logits_pq, labels)
        metrics.update(pq_loss=loss_pq, pq_accuracy=accuracy_pq)
        loss = 0.5 * (loss + loss_pq)
    metrics["loss"] = loss
    return loss, metrics


def _negative_logits(query_emb, negative_emb, negative_valid, scale, axis_name):
    """[b, n * b * H] logits of this device's queries against every device's hard negatives."""
    logits = scale * jnp.einsum("qd,nd->qn", query_emb, gather(negative_emb, axis_name),
                                preferred_element_type=jnp.float32)
    if negative_valid is None:
        return logits
    valid = jnp.reshape(negative_valid, (-1,))
    if valid.shape[0] != negative_emb.shape[0]:
        raise ValueError(f"negative_valid has {valid.shape[0]} entries for "
                         f"{negative_emb.shape[0]} hard-negative embeddings")
    # where, not an additive mask: the masked columns' gradient (and scale's through them) is 0.
    return jnp.where(gather(valid, axis_name)[None, :] > 0, logits, MASKED_LOGIT)


def distill_loss(query_emb, passage_emb, negative_emb, positive_score, negative_score, *, scale,
                 kind: str, temperature, negative_valid=None, axis_name: Optional[str] = None):
    """Distillation from teacher scores over each pair's own candidates.

    Student logits are the contrastive ones (`scale` * cosine) of query i against its positive and
    its H hard negatives; teacher logits are the teacher's scores / `temperature`.  A candidate
    takes part when it is real (`negative_valid`) and scored (finite); a pair takes part when its
    positive and at least one negative do.
      kind 'kl':         KL(teacher softmax || student softmax) per pair, mean over pairs.
      kind 'margin_mse': (student margin - teacher margin)^2 per (pair, negative), margin =
                         logit(positive) - logit(negative), mean over those terms.

    Args:
      query_emb, passage_emb: [b, D] this device's pairs; negative_emb: [b * H, D], pair-major.
      positive_score: [b]; negative_score: [b, H] teacher scores, NaN where there is none.
      negative_valid: optional [b, H] 1 = real negative, 0 = padding.

    Returns this device's value: a sum over its terms divided by the global number of terms and
    multiplied by the number of devices, so its mean over devices (the step's pmean) is the mean
    over every term of the global batch whatever the devices hold.
    """
    b, h = negative_score.shape
    negatives = negative_emb.reshape(b, h, -1)
    positive = jnp.einsum("qd,qd->q", query_emb, passage_emb, preferred_element_type=jnp.float32)
    student = scale * jnp.concatenate(
        [positive[:, None],
         jnp.einsum("qd,qhd->qh", query_emb, negatives, preferred_element_type=jnp.float32)], 1)
    teacher = jnp.concatenate([positive_score[:, None], negative_score], 1).astype(jnp.float32)
    valid = jnp.isfinite(teacher)
    if negative_valid is not None:
        valid = valid & jnp.concatenate(
            [jnp.ones((b, 1), bool), jnp.reshape(negative_valid, (b, h)) > 0], 1)
    pair_ok = valid[:, 0] & valid[:, 1:].any(axis=1)
    valid = valid & pair_ok[:, None]
    # where, not arithmetic on NaN: a missing score gives no value and no gradient.
    teacher = jnp.where(valid, teacher / temperature, MASKED_LOGIT)
    student = jnp.where(valid, student, MASKED_LOGIT)
    if kind == "kl":
        p_teacher = jax.nn.softmax(teacher, axis=-1)
        gap = jax.nn.log_softmax(teacher, axis=-1) - jax.nn.log_softmax(student, axis=-1)
        terms, count = jnp.where(valid, p_teacher * gap, 0.0).sum(-1), pair_ok
    elif kind == "margin_mse":
        gap = (student[:, :1] - student[:, 1:]) - (teacher[:, :1] - teacher[:, 1:])
        terms, count = jnp.where(valid[:, 1:], gap * gap, 0.0), valid[:, 1:]
    else:
        raise ValueError(f"distill kind must be 'kl' or 'margin_mse', got {kind!r}")
    return _global_mean(terms.sum(), count.sum().astype(jnp.float32), axis_name)


def _global_mean(local_sum, local_count, axis_name: Optional[str]):
    if axis_name is None:
        return local_sum / jnp.maximum(local_count, 1.0)
    devices = jax.lax.psum(1, axis_name)
    return local_sum * devices / jnp.maximum(jax.lax.psum(local_count, axis_name), 1.0)


def init_loss_params(loss_config) -> dict:
    """Trainable loss parameters: {'log_scale': ...} with a learnable temperature, else {}."""
    if loss_config.learn_temperature:
        return {"log_scale": jnp.asarray(-jnp.log(loss_config.temperature), jnp.float32)}
    return {}


def logit_scale(loss_params: dict, loss_config):
    """1 / temperature: fixed, or exp(log_scale) clipped at max_logit_scale (CLIP's recipe)."""
    if "log_scale" in loss_params:
        return jnp.minimum(jnp.exp(loss_params["log_scale"]), loss_config.max_logit_scale)
    return jnp.asarray(1.0 / loss_config.temperature, jnp.float32)
