"""Points where a training run's host memory may be tuned, for a program to fill in at start-up
(hybrid_jax.platform.cpu does on glibc); by default nothing happens at them.

The run calls `release_free_memory()` after its set-up and after compiling its step (freed loader
and compiler memory would otherwise still be resident beside the step's first buffers), runs its
same-shaped steps inside `step_loop()`, and the work between steps (checkpoints, evaluation, dev
selection) inside `between_steps()`.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Optional


def _nothing() -> None:
    return None


_release: Callable[[], None] = _nothing
_step_loop: Callable[[], ContextManager] = contextlib.nullcontext


def install(release: Optional[Callable[[], None]] = None,
            step_loop: Optional[Callable[[], ContextManager]] = None) -> None:
    """The program's implementations for every run in this process from now on; None: none."""
    global _release, _step_loop
    _release = release or _nothing
    _step_loop = step_loop or contextlib.nullcontext


def release_free_memory() -> None:
    _release()


def step_loop() -> ContextManager:
    return _step_loop()


@contextlib.contextmanager
def between_steps():
    """Free memory goes back before the work, so that it is not resident beside the step's idle
    block, and after it, since the work's allocations may have split that block."""
    _release()
    try:
        yield
    finally:
        _release()
