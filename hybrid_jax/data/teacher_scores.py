"""Teacher scores for distillation (loss.distill): for every training pair, a teacher's score of the
query against the positive and against each candidate hard negative.

Scores are keyed like the negatives, by passage language: an example's score in language Y is the
teacher's score of its query against its positive (or a candidate negative) in Y, and every pair
whose passage is in Y uses it, whatever its query language (the queries of an example are
translations of one another). They come from
- the data (`data.teacher_model = ''`): the records' `pos_scores` / `neg_scores` (pairs_jsonl.py),
  which score the records' own negatives (`data.negative_source = 'from_data'`);
- a model (`data.teacher_model = <model spec>`): the inner product of L2-normalised embeddings at
  the training lengths, of the query in Y (where the example has none in Y: the normalised mean of
  its query embeddings, as in mining) with the positive in Y and every candidate negative the
  run's negative source gives (mined ones included). Scored once and cached as
  <workdir>/teacher/scores.json with the teacher's fingerprint, the fold, the data and the scored
  candidates (workdir_cache.py): a resumed run reuses the file, a changed one is refused.

A pair without a score (a language the data does not score, a padding negative) reads NaN, which
the loss leaves out (train/losses.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import pathlib

import numpy as np

from hybrid_jax.data import workdir_cache
from hybrid_jax.data.mining import query_vector
from hybrid_jax.errors import InputError

CACHE = pathlib.Path("teacher") / "scores.json"
_CHECKED = {**{k: v.format(model="teacher model (data.teacher_model)")
               for k, v in workdir_cache.MODEL_CHECKED.items()},
            "candidates": "the candidate negatives scored (data.negative_source and its settings)"}


class TeacherScores:
    """Per example and passage language: the positive's score and the candidate negatives' scores
    (by the sampler's passage id); `batch` reads those of a batch's pairs."""

    def __init__(self, sampler, negatives, per_example):
        """`per_example[i]`: language -> (positive score or None, {negative text: score})."""
        self._positive = np.full((len(sampler.examples), len(sampler.languages)), np.nan,
                                 np.float32)
        self._negative: list[dict[int, dict[int, float]]] = []
        for i, per_language in enumerate(per_example):
            by_code = {sampler.code[l]: v for l, v in per_language.items() if l in sampler.code}
            for code, (positive, _) in by_code.items():
                if positive is not None:
                    self._positive[i, code] = positive
            row = {}
            for code, pids in (negatives.candidate_ids(i) if negatives else {}).items():
                given = by_code.get(code, (None, {}))[1]
                row[code] = {p: given[negatives.text(p)] for p in pids
                             if negatives.text(p) in given}
            self._negative.append(row)
        self.stats = {"positives": int(np.isfinite(self._positive).sum()),
                      "negatives": sum(len(s) for row in self._negative for s in row.values())}

    def batch(self, example_index, passage_lang, negative_passage) -> dict[str, np.ndarray]:
        """positive_score float32 [b], negative_score float32 [b, H] (NaN: no score) of the pairs
        (example_index, passage_lang) with negatives `negative_passage` [b, H] (-1 = padding)."""
        positive = self._positive[example_index, passage_lang]
        shape = (len(example_index), 0 if negative_passage is None else negative_passage.shape[1])
        negative = np.full(shape, np.nan, np.float32)
        for slot, (i, code) in enumerate(zip(example_index.tolist(), passage_lang.tolist())):
            scored = self._negative[i].get(code, {})
            for j, pid in enumerate(negative_passage[slot].tolist() if shape[1] else ()):
                negative[slot, j] = scored.get(pid, np.nan)
        return {"positive_score": positive.astype(np.float32), "negative_score": negative}


def make_teacher_scores(cfg, sampler, negatives, *, workdir=None,
                        write: bool = True) -> TeacherScores:
    """The teacher scores of `cfg` (config.data) for the sampler's examples and the candidates of
    `negatives` (a negatives.HardNegatives); see the module doc."""
    spec = str(cfg.get("teacher_model", "") or "")
    examples = sampler.examples
    if not spec:
        per_example = [_from_data(e) for e in examples]
        if not any(positive is not None for row in per_example for positive, _ in row.values()):
            raise InputError(
                f"data.teacher_model='': no example of fold {cfg.train_fold!r} in "
                f"{cfg.dataset_dir or 'the given examples'} has teacher scores (pos_scores); "
                f"set data.teacher_model to a model spec to score the pairs with it")
    else:
        per_example = _model_scores(cfg, spec, sampler, negatives, workdir, write)
    scores = TeacherScores(sampler, negatives, per_example)
    logging.info("teacher scores: %s", scores.stats)
    return scores


def _from_data(example) -> dict:
    languages = set(example.positive_scores) | set(example.negative_scores)
    return {l: (example.positive_scores.get(l),
                _first_scores(example.negatives.get(l, ()), example.negative_scores.get(l, ())))
            for l in languages}


def _first_scores(texts, scores) -> dict:
    """text -> score; a negative listed twice keeps its first score, as the prepared corpus
    does (its first occurrence is the candidate)."""
    out: dict = {}
    for text, score in zip(texts, scores):
        out.setdefault(text, score)
    return out


def _candidate_texts(sampler, negatives) -> list[dict[str, list[str]]]:
    """Per example: language -> the candidate negatives to score, in table order."""
    if negatives is None:
        return [{} for _ in sampler.examples]
    return [{sampler.languages[c]: [negatives.text(p) for p in pids]
             for c, pids in negatives.candidate_ids(i).items()}
            for i in range(len(sampler.examples))]


def _model_scores(cfg, spec, sampler, negatives, workdir, write) -> list[dict]:
    return model_scores(cfg, spec, sampler.examples, sampler.languages,
                        _candidate_texts(sampler, negatives), workdir, write)


def model_scores(cfg, spec, examples, languages, candidates, workdir=None,
                 write: bool = True) -> list[dict]:
    """Per example: language -> (positive score, {candidate text: score}) by teacher `spec`,
    `candidates[i]` (language -> texts) in table order; cached in `workdir` (module doc)."""
    bundle = workdir_cache.model_bundle(spec, None, "data.teacher_model", "data.teacher_model")
    meta = workdir_cache.round_trip({
        **workdir_cache.model_meta(cfg, examples, languages, bundle),
        "candidates": _fingerprint(candidates)})

    def compute():
        logging.info("scoring the training pairs with teacher %s", bundle.name)
        return score_pairs(examples, languages, candidates, bundle,
                           int(cfg.query_max_length), int(cfg.passage_max_length))

    rows = workdir_cache.computed_once(
        pathlib.Path(workdir) / CACHE if workdir else None, meta, _CHECKED, "teacher scores",
        compute, lambda r: {"scores": {e.key: row for e, row in zip(examples, r)}},
        lambda doc: [doc["scores"][e.key] for e in examples], write=write)
    return [{l: (positive, dict(zip(texts.get(l, ()), negative)))
             for l, (positive, negative) in row.items()} for row, texts in zip(rows, candidates)]


def score_pairs(examples, languages, candidates, bundle, query_max_length: int,
                passage_max_length: int) -> list[dict[str, list]]:
    """Per example: language -> [positive score, [scores of candidates[i][language]]], for each
    training language the example has a positive in (no cache)."""
    from hybrid_jax.retrieval import embed_texts

    languages = set(languages)
    queries = [(i, l) for i, e in enumerate(examples) for l in sorted(e.queries) if l in languages]
    q_emb = embed_texts(bundle, [examples[i].queries[l] for i, l in queries], "query",
                        max_length=query_max_length) if queries else []
    by_example: dict[int, dict[str, np.ndarray]] = {}
    for (i, l), v in zip(queries, q_emb):
        by_example.setdefault(i, {})[l] = v
    pool = list(dict.fromkeys(
        (l, t) for i, e in enumerate(examples) if i in by_example
        for l in sorted(set(e.passages) & languages)
        for t in (e.passages[l], *candidates[i].get(l, ()))))
    p_emb = embed_texts(bundle, [t for _, t in pool], "passage",
                        max_length=passage_max_length) if pool else []
    index = {key: j for j, key in enumerate(pool)}
    out: list[dict[str, list]] = [{} for _ in examples]
    for i, e in enumerate(examples):
        for l in sorted(set(e.passages) & languages) if i in by_example else ():
            q = query_vector(by_example[i], l)
            texts = (e.passages[l], *candidates[i].get(l, ()))
            scores = [float(p_emb[index[(l, t)]] @ q) for t in texts]
            out[i][l] = [scores[0], scores[1:]]
    return out


def _fingerprint(candidates) -> str:
    h = hashlib.blake2b(digest_size=16)
    for row in candidates:
        h.update(json.dumps(sorted(row.items()), ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
