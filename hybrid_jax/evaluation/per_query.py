"""Per-query score tables: the paired data behind every statistical comparison.

A table ("group") holds arrays aligned row by row: `qid` (query id, unique in the group), `lang`
(query language), `cluster` (bootstrap unit: LAReQA's question id, shared by a question's
translations so they are resampled together) and one float array per metric.

Groups written by the evaluator: LAReQA: `multi` (all questions against the pooled candidates) and
`pool=<Y>` (all questions with a relevant candidate in language Y against Y's candidates; its rows
of language Y form the mono setting, the others the cross pairs). BEIR: `all`.
Stored in `per_query.npz` as `<group>::<column>` arrays (no pickles).
"""
from __future__ import annotations

import pathlib

import numpy as np

from hybrid_jax.errors import InputError

SEP = "::"
ID_COLUMNS = ("qid", "lang", "cluster")


def save(path, groups: dict[str, dict[str, np.ndarray]]) -> None:
    flat = {}
    for g, cols in groups.items():
        for c, v in cols.items():
            v = np.asarray(v)
            flat[f"{g}{SEP}{c}"] = v.astype(str) if c in ID_COLUMNS else v.astype(np.float64)
    np.savez_compressed(path, **flat)


def load(path) -> dict[str, dict[str, np.ndarray]]:
    path = pathlib.Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            flat = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a per-query score file ({e})") from e
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, v in flat.items():
        if SEP not in key:
            raise InputError(f"{path}: unexpected array {key!r} (expected group{SEP}column)")
        g, c = key.split(SEP, 1)
        groups.setdefault(g, {})[c] = v
    for g, cols in groups.items():
        if "qid" not in cols:
            raise InputError(f"{path}: group {g!r} has no qid column")
    return groups


def metric_names(table: dict[str, np.ndarray]) -> list[str]:
    return [c for c in table if c not in ID_COLUMNS]


def select(table: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {c: v[mask] for c, v in table.items()}


def views(groups: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """Named subsets of queries: 'multi', 'multi/X', 'mono/X', 'cross/X->Y', 'all'."""
    out = {}
    for g, t in groups.items():
        langs = t.get("lang", np.array([""] * len(t["qid"])))
        if g == "multi":
            out["multi"] = t
            for x in sorted(set(langs.tolist())):
                out[f"multi/{x}"] = select(t, langs == x)
        elif g.startswith("pool="):
            y = g[len("pool="):]
            for x in sorted(set(langs.tolist())):
                name = f"mono/{x}" if x == y else f"cross/{x}->{y}"
                out[name] = select(t, langs == x)
        else:
            out[g] = t
    return out
