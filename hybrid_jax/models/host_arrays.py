"""Host arrays the CPU device uses in place: XLA:CPU's jax.device_put aliases a 64-byte-aligned
numpy array instead of copying it, so weights placed on the CPU device for a step or for encoding
are held once (the demo's frozen 384 MB word-embedding table was held twice, host and device)."""
from __future__ import annotations

import jax
import numpy as np

# XLA:CPU's device_put uses a host array in place when its data is aligned to this many bytes.
_XLA_CPU_ALIGNMENT = 64


def zero_copy_host_tree(tree):
    """Numpy leaves -> read-only, 64-byte-aligned arrays (copied once when misaligned; leaves that
    share one array keep sharing it).  jax.device_put on XLA:CPU then uses such an array in place
    instead of copying it, so weights placed on the CPU device for a step or for encoding are
    not held twice (the demo's frozen 384 MB word-embedding table was).  Read-only because the
    device array is the same memory: writing to it would change what the device sees."""
    done: dict[int, np.ndarray] = {}

    def one(x):
        if not isinstance(x, np.ndarray):
            return x
        if id(x) not in done:
            done[id(x)] = _aligned_read_only(x)
        return done[id(x)]

    return jax.tree.map(one, tree)


def aligned_empty(shape, dtype) -> np.ndarray:
    """np.empty whose data XLA:CPU can use in place (a loader fills it: no aligned copy later)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + _XLA_CPU_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % _XLA_CPU_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned_copy(x: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of `x` in an aligned_empty array."""
    y = aligned_empty(x.shape, x.dtype)
    y[...] = x
    return y


def _aligned_read_only(x: np.ndarray) -> np.ndarray:
    if x.ctypes.data % _XLA_CPU_ALIGNMENT or not x.flags.c_contiguous:
        x = aligned_copy(x)
    else:
        x = x.view()  # the caller's array stays writable
    x.flags.writeable = False
    return x
