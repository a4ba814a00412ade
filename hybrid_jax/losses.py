"""Global in-batch contrastive loss (InfoNCE over cosine scores).

Every device holds a slice of the global batch.  Queries on a device are scored against *all*
passages of the global batch (gathered with `all_gather`), so query i of device d has its positive
at column `d * local_batch + i`.  Optional hard negatives are gathered the same way and appended as
extra columns (they are never positives).

The function returns the *local* mean loss: the step averages it over devices (`pmean`), which is
the global mean because every device holds the same number of queries.  Called without an axis
name it is the plain single-device loss, the reference the sharded versions are tested against.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

AXIS_NAME = "batch"  # the device axis shared by the loss, pmap and the shard_map mesh


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
                     symmetric: bool = False, negative_emb=None):
    """InfoNCE of L2-normalised embeddings with negatives from the whole global batch.

    Args:
      query_emb, passage_emb: [b, D] this device's (normalised) embeddings; row i of each is a pair.
      scale: logit scale (1 / temperature), a scalar (may be a learnable parameter).
      axis_name: device axis to gather over (None: the batch is global already).
      symmetric: also add the passage->query loss (average of both directions).
      negative_emb: optional [b * H, D] extra hard-negative passages of this device's queries;
        they are gathered too and score as extra columns for every query.

    Returns:
      (loss, metrics): the local mean loss and {'loss', 'accuracy'} (query->passage in-batch
      accuracy: how often the positive scores highest among all candidates).
    """
    b = query_emb.shape[0]
    labels = label_offset(b, axis_name) + jnp.arange(b)
    all_passages = gather(passage_emb, axis_name)
    if negative_emb is not None:
        all_passages = jnp.concatenate([all_passages, gather(negative_emb, axis_name)], axis=0)
    logits = scale * jnp.einsum("qd,pd->qp", query_emb, all_passages,
                                preferred_element_type=jnp.float32)
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
