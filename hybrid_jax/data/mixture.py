"""data.sources: training on several prepared corpora with weights.

data.source_mixing:
  'batch'   (default) each global batch comes from one source, chosen per step:
            data.source_schedule 'draw' with default_rng([seed, step, 3]) and the weights, or
            'exact': of N steps (train.num_steps) each source gets its largest-remainder share of
            round(w * N) steps, in a seeded order (default_rng([seed, 3]))
  'example' every global batch holds each source's largest-remainder share of round(w * B) pairs,
            sources in entry order
Within a source the hybrid kinds, pairings and rules are the source's own sampler's (StoreSampler
with stream (2, s), so sources draw independently). Corpora are assumed disjoint: the
no-false-negative rule runs within a source. In 'example' mixing each source decides mono or cross
for its own part of the batch, so is_mono is constant within a source's rows only.
data.languages restricts each source to those of its languages it has (all of them when empty).
Language codes index the sorted union of the sources' training languages; example_id is the
source's row index plus the sizes of the sources before it. With data.mono_schedule='exact' each
source's sampler fixes its mono share over all the run's steps, of which 'batch' mixing uses the
source's steps only, so within a source that share holds approximately.
"""
from __future__ import annotations

import numpy as np

from hybrid_jax.errors import InputError

MIXINGS = ("batch", "example")
SCHEDULES = ("draw", "exact")


def largest_remainder(weights, total: int) -> np.ndarray:
    """Integer shares of `total` proportional to `weights` (sum exactly `total`)."""
    w = np.asarray(weights, np.float64)
    exact = w / w.sum() * int(total)
    out = np.floor(exact).astype(np.int64)
    out[np.argsort(-(exact - out), kind="stable")[:int(total) - int(out.sum())]] += 1
    return out


def check_sources(sources) -> list[dict]:
    """data.sources entries as dicts with path, weight and optional prefixes."""
    out = []
    for i, entry in enumerate(sources):
        entry = dict(entry)
        unknown = set(entry) - {"path", "weight", "query_prefix", "passage_prefix"}
        if unknown or not entry.get("path"):
            raise InputError(f"data.sources[{i}]: needs 'path' (a prepared corpus) and may have "
                             f"'weight', 'query_prefix', 'passage_prefix'; got {sorted(entry)}")
        weight = entry.setdefault("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise InputError(f"data.sources[{i}].weight: must be a number > 0, got {weight!r}")
        out.append(entry)
    if not out:
        raise InputError("data.sources: empty")
    return out


class MixturePlanner:
    """step -> (assembler, plans, negative plans) over several SingleCorpusPlanner-like parts.

    `parts`: per source (planner(step) -> (assembler, plan, negatives), n_examples, languages);
    `weights` the sources' weights."""

    def __init__(self, parts, weights, mixing: str, schedule: str, seed: int, num_steps: int):
        if mixing not in MIXINGS:
            raise InputError(f"data.source_mixing: {mixing!r} is not one of {MIXINGS}")
        if schedule not in SCHEDULES:
            raise InputError(f"data.source_schedule: {schedule!r} is not one of {SCHEDULES}")
        self.parts, self.mixing, self.seed = parts, mixing, int(seed)
        self.weights = np.asarray(weights, np.float64) / np.sum(weights)
        self.languages = sorted({l for _, _, langs in parts for l in langs})
        self.code_maps = [np.array([self.languages.index(l) for l in langs], np.int32)
                          for _, _, langs in parts]
        self.id_offsets = np.cumsum([0] + [n for _, n, _ in parts])[:-1]
        self._schedule = None
        if mixing == "batch" and schedule == "exact":
            counts = largest_remainder(self.weights, int(num_steps))
            order = np.repeat(np.arange(len(parts)), counts)
            self._schedule = np.random.default_rng([self.seed, 3]).permutation(order)

    def source_of(self, step: int) -> int:
        """'batch' mixing: the source of `step`'s batch."""
        if self._schedule is not None:
            if not 0 <= step < len(self._schedule):
                raise InputError(f"data.source_schedule='exact': step {step} lies outside the "
                                 f"run's {len(self._schedule)} steps (train.num_steps)")
            return int(self._schedule[step])
        rng = np.random.default_rng([self.seed, int(step), 3])
        return int(rng.choice(len(self.parts), p=self.weights))

    def __call__(self, step: int):
        chosen = [self.source_of(step)] if self.mixing == "batch" else \
            [s for s, part in enumerate(self.parts) if part[0] is not None]  # share 0: none
        drawn = [(s, *self.parts[s][0](step)) for s in chosen]
        return self._assemble, drawn, None

    def _assemble(self, drawn, _=None) -> dict[str, np.ndarray]:
        batches = []
        for s, assemble, plan, negatives in drawn:
            batch = assemble(plan, negatives)
            for key in ("query_lang", "passage_lang"):
                batch[key] = self.code_maps[s][batch[key]]
            batch["example_id"] = (batch["example_id"] + self.id_offsets[s]).astype(np.int32)
            batches.append(batch)
        if len(batches) == 1:
            return batches[0]
        keys = set.intersection(*(set(b) for b in batches))
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0] if k in keys}
