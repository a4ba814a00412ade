"""A model ready to encode text: module + params + tokenizer + per-role prefixes."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from hybrid_jax.models.dual_encoder import DualEncoder
from hybrid_jax.models.tokenizer import Tokenizer


@dataclasses.dataclass
class ModelBundle:
    name: str                 # spec string or run id; part of embedding-cache keys
    module: DualEncoder
    params: Any               # DualEncoder params ({'encoder': ...} or both towers)
    tokenizer: Tokenizer
    prefixes: dict            # role -> text prefix, e.g. {'query': 'query: ', 'passage': 'passage: '}

    @property
    def config(self):
        return self.module.config

    def prefix(self, role: str) -> str:
        return self.prefixes.get(role, "")

    def with_compute_dtype(self, dtype: str) -> "ModelBundle":
        """The same model computing in `dtype` for inference ('' or its own dtype: itself).

        Floating params are cast once here, not per step (bfloat16 halves the weights' memory
        traffic); layer norms, softmax and pooling still run in float32 (see Encoder).  The
        name carries the dtype, so embedding caches never mix the two precisions.
        """
        if not dtype or dtype == self.config.compute_dtype:
            return self
        module = self.module.clone(config=self.config.replace(compute_dtype=dtype))
        params = jax.tree.map(
            lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
            self.params)
        return dataclasses.replace(self, name=f"{self.name}@{dtype}", module=module,
                                   params=params)

    def apply_fn(self, role: str):
        """jitted (params, input_ids, attention_mask) -> L2-normalised embeddings [B, D]."""
        return _encode_fn(self.module, role)


@functools.lru_cache(maxsize=16)
def _encode_fn(module: DualEncoder, role: str):
    # Cached per (architecture, role): bundles of the same model share compiled code.
    @jax.jit
    def apply(params, input_ids, attention_mask):
        return module.apply({"params": params}, input_ids, attention_mask, role,
                            method=DualEncoder.encode)
    return apply
