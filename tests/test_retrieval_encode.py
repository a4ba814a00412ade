"""Length-bucketed, device-sharded encoding and the embedding cache (toy model, 8 CPU devices)."""
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax.retrieval import encode as E
from hybrid_jax.retrieval.cache import EmbeddingCache, params_fingerprint


class ToyTokenizer:
    """Whitespace words hashed into a small vocabulary, with BOS=1 / EOS=2 / PAD=0."""

    vocab = 97

    def ids(self, text):
        return [1] + [3 + zlib.crc32(w.encode()) % (self.vocab - 3) for w in text.split()] + [2]

    def lengths(self, texts):
        return np.array([len(self.ids(t)) for t in texts], np.int32)

    def token_ids(self, texts):
        return [self.ids(t) for t in texts]

    def __call__(self, texts, max_length):
        return self.pack(self.token_ids(texts), max_length)

    def pack(self, seqs, max_length):
        ids = np.zeros((len(seqs), max_length), np.int32)
        for i, x in enumerate(seqs):
            x = x[:max_length - 1] + [2] if len(x) > max_length else x
            ids[i, :len(x)] = x
        return ids, (ids != 0).astype(np.int32)


class ToyEncoder(nn.Module):
    """Embedding bag (masked mean) + dense + L2 norm: padding-invariant like the real encoder."""

    dim: int = 16

    @nn.compact
    def __call__(self, ids, mask):
        x = nn.Embed(ToyTokenizer.vocab, 32)(ids)
        m = mask[..., None].astype(jnp.float32)
        x = (x * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
        x = nn.Dense(self.dim)(jnp.tanh(x))
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def toy_model(seed=0):
    module = ToyEncoder()
    params = module.init(jax.random.PRNGKey(seed), jnp.ones((1, 4), jnp.int32),
                         jnp.ones((1, 4), jnp.int32))["params"]
    calls = {"traces": 0}

    def apply_fn(p, ids, mask):
        calls["traces"] += 1  # Python side effect: runs once per trace
        return module.apply({"params": p}, ids, mask)

    return apply_fn, params, calls


def texts(n=45, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(50)]
    return [" ".join(rng.choice(words, rng.integers(1, 30))) for _ in range(n)]


def test_bucketed_equals_unbucketed_and_keeps_order():
    apply_fn, params, _ = toy_model()
    tok, xs = ToyTokenizer(), texts()
    xs[5] = xs[9]  # a duplicate is encoded once but returned at both positions
    kw = dict(tokenizer=tok, apply_fn=apply_fn, params=params, prefix="query: ", max_length=40,
              progress=False, batch_size=12)
    bucketed = E.encode_texts(xs, buckets=(4, 8, 16), **kw)
    flat = E.encode_texts(xs, buckets=(), **kw)
    assert bucketed.shape == (len(xs), 16)
    np.testing.assert_allclose(bucketed, flat, atol=1e-5)
    # Reference: each text alone, unsharded, at full length.
    ids, mask = tok(["query: " + t for t in xs], 40)
    ref = np.asarray(apply_fn(params, ids, mask))
    np.testing.assert_allclose(bucketed, ref, atol=1e-5)
    np.testing.assert_array_equal(bucketed[5], bucketed[9])


def test_one_trace_per_bucket_shape_plus_at_most_one_for_the_last_batch():
    apply_fn, params, calls = toy_model(1)
    xs = texts(60, seed=1)
    out = E.encode_texts(xs, tokenizer=ToyTokenizer(), apply_fn=apply_fn, params=params,
                         max_length=64, buckets=(8, 16, 32), batch_size=10, progress=False)
    sizes = [8, 16, 32, 64]
    used = len(set(E.assign_buckets(ToyTokenizer().lengths(xs), sizes).tolist()))
    # batch 10 -> 16 rows (8 devices); a bucket's partial last batch may take a smaller shape:
    # one trace per shape planned, no more
    plan = E.plan_batches(ToyTokenizer().lengths(xs), sizes, E.bucket_rows(sizes, 0, 10, 8), 8)
    assert calls["traces"] == len({(size, rows) for size, _, rows in plan}) <= 2 * used
    assert out.shape == (60, 16)
    assert E.bucket_lengths(24, (8, 32, 64)) == [8, 24]


def test_token_budget_plan_covers_every_text_once_in_fitting_shapes():
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 120, 500)
    sizes = E.bucket_lengths(96, (16, 32, 64))
    rows = E.bucket_rows(sizes, 1024, 0, 8)
    assert rows == [64, 32, 16, 8]  # 1024 // 96 = 10 -> 8: a multiple of the 8 devices
    plan = E.plan_batches(lengths, sizes, rows, 8)
    members = np.concatenate([chunk for _, chunk, _ in plan])
    np.testing.assert_array_equal(np.sort(members), np.arange(500))
    for i, (size, chunk, n_rows) in enumerate(plan):
        assert n_rows % 8 == 0 and len(chunk) <= n_rows <= rows[sizes.index(size)]
        assert np.all(np.minimum(lengths[chunk], 96) <= size)  # nobody is cut below max_length
        smaller = [s for s in sizes if s < size]
        assert not smaller or np.all(lengths[chunk] > smaller[-1])  # nor padded past its bucket
        if i + 1 < len(plan) and plan[i + 1][0] == size:
            assert len(chunk) == n_rows  # only a bucket's last batch is partial
        else:
            assert n_rows < 2 * len(chunk) or n_rows == 8  # ... and padded to a power of two
    shapes = {(size, n_rows) for size, _, n_rows in plan}
    assert len(shapes) <= 2 * len(sizes)


def test_token_budget_encoding_equals_fixed_batches():
    apply_fn, params, _ = toy_model(4)
    xs = texts(70, seed=4)
    kw = dict(tokenizer=ToyTokenizer(), apply_fn=apply_fn, params=params, max_length=24,
              buckets=(8, 16), progress=False)
    fixed = E.encode_texts(xs, batch_size=16, **kw)
    budget = E.encode_texts(xs, token_budget=256, **kw)
    np.testing.assert_allclose(budget, fixed, atol=1e-5)


def test_cache_hit_skips_encoding(tmp_path):
    apply_fn, params, calls = toy_model(2)
    cache = EmbeddingCache(tmp_path)
    kw = dict(cache=cache, model_id="toy", tokenizer=ToyTokenizer(), apply_fn=apply_fn,
              params=params, prefix="passage: ", max_length=32, progress=False)
    xs = texts(20, seed=2)
    first = E.encode_cached(xs, **kw)
    traces = calls["traces"]
    second = E.encode_cached(xs, **kw)
    assert (cache.hits, cache.misses) == (1, 1)
    assert calls["traces"] == traces
    np.testing.assert_array_equal(first, second)
    # Different prefix, texts or params: a miss.
    E.encode_cached(xs, **{**kw, "prefix": "query: "})
    E.encode_cached(xs[:-1], **kw)
    _, other, _ = toy_model(3)
    assert params_fingerprint(other) != params_fingerprint(params)
    E.encode_cached(xs, **{**kw, "params": other})
    assert cache.misses == 4
