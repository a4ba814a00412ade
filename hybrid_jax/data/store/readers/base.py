"""What every reader shares: the registry, options, and submitting blocks of text records."""
from __future__ import annotations

import dataclasses
import itertools
from typing import Iterable, Iterator, Mapping, Sequence

from hybrid_jax.errors import InputError
from hybrid_jax.registry import Registry

# name -> read(path: str, writer, options: Options); path is the text after "<name>:".
READERS = Registry("prepare_data --source")
BLOCK = 2048  # records whose texts go to the writer in one call (amortises hashing overhead)


@dataclasses.dataclass(frozen=True)
class Options:
    max_negatives: int = 0   # keep at most this many negatives per example and language (0: all)


def parse_source(spec: str) -> tuple[str, str]:
    """'<reader>:<path>' -> (reader, path), the reader checked against the registry."""
    name, sep, path = spec.partition(":")
    if not sep or not path:
        raise InputError(f"--source {spec!r}: expected <reader>:<path>, reader one of "
                         f"{', '.join(READERS.names())}")
    READERS.get(name, where=f"--source {spec!r}: reader")
    return name, path


@dataclasses.dataclass(frozen=True)
class Record:
    """One example in text form, as a reader found it."""
    key: str
    unit: str
    queries: Mapping[str, str]
    passages: Mapping[str, str]
    negatives: Mapping[str, Sequence[str]]
    where: str
    pos_scores: Mapping[str, float] | None = None          # language -> teacher score
    neg_scores: Mapping[str, Sequence[float]] | None = None  # language -> one per negative


def submit(writer, records: Sequence[Record], options: Options) -> None:
    """All texts of `records` in one writer call, then the examples in order."""
    cap = options.max_negatives or None
    items = []
    for r in records:
        items += r.queries.items()
        items += r.passages.items()
        items += [(l, t) for l, texts in r.negatives.items() for t in texts[:cap]]
    ids = iter(writer.text_ids(items).tolist())
    for r in records:
        query = {l: next(ids) for l in r.queries}
        positive = {l: next(ids) for l in r.passages}
        negatives = {l: [next(ids) for _ in texts[:cap]] for l, texts in r.negatives.items()}
        scores = None
        if r.pos_scores is not None or r.neg_scores is not None:
            scores = (dict(r.pos_scores or {}),
                      {l: list(v)[:cap] for l, v in (r.neg_scores or {}).items()})
        writer.add_example(r.key, r.unit, query, positive, negatives, scores, r.where)


def submit_all(writer, records: Iterable[Record], options: Options) -> None:
    for block in blocks(records, BLOCK):
        submit(writer, block, options)


def blocks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while block := list(itertools.islice(it, size)):
        yield block


def scores_of(value, where: str, field: str, count_of: Mapping[str, int]) -> dict:
    """Teacher scores language -> float or list of floats, one per text of that language
    (`count_of`); a single positive takes a number or a one-element list."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: {field!r} must be an object language -> scores")
    out = {}
    for lang, v in value.items():
        v = [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        if not isinstance(v, list) or not all(isinstance(x, (int, float))
                                              and not isinstance(x, bool) for x in v):
            raise InputError(f"{where}: {field}[{lang!r}] must be a number or a list of numbers")
        if len(v) != count_of.get(lang, 0):
            raise InputError(f"{where}: {field}[{lang!r}] has {len(v)} scores for "
                             f"{count_of.get(lang, 0)} texts")
        out[lang] = [float(x) for x in v]
    return out


def text_lines(path) -> Iterator[tuple[str, str]]:
    """(\"file:line\", text) of each line of a UTF-8 file, read as a stream."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            where = f"{path}:{n}"
            try:
                yield where, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{where}: not UTF-8 text ({e})") from e
