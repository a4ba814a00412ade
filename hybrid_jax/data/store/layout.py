"""File names and meta of a prepared corpus (format version 1), and a memory-mapped view of one.

    meta.json      format version, tokenizer, languages (column order), sizes, sources, units
    tokens.npy     int32 [total_tokens]   ids of every distinct text, no special tokens, no prefix
    offsets.npy    int64 [T + 1]          text t is tokens[offsets[t]:offsets[t + 1]]
    text_lang.npy  int16 [T]              language column of each text
    query.npy      int64 [E, L]           text id of example e's query in language l, -1: absent
    positive.npy   int64 [E, L]           its positive passage (equal texts of a language: one id)
    negative.npy   int64 [E, L, K]        hard-negative text ids, -1 padding
    unit.npy       int64 [E]              split unit id, a line of units.txt
    keys.txt / units.txt                  one example key / unit name per line
    positive_score.npy float32 [E, L], negative_score.npy float32 [E, L, K]  (has_scores; NaN absent)
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib

import numpy as np

from hybrid_jax.data.store.distinct import distinct_inverse
from hybrid_jax.errors import InputError

FORMAT_VERSION = 1
_READ_GAP = 64         # read_rows: rows closer than this are read in one positional read
_READ_SPAN = 1 << 16   # read_rows: the most rows one positional read covers
META = "meta.json"
ARRAYS = ("tokens", "offsets", "text_lang", "query", "positive", "negative", "unit")
SCORE_ARRAYS = ("positive_score", "negative_score")
KEYS, UNITS = "keys.txt", "units.txt"


def partial_dir(out: pathlib.Path) -> pathlib.Path:
    """Where a corpus is written until it is complete."""
    return out.with_name(out.name + ".partial")


@dataclasses.dataclass
class Store:
    """A prepared corpus opened read-only: meta plus memory-mapped arrays."""
    path: pathlib.Path
    meta: dict
    arrays: dict

    def __getattr__(self, name):
        arrays = self.__dict__.get("arrays", {})
        if name in arrays:
            return arrays[name]
        raise AttributeError(name)

    @property
    def languages(self) -> list[str]:
        return list(self.meta["languages"])

    def text_tokens(self, t: int) -> np.ndarray:
        offsets = self.arrays["offsets"]
        return self.arrays["tokens"][offsets[t]:offsets[t + 1]]

    def keys(self) -> list[str]:
        return (self.path / KEYS).read_text(encoding="utf-8").splitlines()

    def unit_names(self) -> list[str]:
        return (self.path / UNITS).read_text(encoding="utf-8").splitlines()


def open_store(path) -> Store:
    path = pathlib.Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        hint = " (an unfinished prepare: rerun it)" if partial_dir(path).is_dir() else ""
        raise InputError(f"{path}: not a prepared corpus, no {META}{hint}")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{meta_path}: format_version {meta.get('format_version')!r}, this "
                         f"reader knows {FORMAT_VERSION}")
    names = ARRAYS + (SCORE_ARRAYS if meta.get("has_scores") else ())
    arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r") for n in names}
    return Store(path, meta, arrays)


def read_rows(array: np.ndarray, rows) -> np.ndarray:
    """array[rows] (rows in any order) for a memory-mapped corpus array, read with positional
    reads of its file instead of through the map: mapped reads leave whole page-cache folios
    mapped in the process, so its resident memory would grow towards the whole file, while this
    holds only the rows returned. Nearby rows share one read. An in-memory array is indexed."""
    rows = np.asarray(rows, np.int64)
    if not isinstance(array, np.memmap) or array.filename is None:
        return np.asarray(array[rows])
    row_bytes = array.dtype.itemsize * int(np.prod(array.shape[1:], dtype=np.int64))
    if not len(rows) or not row_bytes:
        return np.empty((len(rows), *array.shape[1:]), array.dtype)
    ascending = len(rows) < 2 or bool((rows[1:] > rows[:-1]).all())  # fold and chunk reads
    wanted, where = (rows, None) if ascending else distinct_inverse(rows)
    shape, base, pread = array.shape[1:], int(array.offset), os.pread
    new_read = np.ones(len(wanted), bool)  # where a read starts: a gap, or a span boundary
    new_read[1:] = (np.diff(wanted) > _READ_GAP) | (np.diff(wanted // _READ_SPAN) != 0)
    starts = np.flatnonzero(new_read)
    got = np.empty((len(wanted), *shape), array.dtype)
    fd = os.open(array.filename, os.O_RDONLY)
    try:
        for lo, hi in zip(starts.tolist(), np.append(starts[1:], len(wanted)).tolist()):
            first, last = int(wanted[lo]), int(wanted[hi - 1])
            size = (last - first + 1) * row_bytes
            data = pread(fd, size, base + first * row_bytes)
            if len(data) != size:
                raise InputError(f"{array.filename}: truncated (rows {first}..{last} "
                                 f"unreadable); prepare the corpus again")
            block = np.frombuffer(data, array.dtype).reshape(-1, *shape)
            got[lo:hi] = block if hi - lo == last - first + 1 else block[wanted[lo:hi] - first]
    finally:
        os.close(fd)
    return got if where is None else got[where]
