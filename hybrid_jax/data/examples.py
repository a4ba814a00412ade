"""The training unit every source is reduced to: one parallel example per id.

An example holds the query and its positive passage in each language it exists in (partial
coverage allowed), and optionally candidate hard negatives per language. The sampler pairs
`queries[q_lang]` with `passages[p_lang]`; a hard negative of that pair is drawn from
`negatives[p_lang]` (see negatives.py for the rules that filter them). Teacher scores for
distillation (optional, from the data) are keyed by the passage language too: the teacher's score
of the query against the positive in that language, and of each candidate negative there.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

from hybrid_jax.data import splits
from hybrid_jax.data.lareqa import LareqaDataset


@dataclasses.dataclass(frozen=True)
class ParallelExample:
    key: str                      # question id / record id, shared across languages
    article: str                  # unit for leakage-free splits ('' when unknown)
    queries: Mapping[str, str]    # language -> query text
    passages: Mapping[str, str]   # language -> positive passage text
    # language -> candidate hard negatives in that language: the other sentences of the
    # positive's paragraph (LAReQA sources) or the record's own `negatives` (parallel pairs).
    negatives: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    # language -> the teacher's score of (query, positive in that language); may cover fewer
    # languages than `passages`.
    positive_scores: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # language -> the teacher's scores of negatives[language], in the same order.
    negative_scores: Mapping[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)

    def to_record(self) -> dict:
        record = {"key": self.key, "article": self.article,
                  "queries": dict(self.queries), "passages": dict(self.passages),
                  "negatives": {l: list(v) for l, v in self.negatives.items()}}
        if self.positive_scores or self.negative_scores:  # records without scores stay as before
            record.update(positive_scores=dict(self.positive_scores),
                          negative_scores={l: list(v) for l, v in self.negative_scores.items()})
        return record

    @classmethod
    def from_record(cls, r: dict) -> "ParallelExample":
        # Records written before negatives existed have no such key.
        negatives = {l: tuple(v) for l, v in r.get("negatives", {}).items()}
        negative_scores = {l: tuple(v) for l, v in r.get("negative_scores", {}).items()}
        return cls(r["key"], r["article"], dict(r["queries"]), dict(r["passages"]), negatives,
                   dict(r.get("positive_scores", {})), negative_scores)


def from_lareqa(dataset: LareqaDataset) -> list[ParallelExample]:
    """One example per question id; the passage in L is the answer sentence in L's paragraph and
    the negatives in L are that paragraph's other sentences, in sentence order."""
    text_of = {c.uid: c.text for c in dataset.candidates}
    paragraph: dict[str, list[str]] = {}   # "<lang>/<title>/<para_idx>" -> sentence uids in order
    for c in dataset.candidates:
        paragraph.setdefault(c.uid.rsplit("/", 1)[0], []).append(c.uid)
    queries: dict[str, dict[str, str]] = {}
    passages: dict[str, dict[str, str]] = {}
    negatives: dict[str, dict[str, tuple[str, ...]]] = {}
    # The split unit (articles linked across languages by shared question ids), so that
    # splits.split_examples on these examples matches splits.split_articles on the dataset.
    unit_of = splits.article_units(dataset)
    article: dict[str, str] = {}
    for q in dataset.questions:
        queries.setdefault(q.qid, {})[q.language] = q.text
        passages.setdefault(q.qid, {})[q.language] = text_of[q.answer_uid]
        others = tuple(text_of[u] for u in paragraph[q.answer_uid.rsplit("/", 1)[0]]
                       if u != q.answer_uid)
        if others:
            negatives.setdefault(q.qid, {})[q.language] = others
        article[q.qid] = unit_of[(q.language, q.article)]
    return [ParallelExample(k, article[k], queries[k], passages[k], negatives.get(k, {}))
            for k in sorted(queries)]


def languages_of(examples) -> list[str]:
    return sorted({l for e in examples for l in (*e.queries, *e.passages)})
