"""Turn a writer's committed chunks into the final files of layout.py, inside <out>.partial.

Chunks hold languages by first appearance; the final [E, L] columns are the sorted languages.
Arrays are filled chunk by chunk through memory maps, so memory stays at one chunk.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
from numpy.lib.format import open_memmap

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
    out = {"tokens": open_memmap(partial / "tokens.npy", "w+", np.int32, (total,)),
           "offsets": open_memmap(partial / "offsets.npy", "w+", np.int64, (T + 1,)),
           "text_lang": open_memmap(partial / "text_lang.npy", "w+", np.int16, (T,)),
           "query": _filled(partial, "query", (E, L), np.int64, -1),
           "positive": _filled(partial, "positive", (E, L), np.int64, -1),
           "negative": _filled(partial, "negative", (E, L, K), np.int64, -1),
           "unit": open_memmap(partial / "unit.npy", "w+", np.int64, (E,))}
    if state["has_scores"]:
        out["positive_score"] = _filled(partial, "positive_score", (E, L), np.float32, np.nan)
        out["negative_score"] = _filled(partial, "negative_score", (E, L, K), np.float32, np.nan)
    out["offsets"][0] = 0
    at = {"token": 0, "text": 0, "example": 0}
    with (partial / layout.KEYS).open("w", encoding="utf-8") as keys, \
            (partial / layout.UNITS).open("w", encoding="utf-8") as units:
        for i in range(n_chunks):
            with np.load(chunk_path(partial, i)) as z:
                _texts(out, z, column, at)
                _examples(out, z, column, at)
                for name, f in (("keys", keys), ("unit_names", units)):
                    f.writelines(f"{line}\n" for line in split_joined(z[name]))
    for array in out.values():
        array.flush()
    meta = {"format_version": layout.FORMAT_VERSION, **meta, "languages": order, "n_texts": T,
            "n_examples": E, "max_negatives": K, "has_scores": bool(state["has_scores"]),
            "units": int(state["units"])}
    (partial / layout.META).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return meta


def _chunk_tokens(partial, i) -> int:
    with np.load(chunk_path(partial, i)) as z:
        return len(z["tokens"])


def _filled(partial, name, shape, dtype, value):
    array = open_memmap(partial / f"{name}.npy", "w+", dtype, shape)
    array[...] = value
    return array


def _texts(out, z, column, at) -> None:
    tokens, lengths = z["tokens"], z["lengths"]
    t0, p0 = at["text"], at["token"]
    out["tokens"][p0:p0 + len(tokens)] = tokens
    out["offsets"][t0 + 1:t0 + 1 + len(lengths)] = p0 + np.cumsum(lengths)
    out["text_lang"][t0:t0 + len(lengths)] = column[z["text_lang"]]
    at["text"], at["token"] = t0 + len(lengths), p0 + len(tokens)


def _examples(out, z, column, at) -> None:
    e0 = at["example"]
    unit = z["unit"]
    out["unit"][e0:e0 + len(unit)] = unit
    for name in ("query", "positive"):
        cells = z[name]
        rows, cols = e0 + cells[:, 0], column[cells[:, 1]]
        out[name][rows, cols] = cells[:, 2]
        if name == "positive" and "positive_score" in out:
            out["positive_score"][rows, cols] = z["positive_score"]
    cells = z["negative"]
    rows, cols, slots = e0 + cells[:, 0], column[cells[:, 1]], cells[:, 2]
    out["negative"][rows, cols, slots] = cells[:, 3]
    if "negative_score" in out:
        out["negative_score"][rows, cols, slots] = z["negative_score"]
    at["example"] = e0 + len(unit)
