"""`mmarco:<dir>`: mMARCO's layout (MS MARCO passage ranking translated into many languages).

    <dir>/queries/<language>_queries.train.tsv     qid<TAB>query text, per language
    <dir>/collections/<language>_collection.tsv    pid<TAB>passage text, per language
    <dir>/triples.train.ids.small.tsv              qid<TAB>positive pid<TAB>negative pid
                                                   (or qidpidtriples.train.full.2.tsv)
<language> is mMARCO's name ("english", "german", ...: stored as its ISO code "en", "de", ...) or
already a code; a language needs both files. Ids are non-negative integers shared by all languages.

One example per qid, in order of its first triple; key and unit are the qid. Its positive is the
positive pid of its first triple (a query with several positives keeps the first); its negatives
are the distinct negative pids of its triples in file order, minus any of its positives. A qid or
pid missing from one language's files is absent (-1) in that language.
Streaming: the triples become numpy id arrays; each collection and query file is read line by line
and only the texts some triple needs are kept, as a pid -> text id array per language.
"""
from __future__ import annotations

import pathlib

import numpy as np

from hybrid_jax.data.store.readers.base import READERS, blocks, text_lines
from hybrid_jax.errors import InputError

TRIPLES = ("triples.train.ids.small.tsv", "qidpidtriples.train.full.2.tsv")
CODES = {"arabic": "ar", "chinese": "zh", "dutch": "nl", "english": "en", "french": "fr",
         "german": "de", "hindi": "hi", "indonesian": "id", "italian": "it", "japanese": "ja",
         "portuguese": "pt", "russian": "ru", "spanish": "es", "vietnamese": "vi"}
BLOCK = 8192


def layout(root: pathlib.Path) -> tuple[pathlib.Path, dict[str, tuple[pathlib.Path, pathlib.Path]]]:
    """(triples file, language code -> (queries file, collection file))."""
    if not root.is_dir():
        raise InputError(f"{root}: mMARCO directory does not exist")
    triples = next((root / n for n in TRIPLES if (root / n).is_file()), None)
    if triples is None:
        raise InputError(f"{root}: no id-triples file ({' or '.join(TRIPLES)})")
    languages = {}
    for q in sorted((root / "queries").glob("*_queries.train.tsv")):
        name = q.name[:-len("_queries.train.tsv")]
        c = root / "collections" / f"{name}_collection.tsv"
        if c.is_file():
            languages[CODES.get(name, name)] = (q, c)
    if not languages:
        raise InputError(f"{root}: no language with both queries/<lang>_queries.train.tsv and "
                         f"collections/<lang>_collection.tsv")
    return triples, dict(sorted(languages.items()))


@READERS.register("mmarco")
def read_mmarco(path: str, writer, options) -> None:
    triples, languages = layout(pathlib.Path(path))
    qid, pos, neg_start, neg = grouped(read_triples(triples), options.max_negatives)
    pid_needed = np.zeros(int(max(pos.max(), neg.max(initial=0))) + 1, bool)
    pid_needed[pos] = True
    pid_needed[neg] = True
    qid_needed = np.zeros(int(qid.max()) + 1, bool)
    qid_needed[qid] = True
    query_of, passage_of = {}, {}
    for lang, (queries, collection) in languages.items():
        passage_of[lang] = text_id_map(writer, lang, collection, pid_needed)
        query_of[lang] = text_id_map(writer, lang, queries, qid_needed)
    for e in range(len(qid)):
        q = {l: int(m[qid[e]]) for l, m in query_of.items() if m[qid[e]] >= 0}
        p = {l: int(m[pos[e]]) for l, m in passage_of.items() if m[pos[e]] >= 0}
        where = f"{triples}: qid {qid[e]}"
        if not q or not p:
            raise InputError(f"{where}: its {'query' if not q else 'positive passage'} is in "
                             f"no language's file")
        ids = neg[neg_start[e]:neg_start[e + 1]]
        n = {l: [int(t) for t in m[ids] if t >= 0] for l, m in passage_of.items()}
        writer.add_example(str(qid[e]), str(qid[e]), q, p, {l: v for l, v in n.items() if v},
                           None, where)


def read_triples(path: pathlib.Path) -> np.ndarray:
    """int64 [rows, 3] of the triples file."""
    parts = []
    for block in blocks(text_lines(path), 1 << 20):
        rows = []
        for where, line in block:
            fields = line.rstrip("\r\n").split("\t")
            try:
                rows.append([int(x) for x in fields])
            except ValueError:
                fields = None
            if fields is None or len(fields) != 3 or min(rows[-1]) < 0:
                raise InputError(f"{where}: expected qid<TAB>positive pid<TAB>negative pid "
                                 f"(non-negative integers), got {line[:80]!r}")
        parts.append(np.array(rows, np.int64).reshape(-1, 3))
    table = np.concatenate(parts) if parts else np.empty((0, 3), np.int64)
    if not len(table):
        raise InputError(f"{path}: no triples")
    return table


def grouped(table: np.ndarray, max_negatives: int):
    """Per example (distinct qid in first-appearance order): qid, positive pid, and the flat
    negatives of example e in neg[neg_start[e]:neg_start[e + 1]] (see the module doc)."""
    qids, first, inverse = np.unique(table[:, 0], return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    example = np.empty(len(qids), np.int64)
    example[order] = np.arange(len(qids))
    ex = example[inverse.reshape(-1)]
    rows = np.argsort(ex, kind="stable")            # grouped by example, file order within
    ex, pos_col, neg_col = ex[rows], table[rows, 1], table[rows, 2]
    starts = np.searchsorted(ex, np.arange(len(qids)))
    qid, pos = qids[order], pos_col[starts]
    width = int(max(table[:, 1].max(), table[:, 2].max())) + 1
    positives = np.unique(ex * width + pos_col)     # every (example, positive pid) pair
    key = ex * width + neg_col
    keep = ~np.isin(key, positives)
    _, firsts = np.unique(key, return_index=True)   # first occurrence of (example, negative)
    distinct = np.zeros(len(key), bool)
    distinct[firsts] = True
    keep &= distinct
    ex, neg_col = ex[keep], neg_col[keep]
    if max_negatives:
        rank = np.arange(len(ex)) - np.searchsorted(ex, ex)
        ex, neg_col = ex[rank < max_negatives], neg_col[rank < max_negatives]
    neg_start = np.searchsorted(ex, np.arange(len(qids) + 1))
    return qid, pos, neg_start, neg_col


def text_id_map(writer, lang: str, path: pathlib.Path, needed: np.ndarray) -> np.ndarray:
    """id -> text id of the lines of an `<id>\\t<text>` file whose id is `needed` (-1: none)."""
    out = np.full(len(needed), -1, np.int64)
    for block in blocks(text_lines(path), BLOCK):
        ids, texts = [], []
        for where, line in block:
            head, tab, text = line.rstrip("\r\n").partition("\t")
            if not tab or not head.isdigit() or not text.strip():
                raise InputError(f"{where}: expected <id><TAB><text>, got {line[:80]!r}")
            i = int(head)
            if i < len(needed) and needed[i]:
                ids.append(i)
                texts.append((lang, text))
        if ids:
            out[ids] = writer.text_ids(texts)
    return out
