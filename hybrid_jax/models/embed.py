"""Plain batched text -> embedding, in input order (the evaluation path adds length bucketing,
device sharding and caching in hybrid_jax.retrieval)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hybrid_jax.models.bundle import ModelBundle


def embed_texts(bundle: ModelBundle, texts: Sequence[str], role: str, *, max_length: int = 512,
                batch_size: int = 32) -> np.ndarray:
    """float32 [len(texts), D], L2-normalised. Batches are padded to a fixed [batch, length]
    shape (length = the longest text in the batch rounded up to a power of two) so XLA compiles
    only a handful of shapes."""
    apply = bundle.apply_fn(role)
    prefix = bundle.prefix(role)
    max_length = min(max_length, bundle.config.max_length)
    prefixed = [prefix + t for t in texts]
    lengths = bundle.tokenizer.lengths(prefixed)
    out = np.zeros((len(texts), bundle.config.hidden_size), np.float32)
    for start in range(0, len(texts), batch_size):
        chunk = prefixed[start:start + batch_size]
        longest = int(lengths[start:start + batch_size].max())
        length = min(max_length, max(16, 1 << (longest - 1).bit_length()))
        ids, mask = bundle.tokenizer(chunk + [""] * (batch_size - len(chunk)), length)
        out[start:start + len(chunk)] = np.asarray(apply(bundle.params, ids, mask))[:len(chunk)]
    return out
