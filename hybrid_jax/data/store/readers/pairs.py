"""`pairs_jsonl:<file>`: the parallel-pairs JSONL of hybrid_jax/data/pairs_jsonl.py, streamed.

Records are validated by pairs_jsonl's own rules. Optional teacher scores (FlagEmbedding's shape,
keyed by language like `negatives`): "pos_scores": {"en": 0.93} for the positive, "neg_scores":
{"en": [0.41, 0.12]} (or one number), one per negative of that language.
"""
from __future__ import annotations

import json
import pathlib
from typing import Iterator

from hybrid_jax.data import pairs_jsonl
from hybrid_jax.data.store.readers.base import (READERS, Record, scores_of, submit_all,
                                                 text_lines)
from hybrid_jax.errors import InputError


@READERS.register("pairs_jsonl")
def read_pairs(path: str, writer, options) -> None:
    submit_all(writer, records(pathlib.Path(path)), options)


def records(path: pathlib.Path) -> Iterator[Record]:
    if not path.is_file():
        raise InputError(f"{path}: parallel-pairs file does not exist")
    for where, line in text_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: malformed JSON ({e})") from e
        e = pairs_jsonl._example(record, where)
        pos, neg = _scores(e, record, where)
        scored = bool(pos or neg)
        yield Record(e.key, e.article, e.queries, e.passages, e.negatives, where,
                     pos if scored else None, neg if scored else None)


def _scores(example, record, where: str) -> tuple[dict, dict]:
    """(language -> positive's score, language -> negatives' scores): pairs_jsonl's own, where
    its examples carry them, else read here by the same rules."""
    if hasattr(example, "positive_scores"):
        return (dict(example.positive_scores),
                {l: list(v) for l, v in example.negative_scores.items()})
    pos = record.get("pos_scores")
    if isinstance(pos, dict) and any(isinstance(v, list) for v in pos.values()):
        raise InputError(f"{where}: pos_scores must map a language to one number")
    pos = scores_of(pos, where, "pos_scores", {l: 1 for l in example.passages if l in (pos or {})})
    neg = scores_of(record.get("neg_scores"), where, "neg_scores",
                    {l: len(v) for l, v in example.negatives.items()})
    return {l: v[0] for l, v in pos.items()}, neg
