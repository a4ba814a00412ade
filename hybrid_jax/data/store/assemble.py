"""Turn a writer's committed chunks into the final files of layout.py, inside <out>.partial.

Chunks hold languages by first appearance; the final [E, L] columns are the sorted languages.
Every array is appended to its file chunk by chunk (a chunk's examples are consecutive rows; no
memory maps, whose written pages of a 10^7-example corpus would count as the process's resident
memory), so memory stays at about one chunk.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np

from hybrid_jax.data.store import layout
from hybrid_jax.data.store.writer import chunk_path, split_joined
from hybrid_jax.errors import InputError


def assemble(partial: pathlib.Path, state: dict, languages: list[str], meta: dict) -> dict:
    """Write the final arrays, keys.txt, units.txt and (last) meta.json; returns the meta."""
    n_chunks, E, T = state["chunks"], state["examples"], state["texts"]
    if E == 0:
        raise InputError("prepare: the sources hold no examples")
    order = sorted(languages)
    column = np.array([order.index(l) for l in languages], np.int64)
    L, K = len(order), int(state["max_negatives"])
    total = sum(_chunk_tokens(partial, i) for i in range(n_chunks))
    shapes = {"tokens": (np.int32, total), "offsets": (np.int64, T + 1),
              "text_lang": (np.int16, T), "query": (np.int64, E, L),
              "positive": (np.int64, E, L), "negative": (np.int64, E, L, K),
              "unit": (np.int64, E)}
    if state["has_scores"]:
        shapes.update(positive_score=(np.float32, E, L), negative_score=(np.float32, E, L, K))
    out = {name: _Appender(partial / f"{name}.npy", dtype, shape)
           for name, (dtype, *shape) in shapes.items()}
    out["offsets"].append(np.zeros(1, np.int64))
    tokens_before = 0
    with (partial / layout.KEYS).open("w", encoding="utf-8") as keys, \
            (partial / layout.UNITS).open("w", encoding="utf-8") as units:
        for i in range(n_chunks):
            with np.load(chunk_path(partial, i)) as z:
                out["tokens"].append(z["tokens"])
                out["offsets"].append(tokens_before + np.cumsum(z["lengths"]))
                out["text_lang"].append(column[z["text_lang"]])
                tokens_before += len(z["tokens"])
                _examples(out, z, column, L, K)
                for name, f in (("keys", keys), ("unit_names", units)):
                    f.writelines(f"{line}\n" for line in split_joined(z[name]))
    for appender in out.values():
        appender.close()
    meta = {"format_version": layout.FORMAT_VERSION, **meta, "languages": order, "n_texts": T,
            "n_examples": E, "max_negatives": K, "has_scores": bool(state["has_scores"]),
            "units": int(state["units"])}
    (partial / layout.META).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return meta


def _chunk_tokens(partial, i) -> int:
    with np.load(chunk_path(partial, i)) as z:
        return len(z["tokens"])


class _Appender:
    """An .npy file of `shape` written front to back in blocks of rows (the bytes np.save would
    write)."""

    def __init__(self, path: pathlib.Path, dtype, shape):
        self.dtype, self.count, self.written = np.dtype(dtype), shape[0], 0
        self.file = path.open("wb")
        np.lib.format.write_array_header_1_0(self.file, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
            "shape": tuple(shape)})

    def append(self, rows: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(rows, self.dtype).tobytes())
        self.written += len(rows)

    def close(self) -> None:
        self.file.close()
        if self.written != self.count:
            raise AssertionError(f"{self.file.name}: wrote {self.written} of {self.count} items")


def _examples(out, z, column, L: int, K: int) -> None:
    """One chunk's rows of the example arrays, built densely here (a chunk's examples are
    consecutive) and appended."""
    n = len(z["unit"])
    out["unit"].append(z["unit"])
    for name, cells in (("query", z["query"]), ("positive", z["positive"])):
        block = np.full((n, L), -1, np.int64)
        block[cells[:, 0], column[cells[:, 1]]] = cells[:, 2]
        out[name].append(block)
        if name == "positive" and "positive_score" in out:
            scores = np.full((n, L), np.nan, np.float32)
            scores[cells[:, 0], column[cells[:, 1]]] = z["positive_score"]
            out["positive_score"].append(scores)
    cells = z["negative"]
    where = (cells[:, 0], column[cells[:, 1]], cells[:, 2])
    block = np.full((n, L, K), -1, np.int64)
    block[where] = cells[:, 3]
    out["negative"].append(block)
    if "negative_score" in out:
        scores = np.full((n, L, K), np.nan, np.float32)
        scores[where] = z["negative_score"]
        out["negative_score"].append(scores)
