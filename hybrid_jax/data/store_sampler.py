"""HybridSampler's rules (sampler.py: kinds, schedules, pairings, language weights, the
no-false-negative rule on footprints) on a prepared corpus's integer arrays.

An example is a row of `query` / `positive` [E, L] (text ids, -1 absent; equal passages in one
language share one id, so "same passage" is "same id"); its footprint is its row of `positive`.
Pools are index arrays per language pair, built from [E, L] masks and shared between pairs with
the same members (on fully parallel data one array serves every pair), so set-up is vectorised
numpy and memory is O(examples x languages) integers.

Draws (`draw`):
  'rejection'   (default) each pool is scanned in a uniformly random order, a rejected candidate
                stays rejected, without permuting pools: candidates are drawn uniformly with
                replacement and repeats skipped, and a pair whose draws keep missing falls back
                to a permutation of its untried members, so a batch costs O(batch), whatever the
                corpus size.
  'permutation' the draws of HybridSampler, call for call: the same seed and config give the
                same batches as HybridSampler on the same examples (tests prove it). The same
                distribution as 'rejection' with other random numbers, but each language pair a
                batch touches costs a permutation of its whole pool: O(pool) per batch.
`stream`: extra integers appended to the step's seed sequence, so several samplers of one run
(a mixture's sources) draw independently; () keeps HybridSampler's stream.
"""
from __future__ import annotations

import hashlib

import numpy as np

from hybrid_jax.data.sampler import (BatchPlan, PairRule, check_choice, exact_mono_steps,
                                     scheduled_mono, CROSS_PAIRINGS, LANGUAGE_WEIGHTS,
                                     MONO_SCHEDULES, SAMPLINGS)
from hybrid_jax.data.store.distinct import count_distinct, distinct, distinct_inverse
from hybrid_jax.errors import InputError

DRAWS = ("permutation", "rejection")
_MISSES_BEFORE_SCAN = 32  # rejection draw: consecutive misses before a pair is scanned exactly


class StoreSampler:
    def __init__(self, query: np.ndarray, positive: np.ndarray, languages, global_batch_size: int,
                 sampling: str = "hybrid", alpha: float = 0.5, cross_pairing: str = "example",
                 language_weights: str = "uniform", seed: int = 0, mono_schedule: str = "coin",
                 num_steps: int | None = None, draw: str = "rejection", stream=()):
        """`query`, `positive`: [E, L] text ids whose columns are the sorted `languages`."""
        for key, value, allowed in (("data.sampling", sampling, SAMPLINGS),
                                    ("data.mono_schedule", mono_schedule, MONO_SCHEDULES),
                                    ("data.cross_pairing", cross_pairing, CROSS_PAIRINGS),
                                    ("data.language_weights", language_weights, LANGUAGE_WEIGHTS),
                                    ("data.draw", draw, DRAWS)):
            check_choice(key, value, allowed)
        if not 0.0 <= float(alpha) <= 1.0:
            raise InputError(f"data.alpha: must lie in [0, 1], got {alpha}")
        if int(global_batch_size) < 1:
            raise InputError(f"data.global_batch_size: must be >= 1, got {global_batch_size}")
        self.languages = list(languages)
        if self.languages != sorted(set(self.languages)):
            raise ValueError(f"languages must be sorted and distinct, got {self.languages}")
        # int32 ids stay int32 (half the memory of the per-host index), others become int64
        self.query, self.positive = (a if a.dtype in (np.int32, np.int64) else a.astype(np.int64)
                                     for a in map(np.asarray, (query, positive)))
        absent = [l for j, l in enumerate(self.languages)
                  if not ((self.query[:, j] >= 0).any() or (self.positive[:, j] >= 0).any())]
        if absent:
            raise InputError(f"data.languages: {absent} requested but absent from the data")
        self.batch_size = int(global_batch_size)
        self.alpha = {"mono": 1.0, "cross": 0.0, "hybrid": float(alpha)}[sampling]
        self.cross_pairing, self.draw = cross_pairing, draw
        self.seed, self.stream = int(seed), tuple(int(s) for s in stream)
        self.mono_schedule = mono_schedule
        self._exact_mono = exact_mono_steps(self.seed, self.alpha, num_steps) \
            if mono_schedule == "exact" else None
        self._build_pools(language_weights)

    @property
    def n_examples(self) -> int:
        return int(self.query.shape[0])

    def footprint_ids(self, rows: np.ndarray) -> np.ndarray:
        """Sorted distinct passage ids of the footprints of examples `rows`."""
        ids = self.positive[np.asarray(rows, np.int64)].ravel()
        return distinct(ids[ids >= 0])

    # -- set-up ---------------------------------------------------------------------------------
    def _build_pools(self, weights: str):
        n, B = len(self.languages), self.batch_size
        has_q, has_p = self.query >= 0, self.positive >= 0
        shared: dict[bytes, np.ndarray] = {}  # pools with the same members are one array
        counted: dict[tuple[bytes, int], int] = {}  # (pool, passage language) -> distinct ids
        self._pools, distinct, sizes = {}, {}, {}
        for q in range(n):
            for p in range(n):
                mask = has_q[:, q] & has_p[:, p]
                key = hashlib.blake2b(np.packbits(mask).tobytes(), digest_size=16).digest()
                if key not in shared:
                    shared[key] = np.flatnonzero(mask)
                pool = self._pools[(q, p)] = shared[key]
                sizes[(q, p)] = len(pool)
                if (key, p) not in counted:
                    counted[(key, p)] = count_distinct(self.positive[pool, p])
                distinct[(q, p)] = counted[(key, p)]
        usable = PairRule(self.languages, B, self.alpha, self.cross_pairing, weights, distinct,
                          sizes)
        self.mono_pairs, self.cross_pairs, self.excluded = (usable.mono_pairs, usable.cross_pairs,
                                                            usable.excluded)
        self._mono_p, self._cross_p = usable.mono_p, usable.cross_p
        usable.check_fillable(self._count_cross_groups)

    def _count_cross_groups(self) -> int:
        distinct_pools = {id(self._pools[k]): self._pools[k] for k in self.cross_pairs}
        rows = distinct(np.concatenate(list(distinct_pools.values())))
        return _count_groups(self.positive[rows])

    # -- sampling -------------------------------------------------------------------------------
    def plan(self, step: int) -> BatchPlan:
        rng = np.random.default_rng([self.seed, int(step), *self.stream])
        coin = rng.random()  # drawn in both schedules (sampler.py)
        is_mono = (bool(coin < self.alpha) if self._exact_mono is None
                   else scheduled_mono(self._exact_mono, step))
        if is_mono:
            pairs = [self.mono_pairs[rng.choice(len(self.mono_pairs), p=self._mono_p)]]
            probs = np.ones(1)
        elif self.cross_pairing == "batch":
            pairs = [self.cross_pairs[rng.choice(len(self.cross_pairs), p=self._cross_p)]]
            probs = np.ones(1)
        else:
            pairs, probs = self.cross_pairs, self._cross_p
        chosen = _Fill(self, rng, pairs, probs.copy()).run()
        idx, q, p = (np.array(c) for c in zip(*chosen))
        return BatchPlan(int(step), is_mono, idx.astype(np.int64), q.astype(np.int32),
                         p.astype(np.int32))


class _Fill:
    """One batch's conflict-free draw of B (example, q_lang, p_lang) triples."""

    def __init__(self, sampler: StoreSampler, rng, pairs, probs):
        self.s, self.rng, self.pairs, self.probs = sampler, rng, pairs, probs
        self.passages: set[int] = set()     # the batch's positives
        self.footprints: set[int] = set()   # the footprints of the batch's examples
        self.order: dict[int, np.ndarray] = {}
        self.cursor: dict[int, int] = {}
        self.tried: dict[int, set] = {}

    def run(self) -> list[tuple[int, int, int]]:
        chosen = []
        while len(chosen) < self.s.batch_size:
            if self.probs.sum() <= 0:  # not expected: pools were checked at construction
                raise InputError("data: ran out of conflict-free positives while filling a batch")
            k = int(self.rng.choice(len(self.pairs), p=self.probs / self.probs.sum())) \
                if len(self.pairs) > 1 else 0
            found = self._scan(k) if self.s.draw == "permutation" or k in self.order \
                else self._reject(k)
            if found is None:
                self.probs[k] = 0.0
                continue
            row = self.s.positive[found].tolist()
            self.passages.add(row[self.pairs[k][1]])
            self.footprints.update(row)  # -1 (absent) too: a pool member's passage is never -1
            chosen.append((found, *self.pairs[k]))
        return chosen

    def _fits(self, i: int, p_lang: int) -> bool:
        # The sets only grow, so a candidate rejected now stays rejected.
        row = self.s.positive[i].tolist()
        return row[p_lang] not in self.footprints and self.passages.isdisjoint(row)

    def _scan(self, k: int):
        """The next fitting member of pair k's pool in a random order (HybridSampler's draw)."""
        if k not in self.order:
            pool = self.s._pools[self.pairs[k]]
            if k in self.tried:  # the rejection draw gave up: scan only the untried members
                pool = pool[~np.isin(pool, np.fromiter(self.tried[k], np.int64))]
            self.order[k], self.cursor[k] = self.rng.permutation(pool), 0
        order, p_lang = self.order[k], self.pairs[k][1]
        while self.cursor[k] < len(order):
            i = int(order[self.cursor[k]])
            self.cursor[k] += 1
            if self._fits(i, p_lang):
                return i
        return None

    def _reject(self, k: int):
        """Uniform draws from pair k's pool, repeats skipped, until one fits; after
        _MISSES_BEFORE_SCAN misses in a row the untried members are scanned instead."""
        pool, p_lang = self.s._pools[self.pairs[k]], self.pairs[k][1]
        tried = self.tried.setdefault(k, set())
        misses = 0
        while misses < _MISSES_BEFORE_SCAN and len(tried) < len(pool):
            i = int(pool[self.rng.integers(len(pool))])
            if i in tried:
                misses += 1
                continue
            tried.add(i)
            if self._fits(i, p_lang):
                return i
            misses += 1
        return self._scan(k)


def _count_groups(positive_rows: np.ndarray) -> int:
    """Connected components of examples linked by a shared passage id (sampler._count_groups,
    vectorised): one example per component never conflicts with another."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = positive_rows.shape[0]
    r, c = np.nonzero(positive_rows >= 0)
    ids, col = distinct_inverse(positive_rows[r, c])
    graph = coo_matrix((np.ones(len(r), np.int8), (r, n + col)), shape=(n + len(ids),) * 2)
    _, label = connected_components(graph, directed=False)
    return count_distinct(label[:n])
