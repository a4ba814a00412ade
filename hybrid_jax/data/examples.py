"""The training unit every source is reduced to: one parallel example per id.

An example holds the query and its positive passage in each language it exists in (partial
coverage allowed). The sampler pairs `queries[q_lang]` with `passages[p_lang]`.
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

    def to_record(self) -> dict:
        return {"key": self.key, "article": self.article,
                "queries": dict(self.queries), "passages": dict(self.passages)}

    @classmethod
    def from_record(cls, r: dict) -> "ParallelExample":
        return cls(r["key"], r["article"], dict(r["queries"]), dict(r["passages"]))


def from_lareqa(dataset: LareqaDataset) -> list[ParallelExample]:
    """One example per question id; the passage in L is the answer sentence in L's paragraph."""
    text_of = {c.uid: c.text for c in dataset.candidates}
    queries: dict[str, dict[str, str]] = {}
    passages: dict[str, dict[str, str]] = {}
    # The split unit (articles linked across languages by shared question ids), so that
    # splits.split_examples on these examples matches splits.split_articles on the dataset.
    unit_of = splits.article_units(dataset)
    article: dict[str, str] = {}
    for q in dataset.questions:
        queries.setdefault(q.qid, {})[q.language] = q.text
        passages.setdefault(q.qid, {})[q.language] = text_of[q.answer_uid]
        article[q.qid] = unit_of[(q.language, q.article)]
    return [ParallelExample(k, article[k], queries[k], passages[k]) for k in sorted(queries)]


def languages_of(examples) -> list[str]:
    return sorted({l for e in examples for l in (*e.queries, *e.passages)})
