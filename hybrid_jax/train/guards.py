"""What stops a training loop early: a non-finite step (TrainingDiverged) and preemption (SIGTERM
or jax's multi-process preemption sync point)."""
from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

import jax
import numpy as np

from hybrid_jax.models.run_checkpoint import CHECKPOINT_DIR

class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or parameter norm: the run stops, its last good checkpoint
    (saved before the bad step) is kept and the bad state is never saved."""


_FINITE_KEYS = ("loss", "grad_norm", "param_norm")


def check_finite(fetched: list, first_step: int, example_ids: list, workdir: str,
                 last_checkpoint: Optional[int]) -> None:
    """`fetched[i]`: host metrics of step `first_step + i` (1-based update count); raises
    TrainingDiverged naming the first bad step, the example ids of its batch and the checkpoint
    that survives it."""
    for i, m in enumerate(fetched):
        bad = {k: m[k] for k in _FINITE_KEYS if k in m and not np.isfinite(m[k])}
        if not bad:
            continue
        ids = example_ids[i] if i < len(example_ids) else None
        ids_text = ("unknown (the batch has no example_id)" if ids is None
                    else "[" + ", ".join(str(int(x)) for x in np.ravel(ids)) + "]")
        kept = (f"the last good checkpoint is {CHECKPOINT_DIR}/{last_checkpoint}"
                if last_checkpoint is not None else "no checkpoint was saved before it")
        values = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise TrainingDiverged(
            f"training diverged at step {first_step + i} ({values}); batch example ids "
            f"{ids_text}; {kept} in {workdir} (the bad state was not saved)")


class PreemptionFlag:
    """SIGTERM (a TPU/GCE preemption notice, SLURM's pre-kill signal) -> finish the step, save,
    exit 0.  Multi-process runs ask jax's preemption sync point instead, so every process stops at
    the same step (an orbax save is collective)."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        if self.signum is None:
            print(f"received signal {signum}: finishing the current step, then saving a "
                  f"checkpoint", file=sys.stderr, flush=True)
        self.signum = signum

    def __enter__(self):
        # Multi-process: jax.distributed's preemption notifier owns SIGTERM (replacing its
        # handler would hide the notice from the sync point).
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM,):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            try:
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except RuntimeError:  # preemption service not running: fall back to the local flag
                pass
        return self.signum is not None
