"""Encode texts with a model in length buckets, sharded across the local devices.

Texts are tokenized once, sorted by token length and padded to a few fixed lengths (buckets) so
that padding is small and XLA compiles once per (bucket, rows) shape; a token budget can set the
rows of each bucket's batches (see `plan_batches`).  Each batch is split across
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


class NonFiniteEmbeddingError(InputError):
    """An encoded batch held NaN or inf embeddings: the model cannot produce meaningful scores."""


def _with_finite_rows(apply_fn: ApplyFn) -> ApplyFn:
    """apply_fn that also returns whether each row is finite: a reduction on device, fetched with
    the embeddings, so the check costs no extra transfer or round-trip."""
    import jax.numpy as jnp

    def fn(params, ids, mask):
        emb = apply_fn(params, ids, mask)
        return emb, jnp.isfinite(emb).all(axis=-1)
    return fn


def _mesh_and_fn(apply_fn: ApplyFn):
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices()
    key = (apply_fn, tuple(d.id for d in devices))
    if key not in _JITTED:
        mesh = Mesh(np.array(devices), ("batch",))
        rows = NamedSharding(mesh, PartitionSpec("batch"))
        replicated = NamedSharding(mesh, PartitionSpec())
        fn = jax.jit(_with_finite_rows(apply_fn), in_shardings=(replicated, rows, rows),
                     out_shardings=(rows, rows))
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


def plan_batches(lengths: np.ndarray, sizes: Sequence[int], rows_per_bucket: Sequence[int],
                 n_dev: int) -> list[tuple[int, np.ndarray, int]]:
    """[(bucket length, member indices, padded rows)] covering every text once, in length order.

    Each bucket's texts fill batches of that bucket's row count; the bucket's last, partial batch
    is padded only to the next power of two of rows (a multiple of `n_dev`), not to a full
    batch: at most two compiled shapes per bucket, and little padding even when a bucket holds
    fewer texts than one batch.  Batches never spill into a longer bucket (a version that let
    them encoded a 512-text sample slower: its short texts were padded to the longer length).
    """
    order = np.argsort(lengths, kind="stable")
    bucket_of = assign_buckets(np.asarray(lengths)[order], sizes)
    plan = []
    for b, size in enumerate(sizes):
        members = order[bucket_of == b]
        full = rows_per_bucket[b]
        for start in range(0, len(members), full):
            chunk = members[start:start + full]
            rows = full
            if len(chunk) < full:
                short = max(n_dev, 1 << int(len(chunk) - 1).bit_length())
                rows = min(full, -(-short // n_dev) * n_dev)
            plan.append((int(size), chunk, rows))
    return plan


def bucket_rows(sizes: Sequence[int], token_budget: int, batch_size: int, n_dev: int) -> list[int]:
    """Rows per batch of each bucket: `token_budget // length` (0: `batch_size` for every
    bucket), rounded down to a multiple of the device count and at least one row per device."""
    rows = []
    for size in sizes:
        if token_budget > 0:
            r = int(token_budget) // int(size)
        else:
            r = -(-int(batch_size) // n_dev) * n_dev
        rows.append(max(n_dev, r // n_dev * n_dev))
    return rows


def encode_texts(texts: Sequence[str], *, tokenizer, apply_fn: ApplyFn, params: Any,
                 prefix: str = "", max_length: int = 512,
                 buckets: Sequence[int] = DEFAULT_BUCKETS, batch_size: int = 64,
                 token_budget: int = 0, progress: bool = True,
                 desc: str = "encode") -> np.ndarray:
    """Embeddings [len(texts), D] float32 in input order.

    Duplicate texts are encoded once; each text is tokenized once.  Batches hold `token_budget`
    padded tokens (rows = budget // bucket length; see `plan_batches`), or `batch_size` rows
    when `token_budget` is 0; rows are a multiple of the local device count.  Padding rows are
    copies of a real row, so a model that divides by the mask sum never sees an empty row.  The
    next batch is packed and dispatched before the previous one is read back, so tokenization
    and packing overlap the device's compute.
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
    params = jax.device_put(params, replicated)

    seqs = tokenizer.token_ids(unique)
    sizes = bucket_lengths(max_length, buckets)
    plan = plan_batches(np.fromiter(map(len, seqs), np.int64, len(seqs)), sizes,
                        bucket_rows(sizes, token_budget, batch_size, n_dev), n_dev)
    out: np.ndarray | None = None
    bar = _progress(len(unique), desc, progress)
    in_flight = None
    for size, chunk, n_rows in plan + [(0, None, 0)]:  # a last turn reads the last batch
        launched = None
        if chunk is not None:
            ids, mask = tokenizer.pack([seqs[i] for i in chunk], size)
            fill = n_rows - len(chunk)
            if fill:
                ids = np.concatenate([ids, np.repeat(ids[:1], fill, 0)])
                mask = np.concatenate([mask, np.repeat(mask[:1], fill, 0)])
            launched = (chunk, fn(params, ids, mask))  # asynchronous: returns before it is done
        if in_flight is not None:
            done, device_out = in_flight
            emb, finite = jax.device_get(device_out)
            emb = np.asarray(emb, np.float32)[:len(done)]
            _check_finite(np.asarray(finite)[:len(done)], desc)
            if out is None:
                out = np.empty((len(unique), emb.shape[-1]), np.float32)
            out[done] = emb
            bar.update(len(done))
        in_flight = launched
    bar.close()
    return out[inverse]


def _check_finite(finite_rows: np.ndarray, desc: str) -> None:
    bad = int(np.count_nonzero(~finite_rows))
    if bad:
        raise NonFiniteEmbeddingError(
            f"{desc}: {bad} of {len(finite_rows)} texts of an encoded batch have non-finite "
            "embeddings (NaN or inf; encoding stopped at that batch) -- the model's parameters "
            "have likely diverged in training or are corrupted (a damaged checkpoint: load an "
            "earlier step with ckpt:<workdir>@<step>)")


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
