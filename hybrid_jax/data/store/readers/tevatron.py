"""`tevatron:<lang>=<file>,<lang>=<file>,...`: Tevatron or FlagEmbedding training JSONL, one file
per language, streamed in lockstep.

The files are parallel: line n of every file is the same query in its language. Tevatron records
({"query_id", "query", "positive_passages": [{"docid", "title", "text"}], "negative_passages":
[...]}) are linked by `query_id`, which must agree across the files and becomes the example key;
FlagEmbedding records ({"query", "pos": [text], "neg": [text], "pos_scores", "neg_scores"}) have
no id, so they are linked by line number and the key is "line<n>". A passage with a title is the
text "<title> <text>". The first positive is the example's positive (further ones are dropped);
every negative is kept. `pos_scores` / `neg_scores` (one float per positive / negative) become the
teacher scores.
"""
from __future__ import annotations

import itertools
import json
import pathlib

from hybrid_jax.data.store.readers.base import READERS, Record, submit_all, text_lines
from hybrid_jax.errors import InputError


def language_files(spec: str) -> dict[str, pathlib.Path]:
    files = {}
    for part in spec.split(","):
        lang, sep, path = part.partition("=")
        if not sep or not lang or not path:
            raise InputError(f"--source tevatron:{spec}: expected <lang>=<file>,<lang>=<file>")
        if lang in files:
            raise InputError(f"--source tevatron:{spec}: language {lang!r} given twice")
        files[lang] = pathlib.Path(path)
        if not files[lang].is_file():
            raise InputError(f"{path}: Tevatron file for {lang!r} does not exist")
    return files


@READERS.register("tevatron")
def read_tevatron(spec: str, writer, options) -> None:
    submit_all(writer, records(language_files(spec)), options)


def records(files: dict[str, pathlib.Path]):
    streams = [text_lines(p) for p in files.values()]
    for n, lines in enumerate(itertools.zip_longest(*streams), 1):
        if any(line is None for line in lines):
            ended = [str(p) for p, line in zip(files.values(), lines) if line is None]
            raise InputError(f"{', '.join(ended)}: ends at line {n - 1}, before the other "
                             f"language files (they must be parallel, line by line)")
        parsed = {lang: _parse(line, where) for lang, (where, line) in zip(files, lines)}
        ids = {p[0] for p in parsed.values()}
        if len(ids) > 1:
            raise InputError(f"{lines[0][0]}: query_id differs across the language files "
                             f"({sorted(map(str, ids))})")
        key = parsed[next(iter(files))][0] or f"line{n}"
        where = lines[0][0]
        scored = any(p[4] is not None or p[5] for p in parsed.values())
        yield Record(key, key, {l: p[1] for l, p in parsed.items()},
                     {l: p[2] for l, p in parsed.items()},
                     {l: p[3] for l, p in parsed.items() if p[3]}, where,
                     {l: p[4] for l, p in parsed.items() if p[4] is not None} if scored else None,
                     {l: p[5] for l, p in parsed.items() if p[5]} if scored else None)


def _parse(line: str, where: str):
    """(query_id or '', query, positive, negatives, positive's score or None, neg scores)."""
    try:
        r = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: malformed JSON ({e})") from e
    if not isinstance(r, dict) or not isinstance(r.get("query"), str) or not r["query"].strip():
        raise InputError(f"{where}: expected an object with a non-empty 'query' text")
    pos = _passages(r, ("positive_passages", "pos"), where)
    if not pos:
        raise InputError(f"{where}: no positive passage ('positive_passages' or 'pos')")
    neg = _passages(r, ("negative_passages", "neg"), where)
    pos_scores = _floats(r.get("pos_scores"), len(pos), where, "pos_scores")
    neg_scores = _floats(r.get("neg_scores"), len(neg), where, "neg_scores")
    qid = str(r["query_id"]) if "query_id" in r else ""
    return (qid, r["query"], pos[0], tuple(neg), pos_scores[0] if pos_scores else None,
            neg_scores)


def _passages(r: dict, fields, where: str) -> list[str]:
    field = next((f for f in fields if f in r), None)
    value = r.get(field, [])
    if not isinstance(value, list):
        raise InputError(f"{where}: {field!r} must be a list")
    out = []
    for i, p in enumerate(value):
        if isinstance(p, dict):
            text, title = p.get("text"), p.get("title") or ""
            text = f"{title} {text}" if title and isinstance(text, str) else text
        else:
            text = p
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"{where}: {field}[{i}] has no text")
        out.append(text)
    return out


def _floats(value, count: int, where: str, field: str) -> list[float]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) != count or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
        raise InputError(f"{where}: {field!r} must be a list of {count} numbers")
    return [float(x) for x in value]
