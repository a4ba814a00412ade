"""host_memory.keep_freed_memory: a freed large block is handed back without new page faults."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# malloc, touch, free and malloc + touch again a 64 MB block (above glibc's largest mmap threshold, like
# XLA's per-step temporaries); print whether the setting is on and the second block's faults.
PROBE = """
import ctypes, resource, sys
from hybrid_jax import host_memory
on = host_memory.keep_freed_memory() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def touched_block():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block
libc.free(touched_block())
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touched_block()
print(on, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

def _probe(mode, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "HYBRID_JAX_HOST_MALLOC"}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, env=full_env,
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


def _glibc():
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").gnu_get_libc_version
        return sys.platform.startswith("linux")
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc malloc only")
def test_freed_block_is_reused_without_page_faults():
    on, faults_kept = _probe("keep")
    assert on
    _, faults_default = _probe("default")
    pages = (64 << 20) // 4096
    assert faults_default > pages // 2  # glibc unmapped the block: every page faults again
    assert faults_kept < pages // 20, faults_kept


@pytest.mark.skipif(not _glibc(), reason="glibc malloc only")
def test_opt_out_leaves_malloc_alone():
    on, faults = _probe("keep", HYBRID_JAX_HOST_MALLOC="default")
    assert not on
    assert faults > (64 << 20) // 4096 // 2
