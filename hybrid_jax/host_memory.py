"""Host-memory set-up for CPU training: a step's large temporaries without page-fault storms.

XLA:CPU allocates an executable's temporaries as one block per call (about 1.5 GB for the demo
train step).  glibc serves blocks that large with mmap and returns them with munmap, so every
step faults the whole block in again: measured on the demo step, ~200,000 page faults and
~0.5 s of kernel time per 1.6-1.8 s step.  Two remedies, used together:

* Transparent huge pages (`reexec_with_huge_pages()`, at a program's start): the process
  restarts itself once with glibc's tunable `glibc.malloc.hugetlb=1`, which advises huge pages
  for malloc's memory, so a block faults in 2 MB pages (512x fewer faults).
* `reuse_freed_memory()` around a loop of same-shaped steps: no mmap and no trimming, so a freed
  block stays mapped and the next step gets the same pages, with no faults at all.  Huge pages
  alone still fault ~1,100 of them (2.2 GB, zeroed by the kernel) into every demo step: 0.15 s
  of kernel time per step alone, 0.8 s beside the benchmark's PyTorch peer, whose memory churn
  makes the kernel compact memory for each huge page; with both, 0.02 s and a flat resident set
  (3,046 -> 3,050 MB over 16 steps).  Without huge pages the kept heap fragments and grows by a
  whole block now and then (measured on the demo in an earlier layout: 4.2 GB after step 1,
  8.4 GB from step 12 on).  On exit mmap and trimming come back at glibc's default values and
  `malloc_trim` returns the free pages to the system.

`memory_ordered_cpu_schedule()`, before JAX starts its backend (our programs all call it):
XLA:CPU then orders each computation for peak memory.  Its default, concurrency-optimised
order keeps more temporaries live at once: the demo step's process peak 3,321 MB under it
against 3,104-3,109 MB memory-ordered, for +2% step time (median of three alternating pairs
of processes, `make bench`'s step section without the peer), same losses.  With
rematerialisation (model.remat) it decides whether remat saves anything: the default order runs
the recomputed forward passes early, so their activations are live together (12 checkpointed
MLP layers: 3,114 MB of temporaries under it, 1,332 MB under the memory order).  The flag is
process-wide (a per-executable compiler option is accepted and ignored), so it is set at the
program's start; a user's own setting of the option in XLA_FLAGS stands.

`synchronous_cpu_dispatch()`, before JAX starts its backend (our programs all call it): a CPU
computation then runs in the calling thread and frees its temporaries before the call returns.
Under JAX's default asynchronous dispatch the next step's temporaries are allocated while the
previous step's are still held (dispatch runs ahead, and even after the step's outputs are
ready the block is freed a moment later), so inside `reuse_freed_memory()` the heap kept two
blocks and grew by 1.3 GB now and then (demo step: 3,055 -> 4,319 -> 5,592 -> 6,867 MB over
14 steps); synchronously the same block comes back at the same address every step (3,042 ->
3,049 MB; in the test's 66 MB loop about one process in ten faults one block in once more).
Encoding, which overlaps packing with compute by dispatching ahead, measured the same either
way (512 texts, median of 4 passes, three alternating pairs of processes:
8.65 / 8.68 / 9.16 s asynchronous, 9.69 / 7.97 / 8.62 s synchronous).
HYBRID_JAX_HOST_MALLOC=default keeps JAX's asynchronous dispatch.

`single_arena()`, at the start of a program before JAX starts its thread pools: every thread
allocates from glibc's main heap (other arenas cannot hold a 1 GB block, so they would mmap it
whatever the settings).  HYBRID_JAX_HOST_MALLOC=default leaves glibc as it is.  All are no-ops
off glibc.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys

ENV = "HYBRID_JAX_HOST_MALLOC"
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_RESTARTED = "HYBRID_JAX_HOST_MALLOC_RESTARTED"  # set on the restart: never restart twice
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"

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


def huge_pages() -> bool:
    """True when this process runs with glibc's huge-page tunable on (set before it started)."""
    return _hugetlb_setting() not in (None, "", "0")


def _hugetlb_setting():
    """The value GLIBC_TUNABLES gives glibc.malloc.hugetlb, or None when it is not given."""
    for tunable in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        name, _, value = tunable.partition("=")
        if name == "glibc.malloc.hugetlb":
            return value
    return None


def _kernel_offers_huge_pages() -> bool:
    try:
        with open(_THP_MODE) as f:
            mode = f.read()
    except OSError:
        return False
    return "[always]" in mode or "[madvise]" in mode


def reexec_with_huge_pages() -> None:
    """Restart this very command (same pid, argv, stdio) with the huge-page tunable, once.

    glibc reads its tunables only when a process starts, hence the restart; call it first thing
    in a program, before anything worth keeping exists.  Does nothing with the opt-out, off
    glibc, without kernel THP, when the user set the tunable (either way), or after a restart.
    """
    if (_glibc() is None or _hugetlb_setting() is not None or os.environ.get(_RESTARTED)
            or not _kernel_offers_huge_pages()):
        return
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES"), HUGE_PAGES_TUNABLE)
                                     if t)
    env[_RESTARTED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


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
            return_free_memory()


@contextlib.contextmanager
def between_steps():
    """Work between a `reuse_freed_memory()` loop's steps (checkpoints, dev batches, evaluation):
    the free pages the loop keeps go back before it, so that work is not resident beside the
    step's idle block, and after it, since its allocations may have split that block so that
    the next step maps a new one.  Measured on the demo (60 steps, a save and a dev-loss
    selection at steps 30 and 60): with neither trim 3,459 MB resident from step 31 on; with
    the one after the work 3,229 MB; with both, also 2,296 MB instead of 3,332 MB during the
    work, and the run's peak 3,232 MB instead of 3,465 MB."""
    return_free_memory()
    try:
        yield
    finally:
        return_free_memory()


CPU_MEMORY_SCHEDULE_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
_SCHEDULER_OPTION = "xla_cpu_enable_concurrency_optimized_scheduler"


def memory_ordered_cpu_schedule() -> None:
    """Adds CPU_MEMORY_SCHEDULE_FLAG to XLA_FLAGS unless the scheduler option is set there
    already (the user's choice stands).  Effective only before JAX's backend starts."""
    flags = os.environ.get("XLA_FLAGS", "")
    if _SCHEDULER_OPTION not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_MEMORY_SCHEDULE_FLAG}".strip()


def synchronous_cpu_dispatch() -> None:
    """JAX's CPU client runs each single-device computation to completion in the calling thread
    (see the module docstring); not with the opt-out or off glibc, where freed blocks are not
    kept.  Effective only before JAX's backend starts."""
    if _glibc() is not None:
        import jax

        jax.config.update("jax_cpu_enable_async_dispatch", False)


def memory_ordered_cpu_schedule_on() -> bool:
    return CPU_MEMORY_SCHEDULE_FLAG in os.environ.get("XLA_FLAGS", "").split()


def return_free_memory() -> None:
    """Hands glibc's free pages back to the system now (malloc_trim).  Called at the end of a
    run's set-up and once after a step is compiled: the loader's and the compiler's freed
    working memory would otherwise still be resident when the first step's buffers are
    allocated beside it, and count in the run's peak."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def child_environment() -> dict:
    """os.environ plus glibc's variables for the step-loop settings, for a child process (the
    benchmark's PyTorch peer trains under the allocator set-up our step trains under)."""
    env = dict(os.environ)  # the huge-page tunable, when set, is inherited from here
    if _state["single_arena"]:
        env.update(MALLOC_ARENA_MAX="1", MALLOC_MMAP_MAX_="0",
                   MALLOC_TRIM_THRESHOLD_=str(2 ** 62))
    return env


def status() -> str:
    """One phrase for logs and benchmark records."""
    if not _state["single_arena"]:
        return "system malloc defaults"
    pages = "; transparent huge pages for malloc (glibc.malloc.hugetlb=1)" if huge_pages() else ""
    return f"one glibc arena{pages}; train-step loops keep freed memory mapped (no mmap, no trim)"
