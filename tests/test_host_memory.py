"""host_memory: inside a step loop a freed large block comes back without new page faults;
outside it (and with the opt-out) glibc's defaults unmap it as before."""
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


def _probe(mode, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "HYBRID_JAX_HOST_MALLOC"}
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
