"""A training run's set-up: the model, the data, the train state and the runner, resumed from the
workdir's latest checkpoint when there is one (else the pretrained weights named by
config.model.spec), held together in a `Run`."""
from __future__ import annotations

import dataclasses
import gc
import json
import os
import time
from typing import Any, Optional

import jax
import numpy as np

from hybrid_jax import config as schema
from hybrid_jax.data.training_batches import make_train_iterator
from hybrid_jax.errors import InputError
from hybrid_jax.models import lora
from hybrid_jax.models.dual_encoder import DualEncoder
from hybrid_jax.models.from_config import load_model
from hybrid_jax.models.run_checkpoint import saved_steps, step_meta
from hybrid_jax.train import (checkpoints, losses, memory_hooks, optim, runner as runner_lib,
                              selection, step)
from hybrid_jax.train.progress import log


@dataclasses.dataclass
class Run:
    """Everything a training run holds between steps."""
    config: Any
    workdir: str
    pretrained: Any
    runner: runner_lib.Runner
    state: Any                # in the runner's layout
    frozen: Any               # in the runner's layout
    frozen_host: Any
    checkpointer: checkpoints.Checkpointer
    iterator: Any
    start_step: int
    selector: Optional[selection.Selector] = None  # dev selection (train.select)


def save_config(config, workdir: str) -> None:
    """workdir/config.json; a different earlier config is kept as config.<n>.json."""
    path = os.path.join(workdir, "config.json")
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if old == text:
            return
        n = 1
        while os.path.exists(os.path.join(workdir, f"config.{n}.json")):
            n += 1
        os.replace(path, os.path.join(workdir, f"config.{n}.json"))
    with open(path, "w") as f:
        f.write(text)


# What made a checkpoint's iterator state and params: a resume under other values would go on
# with another data stream (or another model) than the one the run trained on.
RESUME_KEYS = ("seed", "model.spec", "model.tied", "model.reinit_top_layers", "model.lora_rank",
               "model.lora_alpha", "model.lora_targets", "data.synthetic", "data.format",
               "data.dataset_dir", "data.tfds_name", "data.train_fold", "data.split_seed",
               "data.split_sizes", "data.languages", "data.sampling", "data.alpha",
               "data.mono_schedule", "data.cross_pairing", "data.language_weights",
               "data.global_batch_size", "data.hard_negatives", "data.negative_source",
               "data.mining_model", "data.seed")


def resume_settings(config) -> dict:
    """{key: value} of RESUME_KEYS, JSON-shaped (tuples as lists), as saved with each step."""
    out = {}
    for key in RESUME_KEYS:
        node = config
        for part in key.split("."):
            node = node[part]
        out[key] = list(node) if isinstance(node, (tuple, list)) else node
    return json.loads(json.dumps(out))


def check_resume(config, workdir: str) -> None:
    """Stops a resume whose settings differ from those saved with the latest step, before
    anything is loaded or written.  Steps saved before settings were recorded pass."""
    steps = saved_steps(workdir)
    if not steps:
        return
    saved = step_meta(workdir, steps[-1]).get("run")
    if saved is None:
        return
    now = resume_settings(config)
    differ = [k for k in RESUME_KEYS if k in saved and saved[k] != now[k]]
    if differ:
        pairs = "; ".join(f"{k}: saved {saved[k]!r}, now {now[k]!r}" for k in differ)
        raise InputError(
            f"workdir {workdir}: cannot resume step {steps[-1]} with another config ({pairs}) "
            "-- use the run's settings (config.json) or a new workdir")


def _load_model(config):
    t = time.time()
    pretrained = load_model(config)
    log(f"model {config.model.spec}: {pretrained.config.num_layers} layers, hidden "
        f"{pretrained.config.hidden_size} ({time.time() - t:.1f}s to load)")
    return pretrained


def _resume(checkpointer, host_state, iterator, workdir: str, frozen, adapters_only: bool):
    """(state, start step): the latest checkpoint's, else the initial state, whose frozen params
    are written once now (a LoRA run: their digests only; its base is its model.spec)."""
    latest = checkpointer.latest_step()
    if latest is None:  # every process: an orbax save is collective (process 0 writes the arrays)
        checkpoints.save_frozen(workdir, frozen, arrays=not adapters_only)
        return host_state, 0
    host_state, data_state = checkpointer.restore(latest, host_state)
    if data_state is not None:
        iterator.set_state(data_state)
    log(f"resuming from {checkpointer.directory}/{latest}")
    return host_state, int(host_state.step)


def setup(config, workdir: str, pretrained=None) -> Run:
    devices = schema.devices(config)
    check_resume(config, workdir)
    if pretrained is None:
        pretrained = _load_model(config)
    pretrained = lora.for_training(pretrained, config.model, int(config.seed))
    adapters_only = bool(pretrained.config.lora_rank)
    tied = bool(config.model.tied)
    module = DualEncoder(pretrained.config, tied=tied)
    tx, schedule = optim.make_optimizer(config.optim, int(config.train.num_steps))
    full = {"model": pretrained.dual_params(tied), "loss": losses.init_loss_params(config.loss)}
    full = jax.tree.map(np.asarray, full)
    trainable, frozen = optim.split_params(full, frozen_predicate(config, adapters_only))
    host_state = step.create_state(trainable, tx)

    iterator = make_train_iterator(config, pretrained, workdir)  # bad data stops before any write
    selector = (selection.Selector(config, pretrained, workdir)
                if config.train.select != "none" else None)
    checkpointer = checkpoints.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                            async_save=bool(config.train.async_checkpointing),
                                            run=resume_settings(config))
    host_state, start_step = _resume(checkpointer, host_state, iterator, workdir, frozen,
                                     adapters_only)

    runner = runner_lib.make_runner(
        config.parallelism, module, tx, schedule, config.loss, devices=devices,
        seed=int(config.seed), prng_impl=config.train.prng_impl,
        grad_accum_steps=int(config.optim.grad_accum_steps))
    state = runner.replicate(host_state)
    del host_state
    # Loading and dequantising the weights, tokenizing and mining leave freed memory resident:
    # handed back here (demo: 1.88 GB resident after set-up -> 1.35-1.46 GB; the first step's
    # peak did not move measurably, the compiler and the step reuse such memory anyway).
    gc.collect()
    memory_hooks.release_free_memory()
    # The run's weights now live in `state` and `frozen`: it keeps the model without its host copy.
    return Run(config, workdir, pretrained.without_weights(), runner, state,
               runner.place_read_only(frozen), frozen, checkpointer, iterator, start_step, selector)


def frozen_predicate(config, adapters_only: bool):
    """The optimizer's frozen params; with LoRA adapters every other model weight as well (the
    loss's own params, e.g. a learnable temperature, still train)."""
    frozen = optim.frozen_predicate(config.optim)
    if not adapters_only:
        return frozen
    return lambda path: frozen(path) or (path[0] == "model" and not lora.is_adapter(path))


def model_params(run: Run, trainable=None):
    """Current dual-encoder params (trained + frozen) as one tree; `trainable`: the run's
    trainable params already taken out of the runner's layout."""
    if trainable is None:
        trainable = run.runner.unreplicate(run.state.params)
    trainable = jax.device_get(trainable)
    # On device once, so evaluation's jitted encoder does not re-send the table every batch.
    return jax.device_put(optim.merge_params(trainable, run.frozen_host)["model"])


def current_bundle(run: Run, name: Optional[str] = None, trainable=None):
    """The run's current params as an encoding bundle (named `name` when given)."""
    bundle = run.pretrained.bundle(tied=bool(run.config.model.tied),
                                   params=model_params(run, trainable))
    if name is not None:
        bundle.name = name
    return bundle
