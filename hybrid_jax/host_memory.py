"""Host-memory set-up for CPU training: hand a step's freed temporaries back to the next step.

XLA:CPU allocates an executable's temporaries as one block per call (about 1 GB for the demo
train step).  glibc serves blocks that large with mmap and returns them with munmap, so every
step faults the whole block in again: measured on the demo step, ~200,000 page faults and
~0.5 s of kernel time per 1.6-1.8 s step.

Two pieces:
* `single_arena()`, at the start of a program before JAX starts its thread pools: every thread
  allocates from glibc's main heap (a thread keeps the arena it first allocated from, and other
  arenas cannot hold a 1 GB block at all, so they mmap it whatever the settings).
* `reuse_freed_memory()`, around a loop of same-shaped steps: no mmap and no trimming, so the
  freed block stays mapped and the next step gets the same pages (kernel time ~0 s/step).  On
  exit mmap and trimming come back at glibc's default values (fixed from then on: any mallopt
  call stops glibc adapting its mmap threshold) and `malloc_trim` returns the free pages to the
  system, so a long-lived process (the experiment driver, a notebook, the test suite) does not
  keep them.

HYBRID_JAX_HOST_MALLOC=default leaves glibc as it is.  Both are no-ops off glibc.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys

ENV = "HYBRID_JAX_HOST_MALLOC"

# mallopt parameters and glibc's defaults for them (<malloc.h>, mallopt(3)).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536

_state = {"libc": None, "checked": False, "single_arena": False, "loops": 0}


def _glibc():
    """libc when it is glibc and the opt-out is not set, else None."""
    if not _state["checked"]:
        _state["checked"] = True
        if os.environ.get(ENV, "") != "default" and sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL("libc.so.6")
                libc.gnu_get_libc_version  # present only in glibc (not musl)
                _state["libc"] = libc
            except (OSError, AttributeError):
                pass
    return _state["libc"]


def single_arena() -> bool:
    """One malloc arena for every thread started from now on; True when in force."""
    libc = _glibc()
    if libc is not None and not _state["single_arena"]:
        _state["single_arena"] = libc.mallopt(_M_ARENA_MAX, 1) == 1
    return _state["single_arena"]


@contextlib.contextmanager
def reuse_freed_memory():
    """Inside: glibc keeps freed blocks mapped for reuse (no mmap, no trim); nests."""
    libc = _glibc()
    if libc is None:
        yield
        return
    if _state["loops"] == 0:
        # -1 as the trim threshold disables trimming (mallopt(3)).
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, -1)
    _state["loops"] += 1
    try:
        yield
    finally:
        _state["loops"] -= 1
        if _state["loops"] == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)


def child_environment() -> dict:
    """os.environ plus glibc's variables for the step-loop settings, for a child process (the
    benchmark's PyTorch peer trains under the allocator set-up our step trains under)."""
    env = dict(os.environ)
    if _state["single_arena"]:
        env.update(MALLOC_ARENA_MAX="1", MALLOC_MMAP_MAX_="0",
                   MALLOC_TRIM_THRESHOLD_=str(2 ** 62))
    return env


def status() -> str:
    """One phrase for logs and benchmark records."""
    if _state["single_arena"]:
        return "one glibc arena; train-step loops keep freed memory mapped (no mmap, no trim)"
    return "system malloc defaults"
