"""Hard negatives of a prepared corpus: negatives.HardNegatives' rule and draw on text ids.

A pair (example e, passage language P) draws from e's candidates in P (`negative[e, P, :]`,
first occurrence of each id kept, in order), minus e's own footprint, minus the footprints of
every example of the global batch; of those left, H are drawn without replacement with
`default_rng([seed, step, 1, *stream])` (so with stream () the draws are HardNegatives', call for
call). Padding is -1 (valid 0).
"""
from __future__ import annotations

import numpy as np

from hybrid_jax.data.sampler import BatchPlan
from hybrid_jax.data.negatives import NegativePlan
from hybrid_jax.data.store.layout import read_rows


class StoreNegatives:
    def __init__(self, negative: np.ndarray, rows: np.ndarray, columns: np.ndarray, sampler,
                 count: int, source: str):
        """`negative`: the corpus's [E, L, K] candidate ids (memory-mapped: only the drawn
        examples' rows are read, with positional reads, layout.read_rows); sampler example i is
        corpus row rows[i], sampler language j corpus column columns[j]."""
        self.negative, self.rows, self.columns = negative, rows, columns
        self.sampler, self.count, self.source = sampler, int(count), source

    def has_candidates(self) -> bool:
        """Whether any example has a candidate in a training language (read in chunks)."""
        step = 1 << 16
        return any((read_rows(self.negative, self.rows[i:i + step])[:, self.columns] >= 0).any()
                   for i in range(0, len(self.rows), step))

    @property
    def stats(self) -> dict:
        """negatives.HardNegatives.stats: the candidates of the examples in the training
        languages (first occurrences), and how many of them are the example's own positive."""
        given = own = 0
        step = 1 << 14
        for i in range(0, len(self.rows), step):
            rows = self.rows[i:i + step]
            ids = read_rows(self.negative, rows)[:, self.columns]              # [e, L, K]
            K = ids.shape[-1]
            earlier = np.tril(np.ones((K, K), bool), -1)
            repeat = ((ids[..., :, None] == ids[..., None, :]) & earlier).any(-1)
            first = (ids >= 0) & ~repeat
            footprint = self.sampler.positive[i:i + len(rows)]               # [e, L]
            mine = (ids[..., None] == footprint[:, None, None, :]).any(-1)
            given, own = given + int(first.sum()), own + int((first & mine).sum())
        return {"candidates": given, "rejected_own_positive": own}

    def choose(self, plan: BatchPlan) -> NegativePlan:
        s = self.sampler
        rng = np.random.default_rng([s.seed, int(plan.step), 1, *s.stream])
        rows = read_rows(self.negative, self.rows[plan.example_index])[
            np.arange(len(plan.example_index)), self.columns[plan.passage_lang]]  # [B, K]
        K = rows.shape[1]
        own = (rows[:, :, None] == s.positive[plan.example_index][:, None, :]).any(-1)
        earlier = np.tril(np.ones((K, K), bool), -1)  # [k, j]: j < k
        repeat = ((rows[:, :, None] == rows[:, None, :]) & earlier).any(-1)
        candidate = (rows >= 0) & ~own & ~repeat
        keep = candidate & ~np.isin(rows, s.footprint_ids(plan.example_index))
        out = np.full((len(rows), self.count), -1, np.int64)
        for slot in np.flatnonzero(keep.any(1)):  # in slot order: the draws are HardNegatives'
            kept = rows[slot][keep[slot]]
            if len(kept) > self.count:
                kept = kept[rng.choice(len(kept), self.count, replace=False)]
            out[slot, :len(kept)] = kept
        return NegativePlan(out, int(candidate.sum() - keep.sum()))
