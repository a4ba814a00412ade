"""Mined hard negatives (data.negative_source='mined') for a corpus prepared from the configured
source (data.store '' or 'auto'): mining.py's candidates as an array of the corpus's text ids.

A corpus holds token ids, not texts, and the mining model may tokenize differently, so the fold's
examples are read from the source (cheap for the formats prepared on first use) and mined exactly
as on the examples path, through the same cache (<workdir>/negatives/mined.json, keyed by the
examples, the model and the settings: workdir_cache.py). Each mined text is then the corpus id of
that text: every text in the mining pool is some example's positive or candidate negative, whose
ids the corpus holds in the same cells as the examples hold their texts.
"""
from __future__ import annotations

import numpy as np

from hybrid_jax.data import examples_path, mining
from hybrid_jax.data.train_fraction import fraction_of_examples
from hybrid_jax.errors import InputError


def mined_table(cfg, part, mining_model, workdir, write: bool) -> tuple[np.ndarray, list]:
    """(int64 [E', L', data.mining_depth]: per example of `part` (a store_source.CorpusPart) and
    training language, the mined candidates' corpus text ids, best first (-1 padding); the mined
    texts, mining.mined_candidates' list)."""
    depth, count = int(cfg.mining_depth), int(cfg.hard_negatives)
    if depth < count:
        raise InputError(f"data.mining_depth: {depth} mined candidates cannot give "
                         f"data.hard_negatives={count} per pair")
    examples = fold_examples(cfg, part)
    mined = mining.mined_candidates(cfg, examples, part.languages, mining_model, workdir,
                                    write=write)
    ids = text_ids(part, examples)
    out = np.full((len(examples), len(part.languages), depth), -1, np.int64)
    for i, per_language in enumerate(mined):
        for lang, texts in per_language.items():
            if lang in ids:
                j = part.languages.index(lang)
                out[i, j, :len(texts)] = [ids[lang][t] for t in texts]
    return out, mined


def fold_examples(cfg, part) -> list:
    """The source's examples of the fold, in the order of `part`'s rows (checked by key)."""
    examples = fraction_of_examples(examples_path.load_training_examples(cfg),
                                    float(cfg.get("train_fraction", 1.0)), int(cfg.split_seed))
    keys = part.corpus.keys()
    if [e.key for e in examples] != [keys[r] for r in part.rows]:
        raise InputError(f"data.negative_source='mined': {part.corpus.path} does not hold the "
                         f"examples of {cfg.dataset_dir} (fold {cfg.train_fold!r}) in order; "
                         f"delete it to prepare it again")
    return examples


def text_ids(part, examples) -> dict[str, dict[str, int]]:
    """language -> text -> corpus id, from the cells the examples and the corpus share."""
    c = part.corpus
    positive = np.asarray(c.positive[part.rows][:, part.columns])
    negative = np.asarray(c.negative[part.rows][:, part.columns])
    ids: dict[str, dict[str, int]] = {l: {} for l in part.languages}
    for i, e in enumerate(examples):
        for j, lang in enumerate(part.languages):
            if lang in e.passages:
                ids[lang][e.passages[lang]] = int(positive[i, j])
            for text, t in zip(e.negatives.get(lang, ()), negative[i, j].tolist()):
                ids[lang][text] = int(t)
    return ids
