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
(the mining model's parameter fingerprint, the depth, the fold rule, the data, the languages,
lengths and prefixes); a later run of the same workdir reuses the file and refuses it with an
InputError when any of these changed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
from typing import Sequence

import numpy as np

from hybrid_jax.errors import InputError

CACHE = pathlib.Path("negatives") / "mined.json"

# Cache fields that must match, and the setting each comes from (for the refusal message).
_CHECKED = {
    "fingerprint": "the mining model's parameters (data.mining_model, else model.spec)",
    "compute_dtype": "model.compute_dtype",
    "depth": "data.mining_depth",
    "fold": "the fold rule (data.train_fold, data.split_seed, data.split_sizes)",
    "data": "the training examples (data.format, data.dataset_dir)",
    "languages": "data.languages",
    "max_length": "data.query_max_length / data.passage_max_length",
    "prefixes": "the model's query / passage prefixes",
    "controls": "data.mining_skip_top / data.mining_margin / data.mining_range (with a range: "
                "data.seed)",
}


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
    bundle = _bundle(cfg, model)
    controls = MiningControls.from_config(cfg)
    meta = _meta(cfg, examples, languages, bundle, depth, controls)
    path = pathlib.Path(workdir) / CACHE if workdir else None
    if path is not None and path.is_file():
        return _read(path, meta, examples)
    import jax

    # Several hosts: the writing one mines and the others read its file, so that float near-ties
    # cannot give hosts different negatives.
    shared = path is not None and jax.process_count() > 1
    result = None
    if write or not shared:
        logging.info("mining hard negatives with %s (depth %d)", bundle.name, depth)
        result = mine(examples, languages, bundle, depth, int(cfg.query_max_length),
                      int(cfg.passage_max_length), controls)
        if path is not None and write:
            _write(path, meta, examples, result)
    if shared:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("hybrid_jax: mined negatives written")
        if result is None:
            result = _read(path, meta, examples)
    return result


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
        scores = np.stack([_query_vector(per_example[i], lang) for i in rows]) @ vectors.T
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


def _query_vector(by_language: dict, lang: str) -> np.ndarray:
    if lang in by_language:
        return by_language[lang]
    v = np.mean(list(by_language.values()), axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _bundle(cfg, model):
    spec = str(cfg.mining_model or "")
    if spec:
        from hybrid_jax.models.pretrained import load_pretrained
        model = load_pretrained(spec)
    if model is None:
        raise InputError("data.negative_source='mined' needs a model: set data.mining_model to a "
                         "model spec, or pass the run's starting model")
    return model.bundle(tied=not model.towers)


def _meta(cfg, examples, languages, bundle, depth: int, controls: MiningControls) -> dict:
    from hybrid_jax.retrieval.cache import params_fingerprint

    sizes = cfg.split_sizes
    meta = {
        "model": bundle.name,
        "fingerprint": params_fingerprint(bundle.params),
        "compute_dtype": str(bundle.config.compute_dtype),
        "depth": depth,
        "fold": {"train_fold": str(cfg.train_fold), "split_seed": int(cfg.split_seed),
                 "split_sizes": None if sizes is None else [float(s) for s in sizes]},
        "data": examples_fingerprint(examples),
        "languages": sorted(set(languages)),
        "max_length": [int(cfg.query_max_length), int(cfg.passage_max_length)],
        "prefixes": [bundle.prefix("query"), bundle.prefix("passage")],
    }
    if controls.active:  # absent when off, so caches written before the controls stay valid
        meta["controls"] = dataclasses.asdict(controls)
    return json.loads(json.dumps(meta))  # the form it takes after a round trip through the file


def examples_fingerprint(examples) -> str:
    """Hash of every example's key, article, texts and candidate negatives, in order."""
    h = hashlib.blake2b(digest_size=16)
    for e in examples:
        record = [e.key, e.article, sorted(e.queries.items()), sorted(e.passages.items()),
                  sorted((l, list(v)) for l, v in e.negatives.items())]
        h.update(json.dumps(record, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _write(path: pathlib.Path, meta: dict, examples, result) -> None:
    pools: dict[str, dict[str, int]] = {}
    negatives = {}
    for e, per_language in zip(examples, result):
        if per_language:
            negatives[e.key] = {l: [pools.setdefault(l, {}).setdefault(t, len(pools[l]))
                                    for t in texts] for l, texts in per_language.items()}
    doc = {"meta": meta, "passages": {l: list(p) for l, p in pools.items()},
           "negatives": negatives}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a run killed mid-write leaves no half file behind


def _read(path: pathlib.Path, meta: dict, examples) -> list[dict[str, tuple[str, ...]]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        stored, passages, negatives = doc["meta"], doc["passages"], doc["negatives"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: unreadable mined-negatives cache ({e}); delete it to mine "
                         f"again") from e
    changed = [k for k in _CHECKED if stored.get(k) != meta.get(k)]
    if changed:
        what = "; ".join(f"{_CHECKED[k]}: cached {_short(stored.get(k))}, now {_short(meta.get(k))}"
                         for k in changed)
        raise InputError(f"{path}: the mined negatives no longer match this run ({what}); "
                         f"restore those settings, or delete the file to mine again")
    try:
        return [{l: tuple(passages[l][j] for j in idx)
                 for l, idx in negatives.get(e.key, {}).items()} for e in examples]
    except (KeyError, IndexError, TypeError) as e:
        raise InputError(f"{path}: corrupt mined-negatives cache ({e!r}); delete it to mine "
                         f"again") from e


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
