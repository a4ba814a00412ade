"""Hard negatives per (query, positive) pair, drawn as a pure function of (seed, step).

Candidates are given per example and language (the other sentences of the positive's paragraph,
the record's own `negatives`, or mined ones: see pipeline.negative_candidates). A pair (example e,
passage language P) draws its negatives from e's candidates in P, so an X-Y pair's negatives are in
Y. A candidate is rejected when it lies in the footprint (sampler.py) of any example of the global
batch, i.e. when it is, in language P, the positive of some query of the batch in any of that
query's languages; so no query ever scores a relevant passage as a hard negative, and no negative
equals an in-batch positive. Of the candidates left, H are drawn without replacement with
`default_rng([seed, step, 1])`; a pair with fewer keeps them all and pads (valid 0).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from hybrid_jax.data.sampler import BatchPlan, HybridSampler

SOURCES = ("same_paragraph", "mined", "from_data")


@dataclasses.dataclass(frozen=True)
class NegativePlan:
    passage: np.ndarray  # [B, H] int64 passage ids (HardNegatives.text), -1 = padding
    rejected: int        # candidates of this batch's pairs dropped by the batch footprint rule

    @property
    def valid(self) -> np.ndarray:
        return (self.passage >= 0).astype(np.int32)


class HardNegatives:
    """Per-example candidate tables over the sampler's passage ids, and the per-step draw."""

    def __init__(self, sampler: HybridSampler, candidates: Sequence[Mapping[str, Sequence[str]]],
                 count: int, source: str):
        if len(candidates) != len(sampler.examples):
            raise ValueError(f"{len(candidates)} candidate lists for {len(sampler.examples)} examples")
        self.sampler, self.count, self.source = sampler, int(count), source
        self._text: dict[int, str] = {}
        self._table: list[dict[int, list[int]]] = []  # per example: lang code -> candidate ids
        given = own = 0
        for i, per_language in enumerate(candidates):
            row = {}
            for lang, texts in per_language.items():
                code = sampler.code.get(lang)
                if code is None:  # outside the training languages: no pair can use it
                    continue
                unique = list(dict.fromkeys(texts))
                ids = [sampler.passage_id(code, t) for t in unique]
                self._text.update(zip(ids, unique))
                kept = [pid for pid in ids if pid not in sampler.footprint(i)]
                given, own = given + len(ids), own + len(ids) - len(kept)
                if kept:
                    row[code] = kept
            self._table.append(row)
        self.stats = {"candidates": given, "rejected_own_positive": own}

    def text(self, pid: int) -> str:
        return self._text[pid]

    def candidate_ids(self, i: int) -> dict[int, list[int]]:
        """Example i's candidates (language code -> passage ids), own positives left out."""
        return self._table[i]

    def choose(self, plan: BatchPlan) -> NegativePlan:
        rng = np.random.default_rng([self.sampler.seed, int(plan.step), 1])
        in_batch = frozenset().union(*(self.sampler.footprint(int(i))
                                       for i in set(plan.example_index.tolist())))
        out = np.full((len(plan.example_index), self.count), -1, np.int64)
        rejected = 0
        for slot, (i, p) in enumerate(zip(plan.example_index.tolist(), plan.passage_lang.tolist())):
            candidates = self._table[i].get(p, ())
            keep = [pid for pid in candidates if pid not in in_batch]
            rejected += len(candidates) - len(keep)
            if len(keep) > self.count:
                keep = [keep[j] for j in rng.choice(len(keep), self.count, replace=False)]
            out[slot, :len(keep)] = keep
        return NegativePlan(out, rejected)
