"""What a training run writes (orbax) and reads back to resume: each saved step (train state and
data-iterator state), the frozen params, and the dev-selected best step.

Layout under the workdir:
  checkpoints/<step>/params      trainable params {'model': ..., 'loss': ...}   (StandardSave)
  checkpoints/<step>/opt_state   optimizer state                              (StandardSave)
  checkpoints/<step>/data        data-iterator state                          (JsonSave)
  checkpoints/<step>/meta        {'step': n, 'run': the config that made the iterator state,
                                 'digests': {'params'|'opt_state': {array path: sha256}}}
  frozen_params/                 frozen params (e.g. the word-embedding table), written once:
                                 they never change, so they are not repeated in every step.
  frozen_params.sha256.json      their digests (a LoRA run: the digests alone; its frozen params
                                 are its base model, which model.spec loads again)
  best/<step>/params, meta.json  the dev-selected step's trainable params and its score
  best/<step>/params.sha256.json their digests (written before meta.json)
  config.json                    the run's configuration (written by run_setup.py)
The layout's names and the read-only loading of a run's params ('ckpt:' model specs) are
models/run_checkpoint.py: the model layer loads runs without depending on training.

Saving is asynchronous (the arrays are copied to host before `save` returns, writing continues in
the background); `wait()` blocks until the last save is durable.  Restarting a run resumes from the
latest step.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from hybrid_jax.models.run_checkpoint import (BEST_DIGESTS, BEST_DIR, CHECKPOINT_DIR,
                                              FROZEN_DIGESTS, FROZEN_DIR, best_step, digests,
                                              short_error, unreadable_is_input_error, verify)

ITEMS = ("params", "opt_state", "data", "meta")


def _encode_data_state(state) -> dict:
    if state is None:
        return {"kind": "none"}
    if isinstance(state, (bytes, bytearray)):
        return {"kind": "bytes", "value": base64.b64encode(bytes(state)).decode("ascii")}
    try:
        json.dumps(state)
    except TypeError as e:
        raise TypeError(f"data iterator state is neither bytes nor JSON-serialisable: {e}") from e
    return {"kind": "json", "value": state}


def _decode_data_state(d: dict):
    if d["kind"] == "none":
        return None
    if d["kind"] == "bytes":
        return base64.b64decode(d["value"])
    return d["value"]


class Checkpointer:
    """A CheckpointManager over `workdir/checkpoints` keeping the latest `keep` steps."""

    def __init__(self, workdir, keep: int = 2, async_save: bool = True, read_only: bool = False,
                 run: Optional[dict] = None):
        """`run`: the settings a resume must match (run_setup.resume_settings), saved per step."""
        self.workdir = os.path.abspath(os.fspath(workdir))
        self.run = run
        self.directory = os.path.join(self.workdir, CHECKPOINT_DIR)
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.LatestN(max(int(keep), 1)),
            enable_async_checkpointing=async_save, create=not read_only, read_only=read_only,
            # leftovers of a save cut short (kill -9, full disk): never a restorable step
            cleanup_tmp_directories=not read_only)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, data_state=None, force: bool = False) -> bool:
        """`state`: an unreplicated TrainState (arrays not shared with donated buffers)."""
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            opt_state=ocp.args.StandardSave(state.opt_state),
            data=ocp.args.JsonSave(_encode_data_state(data_state)),
            meta=ocp.args.JsonSave(self._meta(step, state)))
        with _write_failure(self.directory, step):
            return self.manager.save(int(step), args=args, force=force)

    def _meta(self, step: int, state) -> dict:
        meta = {"step": int(step), "digests": {"params": digests(state.params),
                                               "opt_state": digests(state.opt_state)}}
        if self.run is not None:
            meta["run"] = self.run
        return meta

    def restore(self, step: int, target_state):
        """-> (TrainState shaped like `target_state`, data-iterator state).  An unreadable
        checkpoint raises InputError naming it; nothing on disk is changed."""
        with unreadable_is_input_error(self.directory, step):
            restored = self.manager.restore(int(step), args=ocp.args.Composite(
                params=ocp.args.StandardRestore(target_state.params),
                opt_state=ocp.args.StandardRestore(target_state.opt_state),
                data=ocp.args.JsonRestore(),
                meta=ocp.args.JsonRestore()))
        self._verify(step, restored)
        state = target_state.replace(step=jax.numpy.asarray(restored.meta["step"], np.int32),
                                     params=restored.params, opt_state=restored.opt_state)
        return state, _decode_data_state(restored.data)

    def _verify(self, step: int, restored) -> None:
        saved = restored.meta.get("digests")
        where = os.path.join(self.directory, str(step))
        fallback = f"move {where} away to resume from an earlier step"
        for item in ("params", "opt_state"):
            verify(getattr(restored, item), None if saved is None else saved.get(item), where,
                   fallback, item=item)
            if saved is None:
                break  # one note for the step

    def wait(self) -> None:
        with _write_failure(self.directory, "(pending save)"):
            self.manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 - a failed save was already reported by wait()
            pass


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (full disk, lost permissions): earlier steps are intact
    (orbax writes into a temporary directory and renames it only when complete)."""


@contextlib.contextmanager
def _write_failure(directory: str, step):
    try:
        yield
    except CheckpointWriteError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore wrap OS errors in many types
        text, cause = str(e), e.__cause__ or e.__context__
        while cause is not None and len(text) < 100_000:
            text, cause = text + " " + str(cause), cause.__cause__ or cause.__context__
        # a failed async save surfaces at the next save or wait: name the step that failed
        failed = re.search(re.escape(directory) + r"/(\d+)(?:\.orbax-checkpoint-tmp|/|\b)", text)
        if failed:
            step = failed.group(1)
        reason = next((r for r in ("No space left on device", "Permission denied",
                                   "Read-only file system", "Disk quota exceeded") if r in text),
                      None) or f"{type(e).__name__}: {short_error(e)}"
        raise CheckpointWriteError(
            f"checkpoint {os.path.join(directory, str(step))}: could not be written ({reason}); "
            f"earlier checkpoints are intact") from e


def save_frozen(workdir, frozen: dict, arrays: bool = True) -> None:
    """Writes the frozen params once (no-op when already there or when nothing is frozen).
    `arrays=False` (LoRA: the frozen params are the base model, which its spec loads again)
    writes their digests only, so a later load can tell it got the same base.
    Multi-process: call it on every process (orbax synchronises them)."""
    path = os.path.join(os.path.abspath(os.fspath(workdir)), FROZEN_DIR)
    digests_path = os.path.join(os.path.dirname(path), FROZEN_DIGESTS)
    if not jax.tree.leaves(frozen) or os.path.exists(path if arrays else digests_path):
        return
    if arrays:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(path, frozen)
    if jax.process_index() == 0:
        with open(digests_path, "w") as f:
            json.dump(digests(frozen), f)


class BestKeeper:
    """<workdir>/best/<step>/{params, meta.json}: the best-scoring step so far (lower score is
    better).  The older best is deleted only after the new one is complete."""

    def __init__(self, workdir: str, metric: str):
        self.directory = os.path.join(workdir, BEST_DIR)
        self.metric = metric
        self.step = best_step(workdir)
        self.score: Optional[float] = None
        if self.step is not None:
            with open(os.path.join(self.directory, str(self.step), "meta.json")) as f:
                meta = json.load(f)
            self.score = float(meta["score"])

    def offer(self, step: int, score: float, params) -> bool:
        """Saves `params` as the best when `score` beats the best so far; True if it did.
        Multi-process: every process calls it with the same score (orbax saves collectively)."""
        if self.score is not None and not score < self.score:
            return False
        previous = self.step
        target = os.path.join(self.directory, str(step))
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(target, "params"), params, force=True)
        if jax.process_index() == 0:
            with open(os.path.join(target, BEST_DIGESTS), "w") as f:  # before meta.json, the
                json.dump(digests(params), f)                          # mark of a whole step
            with open(os.path.join(target, "meta.json"), "w") as f:
                json.dump({"step": int(step), "score": score, "metric": self.metric}, f)
            if previous is not None and previous != step:
                shutil.rmtree(os.path.join(self.directory, str(previous)), ignore_errors=True)
        self.step, self.score = int(step), float(score)
        return True
