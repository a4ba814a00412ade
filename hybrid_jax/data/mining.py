"""Mined hard negatives: the passages of the training fold a model ranks highest that are not
relevant.

For each example and training language Y in which it has a positive, its query in Y (where it has
none in Y: the normalised mean of its query embeddings) is scored by exact inner product of
L2-normalised embeddings against every distinct passage of the fold in Y: the examples' positives
and candidate negatives, which for LAReQA sources is every sentence of the fold's paragraphs. The
top `data.mining_depth` passages other than the example's own positive in Y are its candidates;
the batch rule of negatives.py filters them again at every step (another query's positive is a
fine negative for this one, but not in a batch holding that query).

False-negative controls (`MiningControls`, all off by default). Ranks count from 0 over the ranking
without the example's own positive:
  * data.mining_skip_top = k: drop ranks 0..k-1 (the very best are often unlabelled positives);
  * data.mining_margin = m > 0 (relative): keep a candidate only if its score < s_pos * (1 - m),
    s_pos the query's score for its own positive (NV-Retriever's "TopK-PercPos"; 0.05 keeps
    those below 95 % of it). Relative, so one value serves models whose scores differ in scale;
  * data.mining_range = (lo, hi) (not (0, 0)): instead of the best `mining_depth` of what is left, draw
    `mining_depth` of the ranks lo..hi-1 left at random (FlagEmbedding's range_for_sampling),
    kept in rank order; the draw is seeded by data.seed, the example and the language.

Mined once and cached as <workdir>/negatives/mined.json with everything that decided the result
(the mining model's parameter fingerprint, the depth, the controls when on, the fold rule, the
data, the languages, lengths and prefixes); a later run of the same workdir reuses the file and refuses it with an
InputError when any of these changed (data/workdir_cache.py, shared with teacher_scores.py).
"""
from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Sequence

import numpy as np

from hybrid_jax.data import workdir_cache
from hybrid_jax.errors import InputError

CACHE = pathlib.Path("negatives") / "mined.json"

# Cache fields that must match, and the setting each comes from (for the refusal message).
_CHECKED = {**{k: v.format(model="mining model") for k, v in workdir_cache.MODEL_CHECKED.items()},
            "depth": "data.mining_depth"}
_CHECKED["fingerprint"] += " (data.mining_model, else model.spec)"
_CONTROLS_CHECKED = ("data.mining_skip_top / data.mining_margin / data.mining_range (with a range: "
                     "data.seed)")


@dataclasses.dataclass(frozen=True)
class MiningControls:
    """The false-negative controls of the module doc; the defaults keep the plain top ranks."""
    skip_top: int = 0
    margin: float | None = None
    rank_range: tuple[int, int] | None = None
    seed: int = 0

    @classmethod
    def from_config(cls, cfg) -> "MiningControls":
        margin = float(cfg.get("mining_margin", 0.0) or 0.0)
        rank_range = tuple(int(r) for r in cfg.get("mining_range", (0, 0)))
        on = rank_range != (0, 0)
        return cls(int(cfg.get("mining_skip_top", 0) or 0), margin or None,
                   rank_range if on else None, int(cfg.seed) if on else 0)

    @property
    def active(self) -> bool:
        return self != MiningControls()

    def select(self, order: np.ndarray, scores: np.ndarray, own: int, depth: int, rng_key=()):
        """Pool indices chosen from `order` (the pool ranked best first) for a query whose own
        positive is pool index `own`, `scores` the query's score for each pool index."""
        ranked = order[order != own]
        keep = np.arange(len(ranked)) >= self.skip_top
        if self.rank_range is not None:
            lo, hi = self.rank_range
            keep &= (np.arange(len(ranked)) >= lo) & (np.arange(len(ranked)) < hi)
        if self.margin is not None:
            keep &= scores[ranked] < scores[own] * (1.0 - self.margin)
        left = ranked[keep]
        if self.rank_range is None or len(left) <= depth:
            return left[:depth]
        rng = np.random.default_rng([self.seed, *rng_key])
        return left[np.sort(rng.choice(len(left), depth, replace=False))]


def mined_candidates(data_config, examples: Sequence, languages: Sequence[str], model=None,
                     workdir=None, *, write: bool = True) -> list[dict[str, tuple[str, ...]]]:
    """Per example (in order), language -> mined candidate negatives, best first.

    `model` is the run's starting model (a models.pretrained.Pretrained), used unless
    `data.mining_model` names another spec. With a `workdir` the result is read from, or
    written to (when `write`: one process of a multi-host run), <workdir>/negatives/mined.json.
    """
    cfg = data_config
    depth = int(cfg.mining_depth)
    if depth < 1:
        raise InputError(f"data.mining_depth: must be >= 1, got {cfg.mining_depth}")
    bundle = workdir_cache.model_bundle(str(cfg.mining_model or ""), model,
                                        "data.negative_source='mined'",
                                        "data.mining_model")
    controls = MiningControls.from_config(cfg)
    meta = {**workdir_cache.model_meta(cfg, examples, languages, bundle), "depth": depth}
    checked = dict(_CHECKED)
    if controls.active:  # absent when off, so caches written before the controls stay valid
        meta["controls"] = dataclasses.asdict(controls)
        checked["controls"] = _CONTROLS_CHECKED
    meta = workdir_cache.round_trip(meta)

    def compute():
        logging.info("mining hard negatives with %s (depth %d)", bundle.name, depth)
        return mine(examples, languages, bundle, depth, int(cfg.query_max_length),
                    int(cfg.passage_max_length), controls)

    return workdir_cache.computed_once(
        pathlib.Path(workdir) / CACHE if workdir else None, meta, checked, "mined negatives",
        compute, lambda result: _encode(examples, result), lambda doc: _decode(doc, examples),
        write=write)


def mine(examples: Sequence, languages: Sequence[str], bundle, depth: int,
         query_max_length: int, passage_max_length: int,
         controls: MiningControls = MiningControls()) -> list[dict[str, tuple[str, ...]]]:
    """The mining itself (no cache): see the module doc."""
    from hybrid_jax.retrieval import embed_texts

    languages = sorted(set(languages))
    pools = {l: list(dict.fromkeys(t for e in examples for t in
                                   ((e.passages[l],) if l in e.passages else ()) +
                                   tuple(e.negatives.get(l, ()))))
             for l in languages}
    queries = [(i, l) for i, e in enumerate(examples) for l in sorted(e.queries) if l in pools]
    out: list[dict[str, tuple[str, ...]]] = [{} for _ in examples]
    if not queries:
        return out
    q_emb = embed_texts(bundle, [examples[i].queries[l] for i, l in queries], "query",
                        max_length=query_max_length)
    per_example: dict[int, dict[str, np.ndarray]] = {}
    for (i, l), v in zip(queries, q_emb):
        per_example.setdefault(i, {})[l] = v
    texts = [t for l in languages for t in pools[l]]
    p_emb = embed_texts(bundle, texts, "passage", max_length=passage_max_length)
    start = 0
    for code, lang in enumerate(languages):
        pool, vectors = pools[lang], p_emb[start:start + len(pools[lang])]
        start += len(pool)
        rows = [i for i, e in enumerate(examples) if lang in e.passages and i in per_example]
        if not rows or len(pool) < 2:
            continue
        scores = np.stack([query_vector(per_example[i], lang) for i in rows]) @ vectors.T
        index = {t: j for j, t in enumerate(pool)}
        # Stable sort: equal scores rank in pool order, so the result is reproducible.
        ranked = np.argsort(-scores, axis=1, kind="stable")
        for i, order, row in zip(rows, ranked, scores):
            own = index[examples[i].passages[lang]]
            if controls.active:
                chosen = controls.select(order, row, own, depth, (i, code)).tolist()
            else:
                chosen = [j for j in order[:depth + 1] if j != own][:depth]
            out[i][lang] = tuple(pool[j] for j in chosen)
    return out


def query_vector(by_language: dict, lang: str) -> np.ndarray:
    """An example's query vector for language `lang`: its query in `lang`, else the normalised
    mean of its query vectors (an example may lack the query in a passage language)."""
    if lang in by_language:
        return by_language[lang]
    v = np.mean(list(by_language.values()), axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _encode(examples, result) -> dict:
    pools: dict[str, dict[str, int]] = {}
    negatives = {}
    for e, per_language in zip(examples, result):
        if per_language:
            negatives[e.key] = {l: [pools.setdefault(l, {}).setdefault(t, len(pools[l]))
                                    for t in texts] for l, texts in per_language.items()}
    return {"passages": {l: list(p) for l, p in pools.items()}, "negatives": negatives}


def _decode(doc: dict, examples) -> list[dict[str, tuple[str, ...]]]:
    passages, negatives = doc["passages"], doc["negatives"]
    return [{l: tuple(passages[l][j] for j in idx) for l, idx in negatives.get(e.key, {}).items()}
            for e in examples]
