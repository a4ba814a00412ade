"""Host-memory set-up for CPU runs: keep freed memory for reuse instead of unmapping it.

XLA:CPU allocates an executable's temporaries as one block per call (about 1 GB for the demo
train step).  glibc serves blocks that large with mmap and returns them with munmap, so every
step faults the whole block in again: measured on the demo step, ~200,000 page faults and
~0.5 s of kernel time per 1.6-1.8 s step.  One malloc arena, no mmap for large blocks and no
trimming make glibc hand the same pages back the next step (kernel time ~0 s/step).

Call `keep_freed_memory()` at the start of a program, before JAX starts its thread pools (a
thread keeps the arena it first allocated from).  The resident set then stays at its peak,
which the step reaches every time anyway.  HYBRID_JAX_HOST_MALLOC=default leaves glibc as it is.
"""
from __future__ import annotations

import ctypes
import os
import sys

ENV = "HYBRID_JAX_HOST_MALLOC"

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_state = {"applied": None}


def keep_freed_memory() -> bool:
    """Tune glibc malloc as described above; True when the settings are in force."""
    if _state["applied"] is not None:
        return _state["applied"]
    applied = False
    if os.environ.get(ENV, "") != "default" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.gnu_get_libc_version  # present only in glibc (not musl)
        except (OSError, AttributeError):
            libc = None
        if libc is not None:
            # mallopt returns 1 on success; -1 as the trim threshold disables trimming.
            applied = all(libc.mallopt(param, value) == 1 for param, value in
                          ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
    _state["applied"] = applied
    return applied


def child_environment() -> dict:
    """os.environ plus glibc's variables for the same settings, for a child process (the
    benchmark's PyTorch peer runs under the allocator set-up our step runs under)."""
    env = dict(os.environ)
    if _state["applied"]:
        env.update(MALLOC_ARENA_MAX="1", MALLOC_MMAP_MAX_="0",
                   MALLOC_TRIM_THRESHOLD_=str(2 ** 62))
    return env


def status() -> str:
    """One phrase for logs and benchmark records."""
    if _state["applied"]:
        return "glibc malloc keeps freed memory (one arena, no mmap, no trim)"
    return "system malloc defaults"
