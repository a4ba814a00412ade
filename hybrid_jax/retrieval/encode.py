"""Encode texts with a model in length buckets, sharded across the local devices.

Texts are sorted by token length and grouped into a few fixed lengths (buckets) so that padding is
small and XLA compiles once per (bucket, batch) shape. Each batch is split across
`jax.local_devices()` along a 1-D mesh. Rows come back in input order.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

import numpy as np

from hybrid_jax.errors import InputError
from hybrid_jax.retrieval.cache import EmbeddingCache, cache_key, params_fingerprint

ApplyFn = Callable[[Any, Any, Any], Any]
DEFAULT_BUCKETS = (32, 64, 128, 256, 512)

# jit wrappers keyed by (apply_fn, device ids): re-encoding with the same function reuses the
# compiled executables instead of tracing again on every call.
_JITTED: dict = {}


def _mesh_and_fn(apply_fn: ApplyFn):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices()
    key = (apply_fn, tuple(d.id for d in devices))
    if key not in _JITTED:
        mesh = Mesh(np.array(devices), ("batch",))
        rows = NamedSharding(mesh, PartitionSpec("batch"))
        replicated = NamedSharding(mesh, PartitionSpec())
        fn = jax.jit(apply_fn, in_shardings=(replicated, rows, rows), out_shardings=rows)
        _JITTED[key] = (fn, replicated, rows)
    return _JITTED[key]


def bucket_lengths(max_length: int, buckets: Sequence[int]) -> list[int]:
    """Bucket sizes capped at max_length (which is always the last bucket)."""
    if max_length < 2:
        raise InputError(f"eval max_length must be >= 2 (got {max_length})")
    kept = sorted({int(b) for b in buckets if 2 <= int(b) < max_length})
    return kept + [int(max_length)]


def assign_buckets(lengths: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Index of the smallest bucket holding each length (longer texts go to the last, truncated)."""
    idx = np.searchsorted(np.asarray(sizes), np.asarray(lengths), side="left")
    return np.minimum(idx, len(sizes) - 1)


def encode_texts(texts: Sequence[str], *, tokenizer, apply_fn: ApplyFn, params: Any,
                 prefix: str = "", max_length: int = 512,
                 buckets: Sequence[int] = DEFAULT_BUCKETS, batch_size: int = 64,
                 progress: bool = True, desc: str = "encode") -> np.ndarray:
    """Embeddings [len(texts), D] float32 in input order.

    Duplicate texts are encoded once. `batch_size` is rounded up to a multiple of the local device
    count; the last batch of each bucket is padded (with copies of a real row, so that a model that
    divides by the mask sum never sees an empty row) and the padding is dropped.
    """
    import jax

    texts = [prefix + t for t in texts]
    if not texts:
        raise InputError("encode_texts: no texts to encode")
    first: dict[str, int] = {}
    inverse = np.fromiter((first.setdefault(t, len(first)) for t in texts), np.int64, len(texts))
    unique = list(first)
    fn, replicated, rows = _mesh_and_fn(apply_fn)
    n_dev = len(jax.local_devices())
    batch = max(n_dev, -(-int(batch_size) // n_dev) * n_dev)
    params = jax.device_put(params, replicated)

    sizes = bucket_lengths(max_length, buckets)
    which = assign_buckets(tokenizer.lengths(unique), sizes)
    out: np.ndarray | None = None
    bar = _progress(len(unique), desc, progress)
    for b, size in enumerate(sizes):
        members = np.flatnonzero(which == b)
        for start in range(0, len(members), batch):
            chunk = members[start:start + batch]
            ids, mask = tokenizer([unique[i] for i in chunk], size)
            if len(chunk) < batch:
                fill = batch - len(chunk)
                ids = np.concatenate([ids, np.repeat(ids[:1], fill, 0)])
                mask = np.concatenate([mask, np.repeat(mask[:1], fill, 0)])
            emb = np.asarray(jax.device_get(fn(params, ids, mask)), np.float32)[:len(chunk)]
            if out is None:
                out = np.empty((len(unique), emb.shape[-1]), np.float32)
            out[chunk] = emb
            bar.update(len(chunk))
    bar.close()
    return out[inverse]


def encode_cached(texts: Sequence[str], *, cache: EmbeddingCache | None, model_id: str,
                  fingerprint: str | None = None, **kwargs) -> np.ndarray:
    """`encode_texts` through an `EmbeddingCache` (None: no caching)."""
    if cache is None:
        return encode_texts(texts, **kwargs)
    fp = fingerprint or params_fingerprint(kwargs["params"])
    key = cache_key(model_id, fp, list(texts), kwargs.get("prefix", ""),
                    kwargs.get("max_length", 512))
    hit = cache.get(key)
    if hit is not None and hit.shape[0] == len(texts):
        return hit
    emb = encode_texts(texts, **kwargs)
    cache.put(key, emb)
    return emb


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, leave=False)
