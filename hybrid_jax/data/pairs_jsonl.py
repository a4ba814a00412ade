"""A generic parallel-pairs format for users' own corpora (JSON Lines, one record per line):

    {"id": "q17", "query": {"en": "...", "de": "..."}, "passage": {"en": "...", "de": "...", "fr": "..."},
     "article": "optional split unit", "negatives": {"en": ["...", "..."], "de": "..."}}

`id` is unique; `query` and `passage` map language codes to text and may cover different
languages (a language with only a passage can serve as a passage language in cross batches).
Records sharing an `article` go to the same split fold; without it the id is the unit.
`negatives` (optional; mMARCO triples have one per language) maps a language to one hard-negative
text or a list of them, for pairs whose passage is in that language (`data.negative_source=
'from_data'`).
Teacher scores for distillation (optional; FlagEmbedding's `pos_scores` / `neg_scores`, one per
language like the texts they score):

    "pos_scores": {"en": 0.91, "de": 0.88}, "neg_scores": {"en": [0.42, 0.17], "de": 0.35}

`pos_scores[L]` is the teacher's score of the query against `passage[L]`; `neg_scores[L]` holds
one score per text of `negatives[L]`, in the same order. Any language subset may be scored.
"""
from __future__ import annotations

import json
import math
import pathlib

from hybrid_jax.data.examples import ParallelExample
from hybrid_jax.errors import InputError


def load_pairs_jsonl(path) -> list[ParallelExample]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: parallel-pairs file does not exist")
    examples, seen = [], set()
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: malformed JSON ({e})") from e
            examples.append(_example(record, where))
            if examples[-1].key in seen:
                raise InputError(f"{where}: duplicate id {examples[-1].key!r}")
            seen.add(examples[-1].key)
    if not examples:
        raise InputError(f"{path}: no records")
    return examples


def _example(record, where: str) -> ParallelExample:
    if not isinstance(record, dict):
        raise InputError(f"{where}: each line must be a JSON object")
    if "id" not in record:
        raise InputError(f"{where}: missing key 'id'")
    texts = {}
    for field in ("query", "passage"):
        value = record.get(field)
        if not isinstance(value, dict) or not value:
            raise InputError(f"{where}: {field!r} must be a non-empty object language -> text")
        for lang, text in value.items():
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{where}: {field}[{lang!r}] must be non-empty text")
        texts[field] = value
    key = str(record["id"])
    negatives = _negatives(record.get("negatives", {}), where)
    return ParallelExample(key, str(record.get("article", key)), texts["query"], texts["passage"],
                           negatives, _positive_scores(record, texts["passage"], where),
                           _negative_scores(record, negatives, where))


def _negatives(value, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise InputError(f"{where}: 'negatives' must be an object language -> text or list of "
                         f"texts, got {type(value).__name__}")
    out = {}
    for lang, texts in value.items():
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
            raise InputError(f"{where}: negatives[{lang!r}] must be non-empty text or a list of "
                             f"non-empty texts")
        if texts:
            out[lang] = tuple(texts)
    return out


def _score(value, where: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: {field} must be a finite number, got {json.dumps(value)}")
    return float(value)


def _positive_scores(record, passages, where: str) -> dict[str, float]:
    value = record.get("pos_scores", {})
    if not isinstance(value, dict):
        raise InputError(f"{where}: 'pos_scores' must be an object language -> score, got "
                         f"{type(value).__name__}")
    for lang in value:
        if lang not in passages:
            raise InputError(f"{where}: pos_scores[{lang!r}] scores no passage (the record has "
                             f"passages in {sorted(passages)})")
    return {lang: _score(v, where, f"pos_scores[{lang!r}]") for lang, v in value.items()}


def _negative_scores(record, negatives, where: str) -> dict[str, tuple[float, ...]]:
    value = record.get("neg_scores", {})
    if not isinstance(value, dict):
        raise InputError(f"{where}: 'neg_scores' must be an object language -> score or list of "
                         f"scores, got {type(value).__name__}")
    out = {}
    for lang, scores in value.items():
        scores = scores if isinstance(scores, list) else [scores]
        given = len(negatives.get(lang, ()))
        if len(scores) != given:
            raise InputError(f"{where}: neg_scores[{lang!r}] has {len(scores)} scores for "
                             f"{given} negatives in {lang!r}")
        if scores:
            out[lang] = tuple(_score(v, where, f"neg_scores[{lang!r}][{j}]")
                              for j, v in enumerate(scores))
    return out


def write_pairs_jsonl(examples, path) -> None:
    with pathlib.Path(path).open("w", encoding="utf-8") as f:
        for e in examples:
            record = {"id": e.key, "article": e.article, "query": dict(e.queries),
                      "passage": dict(e.passages)}
            if e.negatives:
                record["negatives"] = {l: list(v) for l, v in e.negatives.items()}
            if e.positive_scores:
                record["pos_scores"] = dict(e.positive_scores)
            if e.negative_scores:
                record["neg_scores"] = {l: list(v) for l, v in e.negative_scores.items()}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
