"""LoRA adapters on the encoder's projections: adding them for training, merging them for export,
and putting a run's saved adapters back onto the model it started from.

A targeted projection (models/config.py LORA_TARGETS; encoder.Dense) computes
    y = x @ kernel + (alpha / r) * dropout(x) @ lora_a @ lora_b + bias
with lora_a [in, r] drawn like a torch Linear's weight (uniform within 1/sqrt(in)) and lora_b
[r, out] zero, so a fresh adapter leaves the model's output exactly as it was.  A training run
with `model.lora_rank > 0` trains the adapters (and the loss's own params) only: the base weights
are frozen (train/run_setup.py), its checkpoints hold the adapters alone, and `ckpt:` loads the
base again from the run's model.spec (checked against the digests recorded at step 0).  Merged,
kernel + (alpha / r) * lora_a @ lora_b is a plain encoder that needs nothing of ours.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from hybrid_jax.errors import InputError
from hybrid_jax.models import run_checkpoint
from hybrid_jax.models.config import LORA_TARGETS, EncoderConfig, check_lora

ADAPTER_LEAVES = ("lora_a", "lora_b")
# Where each target sits in a layer's params (encoder.py: SelfAttention and Layer).
TARGET_PATHS = {"query": ("attention", "query"), "key": ("attention", "key"),
                "value": ("attention", "value"), "attention_output": ("attention", "output"),
                "intermediate": ("intermediate",), "output": ("output",)}
# torch.nn.Linear's default weight init (kaiming-uniform, a=sqrt(5)): U(-1/sqrt(in), 1/sqrt(in)),
# the usual choice for LoRA's A (the `in` axis of an [in, r] matrix is its fan-in).
init_a = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def is_adapter(path: tuple) -> bool:
    """Whether a params path (tuple of keys) names an adapter matrix."""
    return bool(path) and path[-1] in ADAPTER_LEAVES


def settings(model_section) -> dict:
    """The EncoderConfig LoRA fields of a run's `model` config section (a ConfigDict, or the
    dict of a saved config.json; absent keys, e.g. of runs from before LoRA, mean off)."""
    get = model_section.get
    out = dict(lora_rank=get("lora_rank", 0), lora_alpha=get("lora_alpha", 16.0),
               lora_targets=get("lora_targets", LORA_TARGETS),
               lora_dropout=get("lora_dropout", 0.0))
    check_lora(*out.values())
    out["lora_targets"] = tuple(out["lora_targets"])  # a JSON list; the module's config hashes
    return out


def add_adapters(encoder_params: dict, config, key) -> dict:
    """One encoder's params with fresh adapters on every target `config` names (the input tree
    is left as it is)."""
    flat = traverse_util.flatten_dict(encoder_params)
    for i in range(config.num_layers):
        for j, target in enumerate(config.lora_targets):
            path = (f"layer_{i}",) + TARGET_PATHS[target]
            n_in, n_out = np.shape(flat[path + ("kernel",)])
            if config.lora_rank > min(n_in, n_out):
                raise InputError(f"model.lora_rank: {config.lora_rank} exceeds the {n_in} x "
                                 f"{n_out} projection '{target}' it adapts")
            a = init_a(jax.random.fold_in(key, i * len(LORA_TARGETS) + j),
                       (n_in, config.lora_rank), np.float32)
            flat[path + ("lora_a",)] = np.asarray(a)
            flat[path + ("lora_b",)] = np.zeros((config.lora_rank, n_out), np.float32)
    return traverse_util.unflatten_dict(flat)


def merge_tree(params: dict, scale: float) -> dict:
    """Any params tree with adapters -> the same tree with each kernel + scale * lora_a @ lora_b
    and no adapters.  Summed in float64 and rounded once, so a merge gives the same bits again
    (the run's base digests are checked against a merge recomputed at load time)."""
    flat = traverse_util.flatten_dict(params)
    out = {k: v for k, v in flat.items() if not is_adapter(k)}
    for k in flat:
        if k[-1] == "lora_a":
            a = np.asarray(flat[k], np.float64)
            b = np.asarray(flat[k[:-1] + ("lora_b",)], np.float64)
            kernel = k[:-1] + ("kernel",)
            out[kernel] = (np.asarray(out[kernel], np.float64) + scale * (a @ b)).astype(
                np.float32)
    return traverse_util.unflatten_dict(out)


# A merged model's config: every LoRA field at its default (off), so it equals its base's.
_OFF = {f.name: f.default for f in dataclasses.fields(EncoderConfig) if f.name.startswith("lora_")}


def merged(pretrained):
    """A `models.pretrained.Pretrained` with its adapters merged into its kernels (itself when
    it has none): what export writes and what a later run starts from."""
    config = pretrained.config
    if not config.lora_rank:
        return pretrained
    scale = config.lora_scale
    towers = pretrained.towers
    if towers:
        towers = {role: merge_tree(p, scale) for role, p in towers.items()}
    encoder = (towers["query"] if towers else
               None if pretrained.encoder_params is None else
               merge_tree(pretrained.encoder_params, scale))
    return dataclasses.replace(pretrained, config=config.replace(**_OFF),
                               encoder_params=encoder, towers=towers)


def for_training(pretrained, model_section, seed: int):
    """The model a run trains: adapters it carries (a `ckpt:` of a LoRA run) merged, then fresh
    adapters when `model_section.lora_rank > 0` (itself when neither applies)."""
    lora = settings(model_section)
    if not pretrained.config.lora_rank and not lora["lora_rank"]:
        return pretrained
    base = merged(pretrained)
    if not lora["lora_rank"]:
        return base
    config = base.config.replace(**lora)
    key = jax.random.fold_in(jax.random.key(seed), 0x10AA)  # apart from the run's other streams
    towers = base.towers
    if towers:
        towers = {role: add_adapters(p, config, jax.random.fold_in(key, i))
                  for i, (role, p) in enumerate(sorted(towers.items()))}
    encoder = towers["query"] if towers else add_adapters(base.encoder_params, config, key)
    return dataclasses.replace(base, config=config, encoder_params=encoder, towers=towers)


def onto_base(base, adapters: dict, model_section: dict, workdir: str):
    """A LoRA run's saved adapters (dual-encoder tree) on the model its model.spec loads again
    -> (the Pretrained with the run's LoRA config, the full dual-encoder params).  The base must
    be the one the run trained on: its digests (frozen_params.sha256.json) are compared."""
    base = merged(base)
    tied = "encoder" in adapters
    base_params = base.dual_params(tied)
    saved = run_checkpoint.read_frozen_digests(workdir)
    run_checkpoint.verify(
        {"model": base_params}, saved, workdir,
        f"the run's adapters fit only the weights its model.spec "
        f"({model_section.get('spec')}) named when it trained; restore those weights",
        item="base model")
    flat = traverse_util.flatten_dict(base_params)
    flat.update(traverse_util.flatten_dict(adapters))
    params = traverse_util.unflatten_dict(flat)
    config = base.config.replace(**settings(model_section))
    return dataclasses.replace(base, config=config), params

