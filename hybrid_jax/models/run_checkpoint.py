"""'ckpt:<workdir>[@step]' model specs: the params a training run saved, on the architecture and
tokenizer of the model it started from (recorded in the run's config.json)."""
from __future__ import annotations

import os

import jax
import numpy as np

from hybrid_jax.errors import InputError


def parse(spec: str) -> tuple[str, int | None]:
    ref = spec[len("ckpt:"):]
    workdir, _, step = ref.rpartition("@")
    if workdir and step.isdigit():
        return workdir, int(step)
    return ref, None


def load(spec: str):
    from hybrid_jax import checkpointing
    from hybrid_jax.models.pretrained import load_pretrained

    workdir, step = parse(spec)
    if not os.path.isdir(workdir):
        raise InputError(f"model {spec}: {workdir} is not a run directory")
    params, run_config = checkpointing.restore_params(workdir, step)
    model_config = run_config.get("model") or {}
    if "spec" not in model_config:
        raise InputError(f"model {spec}: {workdir}/config.json does not say which model the run "
                         "started from (model.spec)")
    base = load_pretrained(model_config["spec"],
                           compute_dtype=model_config.get("compute_dtype"))
    params = jax.tree_util.tree_map(np.asarray, params)
    base.name = spec
    if "encoder" in params:
        base.encoder_params, base.towers = params["encoder"], None
    else:
        base.encoder_params = params["query_encoder"]
        base.towers = {"query": params["query_encoder"], "passage": params["passage_encoder"]}
    return base
