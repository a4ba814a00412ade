"""Distinct values of integer id arrays by sorting. numpy 2's np.unique hashes by default, which
measured ~0.8 s for 10^6 int32 ids on a 2-core CPU against ~4 ms for a sort; corpus set-up runs
it over every example and language."""
from __future__ import annotations

import numpy as np


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of `values` (any shape, flattened)."""
    s = np.sort(np.ravel(values))
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


def count_distinct(values: np.ndarray) -> int:
    return len(distinct(values))


def distinct_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the sorted distinct values, int64 inverse: distinct[inverse] == values), flattened."""
    flat = np.ravel(values)
    order = np.argsort(flat, kind="stable")
    s = flat[order]
    first = np.r_[True, s[1:] != s[:-1]] if len(s) else np.zeros(0, bool)
    inverse = np.empty(len(flat), np.int64)
    inverse[order] = np.cumsum(first) - 1
    return s[first], inverse
