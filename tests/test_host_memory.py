"""host_memory: inside a step loop a freed large block comes back without new page faults;
outside it (and with the opt-out) glibc's defaults unmap it as before; under huge pages a fresh
block faults in 2 MB pages, and a program restarts itself into that mode exactly once."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = (64 << 20) // 4096

# In a fresh process: malloc + touch, free, then count the page faults of a second malloc +
# touch of a 64 MB block (above glibc's largest mmap threshold, like XLA's per-step
# temporaries), inside reuse_freed_memory() and after it.
PROBE = """
import ctypes, resource, sys
from hybrid_jax import host_memory
on = host_memory.single_arena() if sys.argv[1] == "arena" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def touched_block():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block
def faults_of_second_block():
    libc.free(touched_block())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    libc.free(touched_block())
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
with host_memory.reuse_freed_memory():
    inside = faults_of_second_block()
after = faults_of_second_block()
print(on, inside, after)
"""


def _clean_env():
    drop = ("HYBRID_JAX_HOST_MALLOC", "HYBRID_JAX_HOST_MALLOC_RESTARTED", "GLIBC_TUNABLES")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _probe(mode, **env):
    full_env = _clean_env()
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, env=full_env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1]), int(out[2])


def _glibc():
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").gnu_get_libc_version
        return sys.platform.startswith("linux")
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc malloc only")
def test_freed_block_is_reused_inside_the_loop_only():
    on, inside, after = _probe("arena")
    assert on
    assert inside < PAGES // 20, inside  # the same pages came back
    assert after > PAGES // 2, after     # defaults again: glibc unmapped it, every page faults


@pytest.mark.skipif(not _glibc(), reason="glibc malloc only")
def test_opt_out_leaves_malloc_alone():
    on, inside, after = _probe("arena", HYBRID_JAX_HOST_MALLOC="default")
    assert not on
    assert inside > PAGES // 2 and after > PAGES // 2


def _thp():
    from hybrid_jax import host_memory

    return host_memory._kernel_offers_huge_pages()


@pytest.mark.skipif(not (_glibc() and _thp()), reason="glibc malloc and kernel THP only")
def test_huge_pages_fault_a_fresh_block_in_few_pages():
    on, inside, after = _probe("arena", GLIBC_TUNABLES="glibc.malloc.hugetlb=1")
    assert on
    # the loop leaves mmap alone, yet each fresh 64 MB block takes ~32 huge-page faults, not 16,384
    assert inside < PAGES // 20 and after < PAGES // 20, (inside, after)


RESTART = """
import os
from hybrid_jax import host_memory
print("start", flush=True)
host_memory.reexec_with_huge_pages()
print(os.environ.get("GLIBC_TUNABLES"), host_memory.huge_pages())
"""


@pytest.mark.skipif(not (_glibc() and _thp()), reason="glibc malloc and kernel THP only")
@pytest.mark.parametrize("opt_out", [False, True])
def test_program_restarts_once_into_huge_pages(opt_out):
    env = dict(_clean_env(), GLIBC_TUNABLES="glibc.malloc.arena_max=4")
    if opt_out:
        env["HYBRID_JAX_HOST_MALLOC"] = "default"
    out = subprocess.run([sys.executable, "-c", RESTART], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    if opt_out:
        assert out == ["start", "glibc.malloc.arena_max=4 False"]
    else:  # the user's tunables kept, ours appended; the second start did not restart again
        assert out == ["start", "start", "glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1 True"]


@pytest.mark.skipif(not (_glibc() and _thp()), reason="glibc malloc and kernel THP only")
def test_a_user_who_switched_huge_pages_off_is_not_restarted():
    env = dict(_clean_env(), GLIBC_TUNABLES="glibc.malloc.hugetlb=0")
    out = subprocess.run([sys.executable, "-c", RESTART], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out == ["start", "glibc.malloc.hugetlb=0 False"]
