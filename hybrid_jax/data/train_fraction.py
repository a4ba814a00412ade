"""data.train_fraction: train on a nested, seeded subset of the training fold's examples (the
data-fraction curves of the study). The subset is chosen by whole units (articles), so a fraction
keeps the questions of an article together; the same rule serves examples loaded by data.format
and prepared corpora, so both give the same subset."""
from __future__ import annotations

import hashlib

import numpy as np

from hybrid_jax.errors import InputError


def fraction_rows(rows: np.ndarray, unit_names, row_units: np.ndarray, fraction: float,
                  seed: int) -> np.ndarray:
    """The first round(fraction * len(rows)) of `rows` in a seeded order of whole units, returned
    ascending. Units are ranked by SHA-256 of "<seed>/fraction/<unit name>" (so the subset does not
    depend on how a corpus numbers its units), rows of one unit in a seeded order. The order does
    not depend on `fraction`, so a smaller fraction's rows are a subset of a larger one's; at most
    one unit is cut. `row_units[i]`: the index into `unit_names` of rows[i]'s unit."""
    if not 0.0 < float(fraction) <= 1.0:
        raise InputError(f"data.train_fraction: must lie in (0, 1], got {fraction}")
    if fraction == 1.0:
        return rows
    digests = [hashlib.sha256(f"{seed}/fraction/{u}".encode()).hexdigest() for u in unit_names]
    unit_rank = np.argsort(np.argsort(np.array(digests)))
    within = np.random.default_rng([int(seed), 0x7472]).permutation(len(rows))
    order = np.lexsort((within, unit_rank[np.asarray(row_units)]))
    keep = max(1, round(float(fraction) * len(rows)))
    return np.sort(np.asarray(rows)[order[:keep]])


def fraction_of_examples(examples, fraction: float, seed: int) -> list:
    """`fraction_rows` on a list of ParallelExamples (units: their articles), in list order."""
    if float(fraction) == 1.0:
        return list(examples)
    names = sorted({e.article for e in examples})
    index = {u: i for i, u in enumerate(names)}
    rows = fraction_rows(np.arange(len(examples)), names,
                         np.array([index[e.article] for e in examples], np.int64), fraction, seed)
    return [examples[i] for i in rows]
