"""Teacher scores from a model (data.teacher_model) for a corpus prepared from the configured
source: teacher_scores.py's scores, as arrays over the corpus's rows and text ids.

The model scores texts, so the fold's examples are read from the source (store_mined.py) and
scored exactly as on the examples path, through the same cache (<workdir>/teacher/scores.json,
keyed by the examples, the teacher and the candidates scored): each example's query against its
positive and every candidate negative the run's negative source gives it, first occurrences, its
own positive left out.
"""
from __future__ import annotations

import numpy as np

from hybrid_jax.data import teacher_scores
from hybrid_jax.data.store_mined import fold_examples, text_ids
from hybrid_jax.data.store_source import scores_of


class ModelScores:
    """positive [E', L'] float32, and per (example, language) the candidates' ids [E', L', K]
    with their scores [E', L', K] (NaN: none)."""

    def __init__(self, positive, candidates, scores):
        self.positive, self.candidates, self.scores = positive, candidates, scores

    def batch(self, idx, p_lang, chosen):
        """store_source.CorpusScores.batch: idx are the part's example indices."""
        positive = self.positive[idx, p_lang]
        if chosen is None:
            return positive, None
        return positive, scores_of(self.candidates[idx, p_lang], self.scores[idx, p_lang], chosen)


def model_table(cfg, spec: str, part, negatives, workdir=None, write: bool = True) -> ModelScores:
    examples = fold_examples(cfg, part)
    texts = candidate_texts(part.languages, examples, getattr(negatives, "mined_texts", None),
                            negatives is not None)
    rows = teacher_scores.model_scores(cfg, spec, examples, part.languages, texts, workdir, write)
    ids = text_ids(part, examples)
    E, L = len(examples), len(part.languages)
    K = max([len(v) for row in texts for v in row.values()] + [0])
    positive = np.full((E, L), np.nan, np.float32)
    candidates = np.full((E, L, K), -1, np.int64)
    scores = np.full((E, L, K), np.nan, np.float32)
    for i, row in enumerate(rows):
        for lang, (score, by_text) in row.items():
            j = part.languages.index(lang)
            if score is not None:
                positive[i, j] = score
            for k, text in enumerate(texts[i].get(lang, ())):
                candidates[i, j, k] = ids[lang][text]
                scores[i, j, k] = by_text.get(text, np.nan)
    return ModelScores(positive, candidates, scores)


def candidate_texts(languages, examples, mined, with_negatives: bool) -> list[dict]:
    """Per example: language -> the candidate negatives to score, as the examples path's table
    holds them (first occurrences, the example's own positive left out, languages without any
    left out), so both paths score and cache the same candidates."""
    out = []
    for i, e in enumerate(examples):
        row = {}
        given = (mined[i] if mined is not None else e.negatives) if with_negatives else {}
        for lang in languages:
            kept = [t for t in dict.fromkeys(given.get(lang, ())) if t != e.passages.get(lang)]
            if kept:
                row[lang] = kept
        out.append(row)
    return out
