"""Dual encoder: one pytree serves tied towers (one encoder) and untied ones (two encoders)."""
from __future__ import annotations

import flax.linen as nn

from hybrid_jax.models.config import EncoderConfig
from hybrid_jax.models.encoder import Encoder

ROLES = ("query", "passage")


class DualEncoder(nn.Module):
    """Params: {'encoder': ...} when tied, {'query_encoder': ..., 'passage_encoder': ...} untied."""
    config: EncoderConfig
    tied: bool = True

    def setup(self):
        if self.tied:
            self.encoder = Encoder(self.config)
        else:
            self.query_encoder = Encoder(self.config)
            self.passage_encoder = Encoder(self.config)

    def encode(self, input_ids, attention_mask, role: str, deterministic: bool = True):
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if self.tied:
            tower = self.encoder
        else:
            tower = self.query_encoder if role == "query" else self.passage_encoder
        return tower(input_ids, attention_mask, deterministic)

    def __call__(self, query_ids, query_mask, passage_ids, passage_mask,
                 deterministic: bool = True):
        q = self.encode(query_ids, query_mask, "query", deterministic)
        p = self.encode(passage_ids, passage_mask, "passage", deterministic)
        return q, p


def tower_names(tied: bool) -> tuple[str, ...]:
    return ("encoder",) if tied else ("query_encoder", "passage_encoder")


def tie_or_untie(encoder_params, tied: bool) -> dict:
    """Dual-encoder params from one encoder's params (both towers start from the same weights)."""
    return {name: encoder_params for name in tower_names(tied)}
