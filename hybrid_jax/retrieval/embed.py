"""Text -> embedding for a ready model, in input order: the evaluation encoder (length buckets,
device sharding) without caching or a progress bar."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from hybrid_jax.retrieval.encode import encode_texts

if TYPE_CHECKING:  # annotation only: importing the retrieval package stays free of flax/models
    from hybrid_jax.models.bundle import ModelBundle


def embed_texts(bundle: ModelBundle, texts: Sequence[str], role: str, *, max_length: int = 512,
                batch_size: int = 32) -> np.ndarray:
    """float32 [len(texts), D], L2-normalised; texts longer than max_length are truncated."""
    return encode_texts(texts, tokenizer=bundle.tokenizer, apply_fn=bundle.apply_fn(role),
                        params=bundle.params, prefix=bundle.prefix(role),
                        max_length=min(max_length, bundle.config.max_length),
                        batch_size=batch_size, progress=False)
