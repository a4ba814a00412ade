"""Ids for strings by content, in first-seen order, with memory that scales to 10^8 strings.

A string is represented by a 16-byte BLAKE2b digest (two distinct texts sharing one has
probability ~n^2 / 2^129: nil at any corpus size). Committed digests live in one sorted numpy
array (16 bytes + an 8-byte id each, no Python objects); digests seen since the last commit sit in
a small dict until `commit` merges them.
"""
from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np

DIGEST = np.dtype("S16")


def digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Interner:
    """digest -> id, ids assigned 0, 1, 2, ... in the order digests are first seen."""

    def __init__(self):
        self._sorted = np.empty(0, DIGEST)
        self._sorted_ids = np.empty(0, np.int64)
        self._pending: dict[bytes, int] = {}
        self.committed = 0        # ids below this are in the sorted arrays

    def __len__(self) -> int:
        return self.committed + len(self._pending)

    def ids(self, digests: Sequence[bytes]) -> tuple[np.ndarray, list[int]]:
        """The id of each digest (new ones get the next ids), and the positions in `digests` of
        the new ones, in id order."""
        out = np.empty(len(digests), np.int64)
        if not len(digests):
            return out, []
        found = self._lookup(np.array(digests, DIGEST))
        new = []
        for i in np.flatnonzero(found < 0).tolist():
            d = digests[i]
            j = self._pending.get(d)
            if j is None:
                j = self._pending[d] = len(self)
                new.append(i)
            found[i] = j
        out[:] = found
        return out, new

    def _lookup(self, query: np.ndarray) -> np.ndarray:
        if not len(self._sorted):
            return np.full(len(query), -1, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, query), len(self._sorted) - 1)
        return np.where(self._sorted[pos] == query, self._sorted_ids[pos], -1)

    def commit(self) -> np.ndarray:
        """Merge the digests seen since the last commit; returns them in id order."""
        new = np.array(list(self._pending), DIGEST) if self._pending else np.empty(0, DIGEST)
        self.extend(new)
        return new

    def extend(self, new_in_id_order: Iterable) -> None:
        """Add digests whose ids are the next ones (a commit, or reloading a saved one).

        The new digests are sorted and inserted, O(committed) per call: a corpus of 10^8 texts
        committed 200,000 at a time never re-sorts what it already holds."""
        new = np.asarray(new_in_id_order, DIGEST)
        ids = np.arange(self.committed, self.committed + len(new), dtype=np.int64)
        order = np.argsort(new, kind="stable")
        at = np.searchsorted(self._sorted, new[order])
        self._sorted = np.insert(self._sorted, at, new[order])
        self._sorted_ids = np.insert(self._sorted_ids, at, ids[order])
        self.committed += len(new)
        self._pending.clear()
