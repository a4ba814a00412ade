"""The saved params of a training run, read-only: what 'ckpt:<workdir>[@step]' specs load.

On-disk layout (written during training by hybrid_jax/train/checkpoints.py):
  <workdir>/checkpoints/<step>/params   trainable params {'model': ..., 'loss': ...}
  <workdir>/frozen_params/              params that never train (e.g. the word-embedding table)
  <workdir>/best/<step>/params          the dev-selected step's trainable params
  <workdir>/best/<step>/meta.json       its step, score and metric (written after the params)
  <workdir>/config.json                 the run's configuration (model.spec names its start)
Only the `params` item is read: the optimizer and iterator state of a step are never touched.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from hybrid_jax.errors import InputError

CHECKPOINT_DIR = "checkpoints"
FROZEN_DIR = "frozen_params"
BEST_DIR = "best"
BEST = "best"  # the step of 'ckpt:<workdir>@best'


def parse(spec: str) -> tuple[str, Optional[int | str]]:
    """'ckpt:<workdir>[@step|@best]' -> (workdir, step, 'best', or None for the latest)."""
    ref = spec[len("ckpt:"):]
    workdir, _, step = ref.rpartition("@")
    if workdir and step.isdigit():
        return workdir, int(step)
    if workdir and step == BEST:
        return workdir, BEST
    return ref, None


def short_error(e: BaseException, limit: int = 300) -> str:
    detail = " ".join(str(e).split())
    return detail if len(detail) <= limit else detail[:limit] + "..."


@contextlib.contextmanager
def unreadable_is_input_error(directory: str, step):
    """Orbax/tensorstore/JSON errors while reading a step -> one InputError that names the step
    directory, says it was left as it is and how to go on."""
    try:
        yield
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax raises many types (ValueError, OSError, ...)
        raise InputError(
            f"checkpoint {os.path.join(directory, str(step))}: cannot be read "
            f"({type(e).__name__}: {short_error(e)}); it was left untouched -- move it away to "
            f"resume from an earlier step") from e


def saved_steps(workdir) -> list[int]:
    """The complete checkpoint steps of a run.  Orbax writes a step under a temporary name and
    renames it to the bare step number only when complete, so digit names are whole steps."""
    directory = os.path.join(os.path.abspath(os.fspath(workdir)), CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory)
                  if name.isdigit() and os.path.isdir(os.path.join(directory, name)))


def best_step(workdir) -> Optional[int]:
    """The dev-selected step of a run (None without selection): the step folder under best/
    whose meta.json, written last, exists."""
    directory = os.path.join(os.path.abspath(os.fspath(workdir)), BEST_DIR)
    if not os.path.isdir(directory):
        return None
    done = [int(n) for n in os.listdir(directory)
            if n.isdigit() and os.path.exists(os.path.join(directory, n, "meta.json"))]
    return max(done) if done else None


def read_run_config(workdir) -> dict:
    path = os.path.join(os.fspath(workdir), "config.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _restore_tree(path: str) -> Any:
    """An orbax StandardSave tree, onto this process's first device: the saved sharding names
    the training run's devices, which a reader usually does not have.  The item's handler is
    used directly: a step's other items (optimizer, iterator) are never opened."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    handler = ocp.StandardCheckpointHandler()
    try:
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              handler.metadata(epath.Path(path)).tree)
        return handler.restore(epath.Path(path), args=ocp.args.StandardRestore(target))
    finally:
        handler.close()


def _params_path(workdir: str, step: Optional[int | str]) -> str:
    """The `params` item of a saved step ('best': the dev-selected one)."""
    if step == BEST:
        best = best_step(workdir)
        if best is None:
            raise InputError(f"checkpoint {workdir}@best: the run kept no dev-selected step "
                             f"(trained without train.select, or before its first selection)")
        return os.path.join(workdir, BEST_DIR, str(best), "params")
    directory = os.path.join(workdir, CHECKPOINT_DIR)
    if not os.path.isdir(directory):
        raise InputError(f"checkpoint {workdir}: no {CHECKPOINT_DIR}/ directory (not a trained run?)")
    steps = saved_steps(workdir)
    if not steps:
        raise InputError(f"checkpoint {workdir}: no saved steps in {directory}")
    if step is None:
        step = steps[-1]
    elif int(step) not in steps:
        raise InputError(f"checkpoint {workdir}: no step {step} (saved steps: {steps})")
    return os.path.join(directory, str(int(step)), "params")


def restore_params(workdir, step: Optional[int | str] = None) -> tuple[Any, dict]:
    """Model params of a run (trained part merged with the frozen part) and its saved config.

    `step`: a saved step, 'best' (the dev-selected step) or None (the latest).
    Returns (dual-encoder params {'encoder': ...} or both towers, config dict from config.json).
    Raises InputError when the workdir has no checkpoint (or not the requested step).
    """
    workdir = os.path.abspath(os.fspath(workdir))
    path = _params_path(workdir, step)
    with unreadable_is_input_error(os.path.dirname(os.path.dirname(path)),
                                   os.path.basename(os.path.dirname(path))):
        trainable = _restore_tree(path)
    frozen = {}
    if os.path.exists(os.path.join(workdir, FROZEN_DIR)):
        with unreadable_is_input_error(workdir, FROZEN_DIR):
            frozen = _restore_tree(os.path.join(workdir, FROZEN_DIR))
    flat = traverse_util.flatten_dict(trainable)
    flat.update(traverse_util.flatten_dict(frozen))
    params = traverse_util.unflatten_dict(flat)
    return params["model"], read_run_config(workdir)


def read(spec: str) -> tuple[Any, dict, dict]:
    """'ckpt:' spec -> (dual-encoder params as numpy, the run's model config, the run config)."""
    workdir, step = parse(spec)
    if not os.path.isdir(workdir):
        raise InputError(f"model {spec}: {workdir} is not a run directory")
    params, run_config = restore_params(workdir, step)
    model_config = run_config.get("model") or {}
    if "spec" not in model_config:
        raise InputError(f"model {spec}: {workdir}/config.json does not say which model the run "
                         "started from (model.spec)")
    return jax.tree_util.tree_map(np.asarray, params), model_config, run_config
