"""Batch composition as a pure function of (seed, step): which examples, in which languages
(given the run's step count N with mono_schedule='exact').

Kinds (decided once per *global* batch, so every device and host slice shares it):
  mono   all pairs in one language L (L drawn per batch): query_L -> passage_L
  cross  query language != passage language for every pair; the language pair is drawn once per
         batch (`cross_pairing='batch'`) or per example (`'example'`)
  hybrid mono or cross by `mono_schedule`:
         'coin'  (default) each step is mono with probability alpha, so a run of N steps has
                 Binomial(N, alpha) mono batches;
         'exact' a run of N steps (train.num_steps) has exactly round(alpha * N) mono batches: the
                 steps whose coins (the draw 'coin' compares with alpha) are the smallest, so the
                 order depends on the seed alone, a smaller alpha's mono steps are a subset of a
                 larger alpha's, and runs with one seed share common random numbers. The coin is
                 drawn in both schedules, so the languages and examples of a step of a given kind
                 are the same in both. Steps outside [0, N) are refused.
Language weights: 'uniform' over usable languages / language pairs, or 'size' (proportional to the
number of examples usable in that language / pair).

No false negatives in a batch. A passage is identified by (language, text); an example's
*footprint* is the set of its positive passages in every training language (its translations,
linked by the shared question id). A new pair (example e, passage language P) joins the batch only
if e's footprint contains none of the batch's passages and e's passage in P lies in no chosen
example's footprint. So no query ever sees its own positive (or a duplicate of it) as a negative,
in any language. Hard negatives (negatives.py) extend the rule: a pair's negative lies in no
footprint of an example in the batch, so it is never any query's positive (nor equal to an
in-batch positive), in any language. Steps are sampled independently (with replacement across
steps, not epochs): the iterator state is just the step number, which makes checkpoint/restore
exact.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from hybrid_jax.errors import InputError

SAMPLINGS = ("mono", "cross", "hybrid")
CROSS_PAIRINGS = ("example", "batch")
LANGUAGE_WEIGHTS = ("uniform", "size")
MONO_SCHEDULES = ("coin", "exact")


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    step: int
    is_mono: bool
    example_index: np.ndarray  # [B] int64 into the sampler's examples
    query_lang: np.ndarray     # [B] int32 codes into sampler.languages
    passage_lang: np.ndarray   # [B] int32


class HybridSampler:
    def __init__(self, examples: Sequence, languages: Sequence[str], global_batch_size: int,
                 sampling: str = "hybrid", alpha: float = 0.5, cross_pairing: str = "example",
                 language_weights: str = "uniform", seed: int = 0, mono_schedule: str = "coin",
                 num_steps: int | None = None):
        """`num_steps`: the run's step count N (train.num_steps); mono_schedule='exact' needs it."""
        check_choice("data.sampling", sampling, SAMPLINGS)
        check_choice("data.mono_schedule", mono_schedule, MONO_SCHEDULES)
        check_choice("data.cross_pairing", cross_pairing, CROSS_PAIRINGS)
        check_choice("data.language_weights", language_weights, LANGUAGE_WEIGHTS)
        if not 0.0 <= float(alpha) <= 1.0:
            raise InputError(f"data.alpha: must lie in [0, 1], got {alpha}")
        if int(global_batch_size) < 1:
            raise InputError(f"data.global_batch_size: must be >= 1, got {global_batch_size}")
        self.languages = sorted(set(languages))
        present = {l for e in examples for l in (*e.queries, *e.passages)}
        missing = [l for l in self.languages if l not in present]
        if missing:
            raise InputError(f"data.languages: {missing} requested but absent from the data "
                             f"(present: {sorted(present)})")
        self.examples = list(examples)
        self.batch_size = int(global_batch_size)
        self.alpha = {"mono": 1.0, "cross": 0.0, "hybrid": float(alpha)}[sampling]
        self.cross_pairing = cross_pairing
        self.seed = int(seed)
        self.mono_schedule = mono_schedule
        self._exact_mono = exact_mono_steps(self.seed, self.alpha, num_steps) \
            if mono_schedule == "exact" else None
        self._index_passages()
        self._build_pools(language_weights)

    # -- set-up ---------------------------------------------------------------------------------
    def _index_passages(self):
        self.code = {l: i for i, l in enumerate(self.languages)}
        self._ids: dict[tuple[int, str], int] = {}
        self._pid = []        # per example: {lang code: passage id}
        self._queries = []    # per example: set of lang codes with a query
        for e in self.examples:
            self._pid.append({self.code[l]: self.passage_id(self.code[l], t)
                              for l, t in e.passages.items() if l in self.code})
            self._queries.append({self.code[l] for l in e.queries if l in self.code})
        self._footprint = [frozenset(p.values()) for p in self._pid]

    def passage_id(self, lang_code: int, text: str) -> int:
        """The id of passage (language, text); texts no example has as a positive (hard-negative
        candidates) get new ids, so equal texts share one id whatever their role."""
        return self._ids.setdefault((int(lang_code), text), len(self._ids))

    def footprint(self, i: int) -> frozenset:
        """Passage ids of example i's positives in every training language."""
        return self._footprint[i]

    def _build_pools(self, weights: str):
        n = len(self.languages)
        pools = {(q, p): np.array([i for i in range(len(self.examples))
                                   if q in self._queries[i] and p in self._pid[i]], np.int64)
                 for q in range(n) for p in range(n)}
        distinct = {k: len({self._pid[i][k[1]] for i in v}) for k, v in pools.items()}
        self._pools = pools
        usable = PairRule(self.languages, self.batch_size, self.alpha, self.cross_pairing,
                          weights, distinct, {k: len(v) for k, v in pools.items()})
        self.mono_pairs, self.cross_pairs, self.excluded = (usable.mono_pairs, usable.cross_pairs,
                                                            usable.excluded)
        self._mono_p, self._cross_p = usable.mono_p, usable.cross_p
        usable.check_fillable(lambda: _count_groups(
            [self._footprint[i] for i in {int(i) for k in self.cross_pairs
                                          for i in self._pools[k]}]))

    # -- sampling -------------------------------------------------------------------------------
    def plan(self, step: int) -> BatchPlan:
        rng = _step_rng(self.seed, step)
        coin = rng.random()  # drawn in both schedules: every later draw is the same in both
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
        chosen = self._fill(rng, pairs, probs.copy())
        idx, q, p = (np.array(c) for c in zip(*chosen))
        return BatchPlan(int(step), is_mono, idx.astype(np.int64), q.astype(np.int32),
                         p.astype(np.int32))

    def _fill(self, rng, pairs, probs) -> list[tuple[int, int, int]]:
        """Draw B (example, q_lang, p_lang) triples, a language pair per slot, without conflicts."""
        batch_passages: set[int] = set()
        batch_footprints: set[int] = set()
        order: dict[int, np.ndarray] = {}   # pair index -> lazily drawn permutation of its pool
        cursor: dict[int, int] = {}
        chosen = []
        while len(chosen) < self.batch_size:
            if probs.sum() <= 0:  # not expected: pools were checked at construction
                raise InputError("data: ran out of conflict-free positives while filling a batch")
            k = int(rng.choice(len(pairs), p=probs / probs.sum())) if len(pairs) > 1 else 0
            if k not in order:
                order[k], cursor[k] = rng.permutation(self._pools[pairs[k]]), 0
            q_lang, p_lang = pairs[k]
            found = None
            while cursor[k] < len(order[k]):
                i = int(order[k][cursor[k]])
                cursor[k] += 1
                # Sets only grow, so a candidate rejected now stays rejected: skip it for good.
                if (self._pid[i][p_lang] not in batch_footprints
                        and not self._footprint[i] & batch_passages):
                    found = i
                    break
            if found is None:
                probs[k] = 0.0
                continue
            batch_passages.add(self._pid[found][p_lang])
            batch_footprints |= self._footprint[found]
            chosen.append((found, q_lang, p_lang))
        return chosen


class PairRule:
    """Which language pairs a sampler draws from and how often, and whether its batches can be
    filled, from each pair's pool: `distinct[(q, p)]` distinct positives, `sizes[(q, p)]`
    examples (one rule for HybridSampler and store_sampler.StoreSampler)."""

    def __init__(self, languages, batch_size: int, alpha: float, cross_pairing: str,
                 weights: str, distinct: dict, sizes: dict):
        n, B = len(languages), int(batch_size)
        self.languages, self.batch_size, self.alpha = list(languages), B, float(alpha)
        self.cross_pairing, self.distinct = cross_pairing, distinct
        self.mono_pairs = [(l, l) for l in range(n) if distinct[(l, l)] >= B]
        if cross_pairing == "batch":
            self.cross_pairs = [k for k in sizes if k[0] != k[1] and distinct[k] >= B]
        else:
            self.cross_pairs = [k for k in sizes if k[0] != k[1] and sizes[k]]
        self.excluded = {  # usable-in-principle languages / pairs too small for one batch
            "mono": [languages[l] for l in range(n) if 0 < distinct[(l, l)] < B],
            "cross": [f"{languages[q]}-{languages[p]}" for (q, p) in sizes
                      if q != p and 0 < distinct[(q, p)] and (q, p) not in self.cross_pairs]}

        def probs(pairs):
            w = np.array([1.0 if weights == "uniform" else sizes[k] for k in pairs], np.float64)
            return w / w.sum() if len(w) else w

        self.mono_p, self.cross_p = probs(self.mono_pairs), probs(self.cross_pairs)

    def check_fillable(self, count_groups) -> None:
        """InputError when a batch of the kinds drawn cannot be filled; `count_groups()`: the
        distinct positives of the cross pairs' examples, translations counted once (asked only
        when cross pairs are drawn per example)."""
        B, n = self.batch_size, len(self.languages)
        largest = max(self.distinct[(l, l)] for l in range(n)) if n else 0
        if self.alpha > 0 and not self.mono_pairs:
            raise InputError(
                f"data.global_batch_size: {B} exceeds the pool of distinct positives of every "
                f"training language for mono batches (largest: {largest}); use a smaller batch or "
                f"a larger training fold")
        if self.alpha < 1:
            if not self.cross_pairs:
                raise InputError(
                    f"data.global_batch_size: no query/passage language pair (of {self.languages}) "
                    f"has {B} distinct parallel positives for cross batches")
            if self.cross_pairing == "example":
                groups = count_groups()
                if groups < B:
                    raise InputError(
                        f"data.global_batch_size: {B} exceeds the {groups} distinct positives "
                        f"(translations counted once) available for cross batches")


def _step_rng(seed: int, step: int) -> np.random.Generator:
    """A step's draws, in order: its coin (mono or cross), then its languages and examples."""
    return np.random.default_rng([int(seed), int(step)])


def scheduled_mono(exact_mono: np.ndarray, step: int) -> bool:
    """Whether `step` is mono under mono_schedule='exact' (`exact_mono`: exact_mono_steps)."""
    n = len(exact_mono)
    if not 0 <= int(step) < n:
        raise InputError(f"data.mono_schedule='exact': step {step} lies outside the run's "
                         f"{n} steps (train.num_steps); the exact share is fixed over them")
    return bool(exact_mono[int(step)])


def exact_mono_steps(seed: int, alpha: float, num_steps) -> np.ndarray:
    """[N] bool: the round(alpha * N) steps of [0, N) with the smallest coins are mono. The order
    of the coins depends on the seed alone, so the mono steps of a smaller alpha are a subset of a
    larger alpha's (ties, which need equal float64 draws, go to the earlier step)."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) \
            or num_steps < 0:
        raise InputError(f"data.mono_schedule='exact': needs the run's step count "
                         f"(train.num_steps, an integer >= 0), got {num_steps!r}")
    coins = np.array([_step_rng(seed, step).random() for step in range(int(num_steps))],
                     np.float64)
    mono = np.zeros(int(num_steps), bool)
    mono[np.argsort(coins, kind="stable")[:round(alpha * int(num_steps))]] = True
    return mono


def _count_groups(footprints) -> int:
    """Connected components of examples linked by a shared passage. One example per component
    never conflicts with another, so this many pairs can always fill a cross batch."""
    parent: dict[int, int] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    roots = set()
    for fp in footprints:
        fp = list(fp)
        for other in fp[1:]:
            a, b = find(fp[0]), find(other)
            if a != b:
                parent[a] = b
    for fp in footprints:
        roots.add(find(next(iter(fp))))
    return len(roots)


def check_choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise InputError(f"{key}: {value!r} is not one of {allowed}")
