"""BEIR / MIRACL-format retrieval corpora: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

corpus.jsonl lines: {"_id" (or "docid"), "title" (optional), "text"}; the document text is
"title text" when a title is present. queries.jsonl lines: {"_id" (or "query_id"), "text"}.
qrels/<split>.tsv: `query-id <TAB> corpus-id <TAB> score` with an optional header line; graded
scores are kept (nDCG uses them), a score <= 0 means judged not relevant. Queries without a
positive judgement in the split are dropped.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

from hybrid_jax.errors import InputError


@dataclasses.dataclass
class BeirDataset:
    name: str
    query_ids: list[str]
    query_texts: list[str]
    doc_ids: list[str]
    doc_texts: list[str]
    qrels: dict[str, dict[str, int]]   # query id -> doc id -> grade (> 0 only)
    language: str = ""


def _read_jsonl(path: pathlib.Path, id_keys: tuple[str, ...]) -> list[tuple[str, dict]]:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from e
            key = next((k for k in id_keys if k in obj), None)
            if not isinstance(obj, dict) or key is None or "text" not in obj:
                raise InputError(f"{path}:{n}: needs an id field ({' or '.join(id_keys)}) "
                                 f"and a 'text' field")
            rows.append((str(obj[key]), obj))
    return rows


def read_qrels(path: pathlib.Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t") if "\t" in line else line.split()
            if not parts or not line.strip():
                continue
            if n == 1 and parts[0] in ("query-id", "query_id", "qid"):
                continue  # header
            if len(parts) == 4:      # TREC qrels: qid iteration docid grade
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) != 3:
                raise InputError(f"{path}:{n}: expected 'query-id<TAB>corpus-id<TAB>score', "
                                 f"got {len(parts)} fields")
            try:
                grade = int(float(parts[2]))
            except ValueError as e:
                raise InputError(f"{path}:{n}: score {parts[2]!r} is not a number") from e
            if grade > 0:
                qrels.setdefault(parts[0], {})[parts[1]] = grade
    return qrels


def load_beir(directory, split: str = "test", name: str | None = None,
              language: str = "") -> BeirDataset:
    d = pathlib.Path(directory)
    if not d.is_dir():
        raise InputError(f"{d}: BEIR dataset directory not found")
    corpus = _read_jsonl(d / "corpus.jsonl", ("_id", "docid"))
    queries = _read_jsonl(d / "queries.jsonl", ("_id", "query_id"))
    qrels = read_qrels(d / "qrels" / f"{split}.tsv")
    doc_ids = [i for i, _ in corpus]
    if len(set(doc_ids)) != len(doc_ids):
        raise InputError(f"{d / 'corpus.jsonl'}: duplicate document ids")
    known = set(doc_ids)
    missing = {doc for rel in qrels.values() for doc in rel} - known
    if missing:
        raise InputError(f"{d / 'qrels' / (split + '.tsv')}: {len(missing)} judged document ids "
                         f"are not in corpus.jsonl (e.g. {sorted(missing)[0]!r})")
    qtext = {i: str(o["text"]) for i, o in queries}
    unknown = set(qrels) - set(qtext)
    if unknown:
        raise InputError(f"{d / 'qrels' / (split + '.tsv')}: query ids not in queries.jsonl "
                         f"(e.g. {sorted(unknown)[0]!r})")
    qids = [i for i, _ in queries if i in qrels]
    texts = [(f"{o['title']} {o['text']}" if o.get("title") else str(o["text"])).strip()
             for _, o in corpus]
    return BeirDataset(name=name or d.name, query_ids=qids, query_texts=[qtext[i] for i in qids],
                       doc_ids=doc_ids, doc_texts=texts, qrels=qrels, language=language)
