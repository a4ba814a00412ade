"""TREC run and qrels files, so results can be re-checked with trec_eval / ir_measures.

run.trec:   `query_id Q0 doc_id rank score tag`   (rank 1-based, best first)
qrels.trec: `query_id 0 doc_id grade`
The format is whitespace-separated: whitespace inside an id is written as "_".
"""
from __future__ import annotations

import pathlib
from typing import Iterable

from hybrid_jax.errors import InputError


def _check_id(x: str, what: str) -> str:
    if not x:
        raise InputError(f"TREC {what} id is empty")
    return "_".join(str(x).split()) if any(ch.isspace() for ch in str(x)) else str(x)


def write_run(path, run: Iterable[tuple[str, list[str], Iterable[float]]], tag: str) -> None:
    tag = _check_id(tag.replace(" ", "_") or "run", "tag")
    with open(path, "w", encoding="utf-8") as f:
        for qid, docs, scores in run:
            qid = _check_id(qid, "query")
            for rank, (doc, score) in enumerate(zip(docs, scores), 1):
                f.write(f"{qid} Q0 {_check_id(doc, 'document')} {rank} {float(score):.6f} {tag}\n")


def write_qrels(path, qrels: dict[str, dict[str, int]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for qid, docs in qrels.items():
            for doc, grade in docs.items():
                f.write(f"{_check_id(qid, 'query')} 0 {_check_id(doc, 'document')} {int(grade)}\n")


def read_run(path) -> dict[str, list[tuple[str, int, float]]]:
    out: dict[str, list[tuple[str, int, float]]] = {}
    for n, line in enumerate(pathlib.Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) != 6:
            raise InputError(f"{path}:{n}: a TREC run line has 6 fields, got {len(parts)}")
        try:
            out.setdefault(parts[0], []).append((parts[2], int(parts[3]), float(parts[4])))
        except ValueError as e:
            raise InputError(f"{path}:{n}: bad rank or score ({e})") from e
    return out


def read_qrels(path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for n, line in enumerate(pathlib.Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) != 4:
            raise InputError(f"{path}:{n}: a TREC qrels line has 4 fields, got {len(parts)}")
        try:
            out.setdefault(parts[0], {})[parts[2]] = int(parts[3])
        except ValueError as e:
            raise InputError(f"{path}:{n}: grade {parts[3]!r} is not an integer") from e
    return out
