"""Optimisation: AdamW with warmup + decay, clipping, a weight-decay mask and frozen parameters.

Trainable parameters live in one tree `{'model': dual-encoder params, 'loss': loss params}`.
Frozen parameters (by default nothing; `optim.freeze_word_embeddings` freezes the word-embedding
table, 96M of mE5-small's 118M parameters) are split off *before* differentiation: the step takes
the gradient of the trainable part only, so no gradient is computed for the frozen table (no
scatter-add into it), no optimizer state is allocated for it and no update touches it.
"""
from __future__ import annotations

import re
from typing import Callable

import jax.numpy as jnp
import optax
from flax import traverse_util

from hybrid_jax.config import SCHEDULES
from hybrid_jax.errors import InputError

NO_DECAY_LEAVES = ("bias", "scale")  # biases and LayerNorm scales


def _path_str(path) -> str:
    return "/".join(str(p) for p in path)


def frozen_predicate(optim_config) -> Callable[[tuple], bool]:
    """path (tuple of keys into the full params tree) -> whether that leaf is frozen."""
    pattern = optim_config.get("frozen_params", "") or ""
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as e:
        raise InputError(f"optim.frozen_params: invalid regular expression {pattern!r} ({e})")
    freeze_words = bool(optim_config.get("freeze_word_embeddings", False))

    def frozen(path) -> bool:
        if freeze_words and "word_embeddings" in path:
            return True
        return bool(regex is not None and regex.search(_path_str(path)))
    return frozen


def split_params(params: dict, frozen: Callable[[tuple], bool]) -> tuple[dict, dict]:
    """Full nested-dict params -> (trainable, frozen), two nested dicts covering disjoint leaves."""
    flat = traverse_util.flatten_dict(params, keep_empty_nodes=True)
    train = {k: v for k, v in flat.items() if not frozen(k)}
    fixed = {k: v for k, v in flat.items() if frozen(k)}
    return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(fixed)


def merge_params(trainable: dict, frozen: dict) -> dict:
    """Inverse of `split_params` (empty subtrees are dropped)."""
    flat = traverse_util.flatten_dict(trainable)
    flat.update(traverse_util.flatten_dict(frozen))
    return traverse_util.unflatten_dict(flat)


def decay_mask(params):
    """True where weight decay applies: not biases, LayerNorm scales or loss parameters."""
    flat = traverse_util.flatten_dict(params, keep_empty_nodes=True)
    return traverse_util.unflatten_dict(  # empty subtrees stay (the mask must match the tree)
        {k: v if v is traverse_util.empty_node else (k[-1] not in NO_DECAY_LEAVES and k[0] != "loss")
         for k, v in flat.items()})


def make_schedule(optim_config, num_steps: int) -> optax.Schedule:
    c = optim_config
    if c.schedule not in SCHEDULES:
        raise InputError(f"optim.schedule: {c.schedule!r} is not one of {', '.join(SCHEDULES)}")
    peak = float(c.learning_rate)
    warmup = int(min(c.warmup_steps, num_steps))
    end = peak * float(c.end_lr_factor)
    decay_steps = max(num_steps - warmup, 1)
    if c.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif c.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    else:
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=float(c.end_lr_factor))
    if warmup == 0:
        return after
    return optax.join_schedules([_warmup(peak, warmup, c.get("warmup_from_zero", True)), after],
                                [warmup])


def _warmup(peak: float, warmup: int, from_zero: bool) -> optax.Schedule:
    """The warm-up's learning rates at optimizer steps 0..warmup-1.  From zero: 0, peak/w, ...
    (optax's ramp; its first update is a no-op).  Not from zero: peak/w, 2 peak/w, ..., peak, so
    every step of the budget moves the model."""
    if from_zero:
        return optax.linear_schedule(0.0, peak, warmup)
    return lambda count: peak * jnp.minimum(count + 1, warmup) / warmup


def make_optimizer(optim_config, num_steps: int):
    """-> (optax transformation over the trainable tree, learning-rate schedule)."""
    c = optim_config
    schedule = make_schedule(c, num_steps)
    parts = []
    if c.max_grad_norm and c.max_grad_norm > 0:
        parts.append(optax.clip_by_global_norm(float(c.max_grad_norm)))
    parts.append(optax.adamw(schedule, b1=float(c.b1), b2=float(c.b2), eps=float(c.eps),
                             weight_decay=float(c.weight_decay), mask=decay_mask))
    return optax.chain(*parts), schedule
