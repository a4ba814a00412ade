"""Evaluation dataset specs (`config.eval.datasets` entries), checked before anything runs.

    {name, type, path, fold, languages, split, language}
name: the eval/<name>/ folder; type: a LAReQA set (fold train | dev | test | all, languages) or a
BEIR / MIRACL folder (split of the qrels, language tag).  A misspelt key would otherwise be
ignored and, say, evaluate the whole set instead of its test fold.
"""
from __future__ import annotations

from hybrid_jax.errors import InputError

LAREQA_TYPES = ("lareqa", "xquad", "xquad-r", "xquad_r", "mlqa-r", "mlqa_r")
BEIR_TYPES = ("beir", "miracl")
KEYS = ("name", "type", "path", "fold", "languages", "split", "language")
FOLDS = ("train", "dev", "test", "all")


def check_spec(spec) -> dict:
    """The spec as a plain dict; InputError naming the entry and the problem."""
    spec = spec.to_dict() if hasattr(spec, "to_dict") else spec
    if not isinstance(spec, dict):
        raise InputError(f"eval.datasets: {spec!r} is not a dataset spec (an object with name, "
                         f"type and path)")
    where = f"eval.datasets entry {spec.get('name', spec.get('path', '?'))!r}"
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown} (known: {', '.join(KEYS)})")
    missing = [k for k in ("name", "type", "path") if not spec.get(k)]
    if missing:
        raise InputError(f"{where}: no {', '.join(repr(k) for k in missing)}")
    kind = str(spec["type"]).lower()
    if kind not in LAREQA_TYPES + BEIR_TYPES:
        raise InputError(f"{where}: unknown type {kind!r} (expected one of "
                         f"{LAREQA_TYPES + BEIR_TYPES})")
    if kind in LAREQA_TYPES and (spec.get("fold") or "all") not in FOLDS:
        raise InputError(f"{where}: fold {spec['fold']!r} is not one of {FOLDS}")
    return spec
