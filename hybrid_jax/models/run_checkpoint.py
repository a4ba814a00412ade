"""The saved params of a training run, read-only: what 'ckpt:<workdir>[@step]' specs load.

On-disk layout (written during training by hybrid_jax/train/checkpoints.py):
  <workdir>/checkpoints/<step>/params   trainable params {'model': ..., 'loss': ...}
  <workdir>/frozen_params/              params that never train (e.g. the word-embedding table)
  <workdir>/best/<step>/params          the dev-selected step's trainable params
  <workdir>/best/<step>/meta.json       its step, score and metric (written after the params)
  <workdir>/best/<step>/params.sha256.json   SHA-256 of each array of those params
  <workdir>/frozen_params.sha256.json   the same for the frozen params (a step's are in its meta)
A LoRA run (model.lora_rank > 0) saves its adapters alone and no frozen_params/: its base is
loaded again from its model.spec and checked against those digests (models/lora.py).
  <workdir>/config.json                 the run's configuration (model.spec names its start)
Only the `params` item is read: the optimizer and iterator state of a step are never touched.
Read arrays are checked against their digests (`verify`) unless HYBRID_JAX_VERIFY_CHECKPOINTS=off.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
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
FROZEN_DIGESTS = "frozen_params.sha256.json"  # beside frozen_params/: orbax owns that folder
BEST_DIGESTS = "params.sha256.json"  # in best/<step>/, beside meta.json
# 'off' skips digest verification on load (for users who accept the risk of a damaged file)
VERIFY_ENV = "HYBRID_JAX_VERIFY_CHECKPOINTS"


def _key_name(key) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def flat_arrays(tree) -> dict:
    """{'a/b/c': numpy array} for every leaf of a tree."""
    return {"/".join(_key_name(k) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def digests(tree) -> dict:
    """{'a/b/c': sha256 of the array's bytes} for every array of a tree (saved with each step;
    sha256 runs at about 2 GB/s on one core)."""
    return {name: hashlib.sha256(np.ascontiguousarray(a).reshape(-1).view(np.uint8)).hexdigest()
            for name, a in flat_arrays(tree).items()}


def verification_enabled() -> bool:
    return os.environ.get(VERIFY_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


def verify(tree, saved: Optional[dict], where: str, fallback: str, item: str = "params") -> None:
    """Compares a restored tree with the digests saved with it; a mismatch raises one InputError
    naming `where`, the array (`item`/path) and `fallback` (what to do).  No digests (a checkpoint
    written before they were recorded): one logged note, and the tree is used as it is."""
    if not verification_enabled():
        return
    if saved is None:
        logging.warning("checkpoint %s: %s recorded no digests (written by an older version): "
                        "loaded without verification", where, item)
        return
    for name, digest in digests(tree).items():
        if saved.get(name) != digest:
            raise InputError(
                f"checkpoint {where}: array {item}/{name} does not match the digest saved with "
                f"it (the file changed on disk after it was written); it was left untouched -- "
                f"{fallback} (or set {VERIFY_ENV}=off to load it anyway)")


def step_meta(workdir, step: int) -> dict:
    """The JSON `meta` item of a saved step ({'step', 'run', 'digests'}; older runs: {'step'})."""
    path = os.path.join(os.path.abspath(os.fspath(workdir)), CHECKPOINT_DIR, str(int(step)),
                        "meta", "metadata")
    with unreadable_is_input_error(os.path.dirname(os.path.dirname(os.path.dirname(path))),
                                   step):
        with open(path) as f:
            return json.load(f)


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


def _saved_digests(step_dir: str) -> Optional[dict]:
    """The params digests saved with a step folder (checkpoints/<n>/ or best/<n>/)."""
    if os.path.basename(os.path.dirname(step_dir)) == BEST_DIR:
        path = os.path.join(step_dir, BEST_DIGESTS)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)
    meta = step_meta(os.path.dirname(os.path.dirname(step_dir)), int(os.path.basename(step_dir)))
    return (meta.get("digests") or {}).get("params")


def read_frozen_digests(workdir) -> Optional[dict]:
    path = os.path.join(os.fspath(workdir), FROZEN_DIGESTS)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def restore_params(workdir, step: Optional[int | str] = None) -> tuple[Any, dict]:
    """Model params of a run (trained part merged with the frozen part) and its saved config.

    `step`: a saved step, 'best' (the dev-selected step) or None (the latest).
    Returns (dual-encoder params {'encoder': ...} or both towers, config dict from config.json).
    Raises InputError when the workdir has no checkpoint (or not the requested step).
    """
    workdir = os.path.abspath(os.fspath(workdir))
    trainable = restore_trainable(workdir, step)
    frozen = {}
    if os.path.exists(os.path.join(workdir, FROZEN_DIR)):
        with unreadable_is_input_error(workdir, FROZEN_DIR):
            frozen = _restore_tree(os.path.join(workdir, FROZEN_DIR))
        verify(frozen, read_frozen_digests(workdir), workdir,
               "restore frozen_params/ from a copy of the run (it is written once, at step 0)",
               item=FROZEN_DIR)
    flat = traverse_util.flatten_dict(trainable)
    flat.update(traverse_util.flatten_dict(frozen))
    params = traverse_util.unflatten_dict(flat)
    return params["model"], read_run_config(workdir)


def restore_trainable(workdir, step: Optional[int | str] = None) -> Any:
    """The trained part of a step's params alone (a LoRA run's: its adapters), checked against
    its digests; `step` as in restore_params."""
    workdir = os.path.abspath(os.fspath(workdir))
    path = _params_path(workdir, step)
    step_dir = os.path.dirname(path)
    with unreadable_is_input_error(os.path.dirname(step_dir), os.path.basename(step_dir)):
        trainable = _restore_tree(path)
    fallback = (f"load an earlier step with ckpt:{workdir}@<step> (saved steps: "
                f"{saved_steps(workdir)})")
    verify(trainable, _saved_digests(step_dir), step_dir, fallback)
    return trainable


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
