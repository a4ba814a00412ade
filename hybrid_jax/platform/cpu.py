"""CPU host tuning a program opts into once, at start-up; `HYBRID_JAX_CPU_TUNING=off` leaves
glibc, JAX and the loaded weights at their defaults.  hybrid_jax.cli applies it to every program
built on it (main, the study driver, the benchmarks); encode and export call `tune_process()`.
Training, models and evaluation know nothing of this module: it fills in their generic hooks
(train.memory_hooks, models.host_alloc's allocator, models.pretrained's host-params hook).

XLA:CPU allocates a step's temporaries as one large block per call (1.34 GB for the demo step),
which glibc would map, fault in page by page and unmap at every step.  `tune_process()`, before
JAX starts its backend, sets what bought >= 5% of the demo step's time or peak memory
(docs/training.md, "CPU host tuning", has the figures and the settings that were dropped):

  - XLA:CPU's memory-ordered schedule: each computation is ordered for peak memory rather than
    concurrency (process-wide; a user's own setting of the option in XLA_FLAGS stands);
  - synchronous CPU dispatch: a computation runs in the calling thread and frees its
    temporaries before the call returns, so the next step's block is not allocated beside the
    last one's;
  - loaded weights as read-only, 64-byte-aligned arrays, which XLA:CPU's device_put uses in
    place: frozen weights placed for a step or for encoding are held once, not twice;
  - on glibc, the training run's memory hooks: its steps run with mmap and trimming off, so a
    step's freed block comes back at the next step with no page faults, and free memory is
    handed back after set-up, after compiling, and around the work between steps.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys

OPT_OUT = "HYBRID_JAX_CPU_TUNING"  # =off: no tuning at all

# mallopt parameters and glibc's defaults for them (<malloc.h>, mallopt(3)).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536

_loops = [0]  # how many reuse_freed_memory() blocks are open (they nest)


def enabled() -> bool:
    """Tuning is on unless HYBRID_JAX_CPU_TUNING=off."""
    return os.environ.get(OPT_OUT, "").lower() != "off"


def _glibc():
    """libc when it is glibc (not musl, not another OS), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # present only in glibc
    except (OSError, AttributeError):
        return None
    return libc


def tune_process() -> None:
    """The settings made once before JAX starts its backend; none with the opt-out."""
    if not enabled():
        return
    memory_ordered_cpu_schedule()
    import jax

    from hybrid_jax.models import host_alloc, pretrained
    from hybrid_jax.train import memory_hooks

    jax.config.update("jax_cpu_enable_async_dispatch", False)
    host_alloc.set_allocator(aligned_empty)  # decoded weights land aligned: no copy below
    pretrained.set_host_params_hook(zero_copy_host_tree)
    if _glibc() is not None:
        memory_hooks.install(release=return_free_memory, step_loop=reuse_freed_memory)


def memory_ordered_cpu_schedule() -> None:
    """Adds the runner's MEMORY_ORDERED_SCHEDULE_FLAG to XLA_FLAGS unless the scheduler option is
    set there already.  Effective only before JAX's backend starts."""
    from hybrid_jax.train.runner import MEMORY_ORDERED_SCHEDULE_FLAG

    flags = os.environ.get("XLA_FLAGS", "")
    option = MEMORY_ORDERED_SCHEDULE_FLAG.lstrip("-").split("=")[0]
    if option not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {MEMORY_ORDERED_SCHEDULE_FLAG}".strip()


# --------------------------------------------------------------------------- the step loop's heap

@contextlib.contextmanager
def reuse_freed_memory():
    """Inside: glibc keeps freed blocks mapped for reuse (no mmap, no trim); nests.  On leaving
    the outermost one glibc's defaults come back and free pages go back to the system."""
    libc = _glibc()
    if libc is None:
        yield
        return
    if _loops[0] == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, -1)  # -1 disables trimming (mallopt(3))
    _loops[0] += 1
    try:
        yield
    finally:
        _loops[0] -= 1
        if _loops[0] == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            return_free_memory()


def return_free_memory() -> None:
    """Hands glibc's free pages back to the system now (malloc_trim)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def child_environment() -> dict:
    """os.environ plus glibc's variables for the step loop's malloc settings, for a child process
    (the benchmarks' PyTorch peer trains under the settings our step trains under)."""
    env = dict(os.environ)
    if enabled() and _glibc() is not None:
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_=str(2 ** 62))
    return env


# --------------------------------------------------------------- weights the device uses in place

_XLA_CPU_ALIGNMENT = 64  # XLA:CPU's device_put uses a host array in place when aligned to this


def zero_copy_host_tree(tree):
    """Numpy leaves -> read-only, 64-byte-aligned arrays (copied once when misaligned; leaves
    that share one array keep sharing it; the caller's arrays stay writable).  Read-only because
    the device array is the same memory."""
    import jax
    import numpy as np

    done: dict = {}

    def one(x):
        if not isinstance(x, np.ndarray):
            return x
        if id(x) not in done:
            done[id(x)] = _aligned_read_only(x)
        return done[id(x)]

    return jax.tree.map(one, tree)


def aligned_empty(shape, dtype):
    """np.empty whose data XLA:CPU can use in place."""
    import numpy as np

    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + _XLA_CPU_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _XLA_CPU_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _aligned_read_only(x):
    if x.ctypes.data % _XLA_CPU_ALIGNMENT or not x.flags.c_contiguous:
        y = aligned_empty(x.shape, x.dtype)
        y[...] = x
        x = y
    else:
        x = x.view()  # the caller's array stays writable
    x.flags.writeable = False
    return x


def status() -> str:
    """One phrase for logs and benchmark records."""
    if not enabled():
        return "CPU host tuning off (glibc, JAX and loaded weights at their defaults)"
    return ("XLA:CPU memory-ordered schedule; synchronous CPU dispatch; train-step loops keep "
            "freed memory mapped (no mmap, no trim); loaded weights used in place")
