"""Write a prepared corpus (format version 1, docs/data.md) from ParallelExamples with numpy, for
tests of the readers of that format."""
import json
import pathlib

import numpy as np

from hybrid_jax.data.store.prepare import tokenizer_fingerprint


def write_corpus(examples, tokenizer, path, scores: bool = False) -> pathlib.Path:
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    languages = sorted({l for e in examples for l in (*e.queries, *e.passages, *e.negatives)})
    col = {l: j for j, l in enumerate(languages)}
    ids: dict = {}

    def text_id(lang, text):
        return ids.setdefault((lang, text), len(ids))

    E, L = len(examples), len(languages)
    K = max([len(v) for e in examples for v in e.negatives.values()] + [0])
    query = np.full((E, L), -1, np.int64)
    positive = np.full((E, L), -1, np.int64)
    negative = np.full((E, L, K), -1, np.int64)
    for i, e in enumerate(examples):
        for l, t in e.queries.items():
            query[i, col[l]] = text_id(l, t)
        for l, t in e.passages.items():
            positive[i, col[l]] = text_id(l, t)
        for l, texts in e.negatives.items():
            for k, t in enumerate(texts):
                negative[i, col[l], k] = text_id(l, t)
    texts = sorted(ids, key=ids.get)
    seqs = [s[1:-1] for s in tokenizer.token_ids([t for _, t in texts])]
    offsets = np.zeros(len(seqs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(s) for s in seqs])
    tokens = np.array([t for s in seqs for t in s], np.int32)
    unit_names = sorted({e.article for e in examples})
    unit_of = {u: i for i, u in enumerate(unit_names)}
    arrays = dict(tokens=tokens, offsets=offsets,
                  text_lang=np.array([col[l] for l, _ in texts], np.int16),
                  query=query, positive=positive, negative=negative,
                  unit=np.array([unit_of[e.article] for e in examples], np.int64))
    if scores:
        rng = np.random.default_rng(0)
        arrays["positive_score"] = np.where(positive >= 0, rng.random((E, L)), np.nan).astype(np.float32)
        arrays["negative_score"] = np.where(negative >= 0, rng.random((E, L, K)), np.nan).astype(np.float32)
    for name, a in arrays.items():
        np.save(path / f"{name}.npy", a)
    (path / "keys.txt").write_text("".join(f"{e.key}\n" for e in examples), encoding="utf-8")
    (path / "units.txt").write_text("".join(f"{u}\n" for u in unit_names), encoding="utf-8")
    meta = {"format_version": 1,
            "tokenizer": {"spec": tokenizer.name, "fingerprint": tokenizer_fingerprint(tokenizer)},
            "languages": languages, "n_texts": len(texts), "n_examples": E, "max_negatives": K,
            "has_scores": scores, "sources": [], "units": len(unit_names)}
    (path / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return path
