"""Flax BERT-family encoder with the pooling heads retrievers use.

Parameters are float32; `compute_dtype='bfloat16'` runs matmuls on bfloat16 operands accumulated
in float32 (TPU, GPU, and CPUs with AVX512-BF16) while layer norms, softmax and pooling stay
float32 for stability.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hybrid_jax.models import lora
from hybrid_jax.models.config import EncoderConfig

_INIT = nn.initializers.normal(stddev=0.02)


class Dense(nn.Module):
    """x @ kernel + bias with the matmul's operands in `dtype`, accumulated in float32.

    The same parameters (names, shapes, initialisers) as `nn.Dense(param_dtype=float32)`.  Why
    not nn.Dense: its bfloat16 matmul also returns bfloat16, which XLA:CPU runs no faster than
    float32, while bfloat16 operands with a float32 result use AVX512-BF16 at about twice the
    float32 rate (measured on this Zen 4 CPU; accelerators accumulate in float32 anyway).  The
    result is cast back to `dtype`, so activations keep the memory of the compute dtype.

    `lora_rank > 0` adds a LoRA adapter (models/lora.py): params `lora_a` [in, r] and `lora_b`
    [r, out], and `lora_scale * dropout(x) @ lora_a @ lora_b` added to the product.  The adapter
    runs beside the kernel rather than merged into it, so a frozen kernel gets no weight gradient.
    """
    features: int
    dtype: jnp.dtype
    lora_rank: int = 0
    lora_scale: float = 0.0
    lora_dropout: float = 0.0

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        kernel = self.param("kernel", _INIT, (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        y = _matmul(x, kernel, self.dtype) + bias.astype(jnp.float32)
        if self.lora_rank:
            y = y + self.lora_scale * self._adapter(x, deterministic)
        return y.astype(self.dtype)

    def _adapter(self, x, deterministic: bool):
        a = self.param("lora_a", lora.init_a, (x.shape[-1], self.lora_rank), jnp.float32)
        b = self.param("lora_b", nn.initializers.zeros_init(), (self.lora_rank, self.features),
                       jnp.float32)
        x = Dropout(self.lora_dropout, name="lora_dropout")(x, deterministic=deterministic)
        return _matmul(_matmul(x, a, self.dtype).astype(self.dtype), b, self.dtype)


def _matmul(x, kernel, dtype):
    """x @ kernel on `dtype` operands, float32 result."""
    return jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype),
                               (((x.ndim - 1,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)


def _dense(features: int, name: str, dtype, config: EncoderConfig | None = None,
           target: str = "") -> Dense:
    """A dense layer; with a LoRA adapter when `config` enables one on `target`."""
    if config is not None and config.lora_rank and target in config.lora_targets:
        return Dense(features, dtype, config.lora_rank, config.lora_scale, config.lora_dropout,
                     name=name)
    return Dense(features, dtype, name=name)


def _layer_norm(config: EncoderConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=jnp.float32, name=name)


def _mix32(x):
    """lowbias32 (C. Wellons' hash prospector): an invertible uint32 mixer with full avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def dropout_keep_mask(key, shape, rate: float):
    """Boolean keep-mask with P(drop) = round(rate * 2^32) / 2^32, from a counter-based hash.

    Each element's 32-bit word is mix(mix(index ^ k0) + k1), with (k0, k1) drawn from `key`:
    element-wise integer ops that XLA fuses into the consumer, where `jax.random.bits` makes a
    separate random-number pass with its own buffer (measured on CPU: that pass was ~16% of the
    train step).  Masks of different keys or elements are independent to within the tests'
    statistical power (tests/test_models.py); not for anything needing cryptographic strength.
    """
    size = math.prod(shape)
    if size >= 2 ** 32:
        raise ValueError(f"dropout over {size} elements: the mask's counter is 32-bit")
    k = jax.random.bits(key, (2,), jnp.uint32)
    counter = jax.lax.iota(jnp.uint32, size).reshape(shape)
    words = _mix32(_mix32(counter ^ k[0]) + k[1])
    return words >= jnp.uint32(_drop_threshold(rate))


def _drop_threshold(rate: float) -> int:
    return min(int(round(rate * 2.0 ** 32)), 2 ** 32 - 1)


class Dropout(nn.Module):
    """Inverted dropout on `dropout_keep_mask`; kept values are scaled by 1 / P(keep), so the
    expectation is exact.  The key comes from the 'dropout' rng stream like `nn.Dropout`'s."""
    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate <= 0.0:
            return x
        if self.rate >= 1.0:
            return jnp.zeros_like(x)
        keep = dropout_keep_mask(self.make_rng("dropout"), x.shape, self.rate)
        scale = jnp.asarray(2.0 ** 32 / (2.0 ** 32 - _drop_threshold(self.rate)), x.dtype)
        return jnp.where(keep, x * scale, jnp.zeros((), x.dtype))


class SelfAttention(nn.Module):
    """x: [batch * length, hidden] token rows (see Encoder); attention per sequence."""
    config: EncoderConfig

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        c = self.config
        dtype = jnp.dtype(c.compute_dtype)
        head_dim = c.hidden_size // c.num_heads
        batch, length = bias.shape[0], bias.shape[-1]

        # Heads-first [batch, heads, length, head_dim] operands: the two attention products are
        # then batched matmuls over contiguous heads, which XLA:CPU ran faster than the
        # [batch, length, heads, ...] einsums (attention block forward 1.3-1.5x, gradient in the
        # same range, encoding ~1.1x; docs/evaluation.md).
        def heads(name):
            y = _dense(c.hidden_size, name, dtype, c, name)(x, deterministic)
            return y.reshape(batch, length, c.num_heads, head_dim).transpose(0, 2, 1, 3)

        q, k, v = heads("query"), heads("key"), heads("value")
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores * (head_dim ** -0.5) + bias
        probs = jax.nn.softmax(scores, axis=-1)
        probs = Dropout(c.attention_dropout)(probs, deterministic=deterministic)
        context = jnp.einsum("bhqk,bhkd->bhqd", probs.astype(dtype), v,
                             preferred_element_type=jnp.float32)
        context = context.transpose(0, 2, 1, 3).reshape(batch * length, c.hidden_size)
        return _dense(c.hidden_size, "output", dtype, c, "attention_output")(context,
                                                                             deterministic)


class Layer(nn.Module):
    config: EncoderConfig

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        c = self.config
        dtype = jnp.dtype(c.compute_dtype)
        attn = SelfAttention(c, name="attention")(x, bias, deterministic)
        attn = Dropout(c.hidden_dropout)(attn, deterministic=deterministic)
        x = _layer_norm(c, "attention_norm")(x + attn)
        h = _dense(c.intermediate_size, "intermediate", dtype, c, "intermediate")(x, deterministic)
        h = nn.gelu(h, approximate=False)  # BERT's exact (erf) GELU
        h = _dense(c.hidden_size, "output", dtype, c, "output")(h, deterministic)
        h = Dropout(c.hidden_dropout)(h, deterministic=deterministic)
        return _layer_norm(c, "output_norm")(x + h)


def _remat(layer_cls, policy: str):
    """The layer class, rematerialised in the backward pass as `policy` says (config.py's
    REMAT_POLICIES): less activation memory for one more forward pass of the layers.  The
    parameter tree and the dropout masks are unchanged (the masks hash the same keys again)."""
    if policy == "none":
        return layer_cls
    # argument 3 of Layer.__call__(self, x, bias, deterministic) is a Python bool
    return nn.remat(layer_cls, static_argnums=(3,))


class Encoder(nn.Module):
    """Token ids + attention mask -> L2-normalised sentence embedding [batch, hidden]."""
    config: EncoderConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask, deterministic: bool = True):
        c = self.config
        mask = attention_mask.astype(jnp.int32)
        if c.arch == "xlm-roberta":
            # RoBERTa numbers real tokens from pad_token_id + 1 and gives padding pad_token_id.
            positions = jnp.cumsum(mask, axis=1) * mask + c.pad_token_id
        else:
            positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        word = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=_INIT, name="word_embeddings")
        pos = nn.Embed(c.max_position_embeddings, c.hidden_size, embedding_init=_INIT,
                       name="position_embeddings")
        types = self.param("token_type_embeddings", _INIT, (c.type_vocab_size, c.hidden_size))
        # Token rows [batch * length, hidden] from here to pooling: every dense layer is then a
        # plain 2-D matmul, whose weight gradient XLA:CPU runs faster than the 3-D
        # form's (measured: ~10% of the train step).
        batch, length = input_ids.shape
        x = word(input_ids.reshape(-1)) + pos(positions.reshape(-1)) + types[0]
        x = _layer_norm(c, "embeddings_norm")(x)
        x = Dropout(c.hidden_dropout)(x, deterministic=deterministic)
        x = x.astype(jnp.dtype(c.compute_dtype))

        # Additive mask shared by all heads: padded keys get a large negative score.
        bias = jnp.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(jnp.float32)
        layer = _remat(Layer, c.remat)
        for i in range(c.num_layers):
            x = layer(c, name=f"layer_{i}")(x, bias, deterministic).astype(x.dtype)
        x = x.astype(jnp.float32).reshape(batch, length, c.hidden_size)

        if c.pooling == "mean":
            weights = mask.astype(jnp.float32)[:, :, None]
            pooled = (x * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), 1.0)
        else:
            pooled = x[:, 0]
        if c.with_pooler:
            pooler_out = jnp.tanh(_dense(c.hidden_size, "pooler", jnp.float32)(x[:, 0]))
            if c.pooling == "pooler":
                pooled = pooler_out
        return l2_normalize(pooled)


def l2_normalize(x, eps: float = 1e-12):
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))
