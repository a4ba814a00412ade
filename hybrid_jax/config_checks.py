"""Checks that stop a run before anything is loaded or written: the workdir, the devices, and
impossible config values, each with one message naming the key."""
from __future__ import annotations

import os
import re
from typing import Optional

import jax

from hybrid_jax import optim, selection, steps
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation.specs import check_spec

PRNG_IMPLS = ("rbg", "unsafe_rbg", "threefry2x32")


def devices(config) -> list:
    """The local devices a run uses (config.num_devices; 0: all)."""
    available = jax.local_devices()
    n = int(config.num_devices)
    if n < 0 or n > len(available):
        raise InputError(f"num_devices: {n} requested but {len(available)} local devices exist")
    return available[:n] if n else available


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/")  # a scheme of 2+ letters: not a drive letter


def check_workdir(workdir) -> str:
    if not workdir:
        raise InputError("--workdir is required")
    workdir = os.fspath(workdir)
    url = _URL.match(workdir)  # gs://b/x, or gs:/b/x once a pathlib.Path has collapsed the '//'
    if url:
        # Everything under the workdir is written with plain file I/O: a URL would silently
        # become a local directory named "gs:" (or "s3:") on each host.
        scheme, path = url.group(1).lower(), workdir[url.end():].strip("/")
        example = f" (here --workdir /gcs/{path})" if scheme == "gs" and path else ""
        raise InputError(
            f"workdir {workdir}: a URL, not a directory: mount the bucket on every host (for "
            f"gs://, Cloud Storage FUSE: gcsfuse --implicit-dirs BUCKET /gcs/BUCKET) and pass the "
            f"mount path{example}; launch/tpu.sh run does both for a gs:// workdir")
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise InputError(f"workdir {workdir}: exists and is not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise InputError(f"workdir {workdir}: cannot create it ({e.strerror})") from e
    if not os.path.isdir(workdir):
        raise InputError(f"workdir {workdir}: exists and is not a directory")
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise InputError(f"workdir {workdir}: not writable")
    probe = os.path.join(workdir, f".write_test.{os.getpid()}")
    try:  # os.access says yes to root on a read-only file system: really write
        with open(probe, "w") as f:
            f.write("x")
        os.remove(probe)
    except OSError as e:
        raise InputError(f"workdir {workdir}: not writable ({e.strerror})") from e
    return workdir


def validate_config(config, num_devices: Optional[int] = None) -> None:
    """Impossible values stop the run before anything is loaded, with one message naming the key."""
    def require(ok, key, message):
        if not ok:
            raise InputError(f"{key}: {message}")

    require(config.parallelism in steps.PARALLELISMS, "parallelism",
            f"{config.parallelism!r} is not one of {', '.join(steps.PARALLELISMS)}")
    n = num_devices if num_devices is not None else len(devices(config))
    batch = int(config.data.global_batch_size)
    accum = int(config.optim.grad_accum_steps)
    require(batch >= 1, "data.global_batch_size", f"must be >= 1, got {batch}")
    require(accum >= 1, "optim.grad_accum_steps", f"must be >= 1, got {accum}")
    procs = jax.process_count()
    require(batch % (procs * n * accum) == 0, "data.global_batch_size",
            f"{batch} is not divisible by {procs * n} devices x {accum} accumulation steps")
    require(0.0 <= float(config.data.alpha) <= 1.0, "data.alpha",
            f"must lie in [0, 1], got {config.data.alpha}")
    require(int(config.train.num_steps) >= 1, "train.num_steps",
            f"must be >= 1, got {config.train.num_steps}")
    require(int(config.train.log_every) >= 1, "train.log_every",
            f"must be >= 1, got {config.train.log_every}")
    require(int(config.train.checkpoint_every) >= 0, "train.checkpoint_every", "must be >= 0")
    require(int(config.train.keep_checkpoints) >= 1, "train.keep_checkpoints", "must be >= 1")
    require(config.train.prng_impl in PRNG_IMPLS, "train.prng_impl",
            f"{config.train.prng_impl!r} is not one of {', '.join(PRNG_IMPLS)}")
    require(float(config.loss.temperature) > 0, "loss.temperature",
            f"must be > 0, got {config.loss.temperature}")
    require(int(config.data.hard_negatives) >= 0, "data.hard_negatives", "must be >= 0")
    require(float(config.optim.learning_rate) >= 0, "optim.learning_rate", "must be >= 0")
    require(int(config.optim.warmup_steps) >= 0, "optim.warmup_steps", "must be >= 0")
    require(int(config.eval.every_steps) >= 0, "eval.every_steps", "must be >= 0")
    require(float(config.model.dropout) < 1.0, "model.dropout", "must be < 1")
    for spec in config.eval.datasets:
        check_spec(spec)
    names = {str(dict(d).get("name")) for d in config.eval.datasets}
    unknown = sorted(set(map(str, config.eval.get("every_datasets") or ())) - names)
    require(not unknown, "eval.every_datasets", f"{unknown} not in eval.datasets ({sorted(names)})")
    selection.check_config(config)
    optim.make_schedule(config.optim, int(config.train.num_steps))  # schedule name
    optim.frozen_predicate(config.optim)                            # frozen_params regex


def check_first_batch(batch: dict, config) -> None:
    """The iterator gives what the step reads, in the configured shapes (checked once)."""
    missing = [k for k in steps.MODEL_INPUTS if k not in batch]
    if missing:
        raise InputError(f"data: the training iterator gives no {missing}")
    b = batch["query_ids"].shape[0]
    expected = int(config.data.global_batch_size) // jax.process_count()
    if b != expected:
        raise InputError(f"data: batch of {b} examples, expected {expected} "
                         f"(data.global_batch_size / processes)")
    hard = int(config.data.hard_negatives)
    if hard > 0:
        missing = [k for k in steps.NEGATIVE_INPUTS if k not in batch]
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
