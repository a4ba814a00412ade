"""A model ready to encode text: module + params + tokenizer + per-role prefixes."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax

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
