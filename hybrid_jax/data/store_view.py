"""Read-only view of a prepared corpus (format version 1, written by `python -m
hybrid_jax.prepare_data`): numpy memory maps, so opening costs no reading and a host touches only
the pages of the rows it gathers.

Layout (docs/data.md, "The prepared corpus"): tokens/offsets (token ids of every distinct text,
without special tokens or prefix), text_lang, query/positive [E, L] and negative [E, L, K] text ids
(-1 absent), unit [E] with units.txt names, keys.txt, optional teacher scores.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from hybrid_jax.errors import InputError

FORMAT_VERSION = 1
_ARRAYS = ("tokens", "offsets", "text_lang", "query", "positive", "negative", "unit")


@dataclasses.dataclass(frozen=True)
class CorpusView:
    path: pathlib.Path
    meta: dict
    tokens: np.ndarray     # int32 [total_tokens] (memory-mapped)
    offsets: np.ndarray    # int64 [T + 1]
    text_lang: np.ndarray  # int16 [T]
    query: np.ndarray      # int64 [E, L]
    positive: np.ndarray   # int64 [E, L]
    negative: np.ndarray   # int64 [E, L, K]
    unit: np.ndarray       # int64 [E]
    positive_score: np.ndarray | None = None  # float32 [E, L]
    negative_score: np.ndarray | None = None  # float32 [E, L, K]

    @property
    def languages(self) -> list[str]:
        return list(self.meta["languages"])

    @property
    def n_examples(self) -> int:
        return int(self.query.shape[0])

    @property
    def has_scores(self) -> bool:
        return self.positive_score is not None

    def unit_names(self) -> list[str]:
        return (self.path / "units.txt").read_text(encoding="utf-8").splitlines()


def open_corpus(path) -> CorpusView:
    """Memory-map the corpus at `path`; one InputError naming the file when it is not one."""
    path = pathlib.Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise InputError(f"{path}: not a prepared corpus (no meta.json); prepare it with "
                         f"`python -m hybrid_jax.prepare_data`")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{meta_file}: format_version {meta.get('format_version')!r}, this "
                         f"reader reads {FORMAT_VERSION}; prepare the corpus again")
    arrays = {}
    for name in _ARRAYS + (("positive_score", "negative_score") if meta.get("has_scores") else ()):
        file = path / f"{name}.npy"
        if not file.is_file():
            raise InputError(f"{file}: missing from the prepared corpus")
        arrays[name] = np.load(file, mmap_mode="r")
    view = CorpusView(path, meta, **arrays)
    E, L = view.query.shape
    if view.positive.shape != (E, L) or view.negative.shape[:2] != (E, L) \
            or L != len(view.languages) or view.unit.shape != (E,):
        raise InputError(f"{path}: array shapes disagree with each other or with meta.json "
                         f"(query {view.query.shape}, positive {view.positive.shape}, negative "
                         f"{view.negative.shape}, {len(view.languages)} languages)")
    return view
