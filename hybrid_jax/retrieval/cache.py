"""On-disk cache of encoded embeddings, so re-evaluating the same model on the same data is cheap.

The key covers everything that changes the vectors: a model id string, a fingerprint of the
parameter values (a retrained model under the same name must miss), the texts in order, the
role prefix and the maximum length.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Any, Sequence

import numpy as np


def params_fingerprint(params: Any) -> str:
    """Hash of every leaf's path, dtype, shape and bytes (exact: any changed weight misses)."""
    import jax

    h = hashlib.blake2b(digest_size=16)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in leaves:
        arr = np.asarray(jax.device_get(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(f"{arr.dtype}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def cache_key(model_id: str, fingerprint: str, texts: Sequence[str], prefix: str,
              max_length: int) -> str:
    h = hashlib.blake2b(digest_size=20)
    for part in (model_id, fingerprint, prefix, str(int(max_length)), str(len(texts))):
        h.update(part.encode())
        h.update(b"\x00")
    for t in texts:
        # Length-prefixed so that no two different text lists can hash alike by concatenation.
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


class EmbeddingCache:
    """Embeddings stored as `<workdir>/embedding_cache/<key>.npy`."""

    def __init__(self, workdir: str | os.PathLike, subdir: str = "embedding_cache"):
        self.directory = pathlib.Path(workdir) / subdir
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> pathlib.Path:
        return self.directory / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        p = self.path(key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            arr = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            # A truncated file (killed mid-write on a filesystem without atomic rename) is a miss.
            self.misses += 1
            return None
        self.hits += 1
        return arr

    def put(self, key: str, value: np.ndarray) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, np.asarray(value), allow_pickle=False)
        os.replace(tmp, self.path(key))  # atomic: readers never see a half-written file
