"""The per-device train step, written once, for the two ways of running it on several devices
(runner.py).

`make_train_step` returns `step(state, frozen, batch) -> (state, metrics)` for *one device's
slice* of the global batch.  It talks to the other devices only through collectives on
`losses.AXIS_NAME`, so the same function runs under

* `jax.pmap` (`config.parallelism='pmap'`): state and frozen params carry a leading device axis;
  gradients of the local loss are averaged with `pmean` (the transpose of `all_gather` already
  routes every device's loss back to the passages it encoded);
* `jax.jit(jax.shard_map(...))` over a 1-D Mesh (`'shard_map'`): state is replicated (invariant);
  differentiating the *pmean'd* loss with respect to invariant params already sums the per-device
  contributions, so gradients must NOT be reduced again (reducing the local loss's gradient
  instead would give n_devices x the gradient -- the trap pinned in tests/test_steps.py).

Both equal one device on the same global batch.  The state is donated; dropout keys come from
`fold_in(fold_in(key(seed), step), device_index)` (nothing to carry, resume-safe); metrics stay on
device.  With `grad_accum_steps > 1` the local batch is processed GradCache-style: embeddings of all
micro-batches are computed without gradients, the loss and its gradient with respect to the
embeddings are computed on the full global batch (so negatives are unchanged), then each
micro-batch is re-encoded (same dropout key) and back-propagated with those embedding gradients.
The gradient is exactly the full-batch one while activations are held for one micro-batch only.
Hard negatives (`NEGATIVE_INPUTS`) go through the passage tower with their pairs' micro-batch; their
validity mask is not encoded, so the loss takes it whole, and so are the teacher scores of
distillation (`DISTILL_INPUTS`, loss.distill != 'none'): total = contrastive + loss.distill_weight *
distillation (losses.distill_loss).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import optax

from hybrid_jax.errors import InputError
from hybrid_jax.models.dual_encoder import DualEncoder
from hybrid_jax.train import losses, optim
from hybrid_jax.train.losses import AXIS_NAME

MODEL_INPUTS = ("query_ids", "query_mask", "passage_ids", "passage_mask")
# Optional hard negatives: ids and token mask [b, H, Lp], validity [b, H] (0 = padding).
NEGATIVE_INPUTS = ("negative_ids", "negative_mask", "negative_valid")
# Teacher scores (loss.distill): of each (query, positive) [b] and (query, hard negative) [b, H].
DISTILL_INPUTS = ("positive_score", "negative_score")


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray     # int32 scalar: number of updates applied
    params: Any           # trainable tree {'model': ..., 'loss': ...}
    opt_state: Any


def create_state(trainable: dict, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=trainable, opt_state=tx.init(trainable))


def _global_norm(tree):
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


@dataclasses.dataclass(frozen=True)
class _StepSpec:
    """What the pieces of a train step share (static under jit)."""
    module: DualEncoder
    loss_config: Any
    axis_name: Optional[str]
    deterministic: bool
    grad_accum_steps: int


def _embed(spec: _StepSpec, trainable_model, frozen_model, inputs, rng) -> dict:
    params = optim.merge_params(trainable_model, frozen_model)
    variables = {"params": params}
    rngs = None if spec.deterministic else {"dropout": rng}
    q, p = spec.module.apply(variables, *(inputs[name] for name in MODEL_INPUTS),
                             deterministic=spec.deterministic, rngs=rngs)
    out = {"q": q, "p": p}
    if "negative_ids" in inputs:
        ids, mask = inputs["negative_ids"], inputs["negative_mask"]
        rngs = None if spec.deterministic else {"dropout": jax.random.fold_in(rng, 1 << 20)}
        out["n"] = spec.module.apply(variables, ids.reshape(-1, ids.shape[-1]),
                                     mask.reshape(-1, mask.shape[-1]), "passage",
                                     spec.deterministic, rngs=rngs, method=DualEncoder.encode)
    return out


def _loss_of_embeddings(spec: _StepSpec, emb: dict, loss_params, inputs: dict):
    """The loss of the embeddings `emb`; `inputs` gives what is not encoded (negative validity,
    teacher scores)."""
    c = spec.loss_config
    scale = losses.logit_scale(loss_params, c)
    negative_valid = inputs.get("negative_valid")
    local, metrics = losses.contrastive_loss(emb["q"], emb["p"], scale=scale,
                                             axis_name=spec.axis_name, symmetric=c.symmetric,
                                             negative_emb=emb.get("n"),
                                             negative_valid=negative_valid)
    if c.get("distill", "none") != "none":
        distill = losses.distill_loss(
            emb["q"], emb["p"], emb["n"], inputs["positive_score"], inputs["negative_score"],
            scale=scale, kind=c.distill, temperature=c.distill_temperature,
            negative_valid=negative_valid, axis_name=spec.axis_name)
        metrics.update(contrastive_loss=local, distill_loss=distill)
        local = local + c.distill_weight * distill
    total = jax.lax.pmean(local, spec.axis_name) if spec.axis_name else local
    metrics["logit_scale"] = scale
    return total, metrics


def _grads_direct(spec: _StepSpec, params, frozen, inputs, rng):
    def loss_fn(p):
        emb = _embed(spec, p["model"], frozen.get("model", {}), inputs, rng)
        return _loss_of_embeddings(spec, emb, p.get("loss", {}), inputs)
    return jax.value_and_grad(loss_fn, has_aux=True)(params)


def _grads_cached(spec: _StepSpec, params, frozen, inputs, rng):
    """GradCache: exact full-batch gradient, activations of one micro-batch at a time.  The
    embeddings of all micro-batches are computed without gradients, the loss gradient with
    respect to them is taken once, then each micro-batch is re-encoded and back-propagated."""
    k = spec.grad_accum_steps
    frozen_model = frozen.get("model", {})
    b = inputs["query_ids"].shape[0]
    chunks = jax.tree.map(lambda x: x.reshape((k, b // k) + x.shape[1:]), inputs)
    keys = jnp.arange(k)

    def embed_chunk(model_params, chunk, i):
        return _embed(spec, model_params, frozen_model, chunk, jax.random.fold_in(rng, i))

    frozen_params = jax.lax.stop_gradient(params["model"])
    emb_chunks = jax.lax.map(lambda xs: embed_chunk(frozen_params, *xs), (chunks, keys))
    # Chunks are contiguous pair ranges, so the concatenated embeddings (negatives pair-major
    # [b * H, D]) are in the order of the unchunked batch and its negative_valid.
    emb = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), emb_chunks)
    (loss, metrics), (emb_grad, loss_grad) = jax.value_and_grad(
        lambda e, lp: _loss_of_embeddings(spec, e, lp, inputs),
        argnums=(0, 1), has_aux=True)(emb, params.get("loss", {}))
    emb_grad_chunks = jax.tree.map(lambda x: x.reshape((k, -1) + x.shape[1:]), emb_grad)

    def body(acc, xs):
        chunk, i, cotangent = xs
        _, vjp = jax.vjp(lambda mp: embed_chunk(mp, chunk, i), params["model"])
        (g,) = vjp(cotangent)
        return jax.tree.map(jnp.add, acc, g), None

    zeros = jax.tree.map(jnp.zeros_like, params["model"])
    model_grad, _ = jax.lax.scan(body, zeros, (chunks, keys, emb_grad_chunks))
    grads = dict(params)
    grads["model"] = model_grad
    if "loss" in params:
        grads["loss"] = loss_grad
    return (loss, metrics), grads


def make_train_step(module: DualEncoder, tx: optax.GradientTransformation,
                    schedule: Callable, loss_config, *, axis_name: Optional[str] = AXIS_NAME,
                    reduce_grads: bool = True, seed: int = 0, prng_impl: Optional[str] = None,
                    grad_accum_steps: int = 1, deterministic: bool = False):
    """Per-device train step.  `reduce_grads`: pmean the gradients (pmap: True, shard_map: False)."""
    spec = _StepSpec(module, loss_config, axis_name, deterministic, int(grad_accum_steps))
    compute_grads = _grads_direct if spec.grad_accum_steps <= 1 else _grads_cached

    def train_step(state: TrainState, frozen: dict, batch: dict):
        rng = jax.random.fold_in(jax.random.key(seed, impl=prng_impl), state.step)
        if axis_name:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        inputs = {name: batch[name] for name in MODEL_INPUTS + NEGATIVE_INPUTS + DISTILL_INPUTS
                  if name in batch}
        (loss, metrics), grads = compute_grads(spec, state.params, frozen, inputs, rng)
        if axis_name:
            metrics = jax.lax.pmean(metrics, axis_name)
            if reduce_grads:
                grads = jax.lax.pmean(grads, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=_global_norm(grads),
                       param_norm=_global_norm(params), lr=schedule(state.step))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def check_first_batch(batch: dict, config) -> None:
    """The iterator gives what the step reads, in the configured shapes (checked once)."""
    missing = [k for k in MODEL_INPUTS if k not in batch]
    if missing:
        raise InputError(f"data: the training iterator gives no {missing}")
    b = batch["query_ids"].shape[0]
    expected = int(config.data.global_batch_size) // jax.process_count()
    if b != expected:
        raise InputError(f"data: batch of {b} examples, expected {expected} "
                         f"(data.global_batch_size / processes)")
    hard = int(config.data.hard_negatives)
    if hard > 0:
        missing = [k for k in NEGATIVE_INPUTS if k not in batch]
        if missing:
            raise InputError(f"data.hard_negatives={hard} but the training iterator gives no "
                             f"{missing}")
        if (batch["negative_ids"].shape[:2] != (b, hard)
                or batch["negative_valid"].shape != (b, hard)):
            raise InputError(f"data: negatives of shape {batch['negative_ids'].shape} / "
                             f"{batch['negative_valid'].shape}, expected ({b}, {hard}, ...) / "
                             f"({b}, {hard})")
    elif "negative_ids" in batch:
        raise InputError("data: the training iterator gives hard negatives but "
                         "data.hard_negatives is 0")
    _check_scores(batch, config, b, hard)


def _check_scores(batch: dict, config, b: int, hard: int) -> None:
    if config.loss.distill == "none":
        return
    missing = [k for k in DISTILL_INPUTS if k not in batch]
    if missing:
        raise InputError(f"loss.distill={config.loss.distill!r} but the training iterator gives "
                         f"no {missing}")
    if batch["positive_score"].shape != (b,) or batch["negative_score"].shape != (b, hard):
        raise InputError(f"data: teacher scores of shape {batch['positive_score'].shape} / "
                         f"{batch['negative_score'].shape}, expected ({b},) / ({b}, {hard})")
