"""LAReQA-style evaluation (XQuAD-R, MLQA-R): mono, cross and multi settings and language bias.

Settings, for query language X and candidate language Y:
  mono  X == Y: questions of X against the candidates of X; macro = mean over languages.
  cross X != Y: questions of X against the candidates of Y; macro = mean over the (X, Y) pairs.
  multi: questions against the pooled candidates of every language; macro = mean over query
         languages of the per-language mean (micro = mean over all questions, also reported).
Relevance is LAReQA's: a question's answer sentence in every language where the question exists.
In a pool only the relevant candidates present in that pool count (|R| = 1 in mono/cross for
XQuAD-R). A question with no relevant candidate in a pool (MLQA-R: its id does not exist in Y) is
skipped in that pool, not scored 0, and an (X, Y) pair with no scorable question is left out.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hybrid_jax.evaluation import bias
from hybrid_jax.evaluation import per_query as PQ
from hybrid_jax.evaluation.scoring import score_pool


@dataclasses.dataclass
class EvalOutput:
    metrics: dict                                   # JSON-ready
    groups: dict[str, dict[str, np.ndarray]]        # per-query tables (per_query.py)
    run: list[tuple[str, list[str], np.ndarray]]    # (query id, doc ids best first, scores)
    qrels: dict[str, dict[str, int]]                # query id -> doc id -> grade


def trec_query_id(question) -> str:
    """Question ids repeat across languages, so TREC ids carry the language."""
    return f"{question.language}_{question.qid}"


def mean_metrics(table: dict[str, np.ndarray]) -> dict:
    out = {m: float(np.nanmean(table[m])) for m in PQ.metric_names(table)
           if np.isfinite(table[m]).any()}
    out["n_queries"] = int(len(table["qid"]))
    return out


def macro(entries: list[dict]) -> dict:
    """Unweighted mean of each metric over entries (language pairs or languages)."""
    names = sorted({m for e in entries for m in e if m != "n_queries"})
    out = {m: float(np.mean([e[m] for e in entries if m in e])) for m in names}
    out["n_entries"] = len(entries)
    return out


def evaluate_lareqa(dataset, q_emb: np.ndarray, c_emb: np.ndarray, *, k: int = 20,
                    recall_ks=(1, 10, 100), ndcg_k: int = 10, search: str = "auto",
                    depth: int = 100) -> EvalOutput:
    questions, cands = dataset.questions, dataset.candidates
    uid_index = {c.uid: i for i, c in enumerate(cands)}
    c_lang = np.array([c.language for c in cands])
    q_lang = np.array([q.language for q in questions])
    relevant = [np.array(sorted(uid_index[u] for u in dataset.relevant_uids(q) if u in uid_index),
                         np.int64) for q in questions]
    ids = {"qid": np.array([trec_query_id(q) for q in questions]), "lang": q_lang,
           "cluster": np.array([q.qid for q in questions])}
    kw = dict(k=k, recall_ks=recall_ks, ndcg_k=ndcg_k, search=search, depth=depth)
    groups, search_info = {}, {}

    # multi: every question against every candidate.
    has = np.array([len(r) > 0 for r in relevant])
    qi = np.flatnonzero(has)
    res = score_pool(q_emb[qi], c_emb, [relevant[i] for i in qi], want_topk=True,
                     want_exact=True, **kw)
    groups["multi"] = {**PQ.select(ids, qi), **res.per_query,
                       "rank_distance": bias.rank_distance(res.exact_ranks)}
    search_info["multi"] = res.info
    run = [(ids["qid"][i], [cands[j].uid for j in row if j >= 0], sc[row >= 0])
           for i, row, sc in zip(qi, res.topk_idx, res.topk_scores)]
    qrels = {ids["qid"][i]: {cands[j].uid: 1 for j in relevant[i]} for i in qi}

    # pools of one candidate language: mono (X == Y) and cross (X != Y) rows together.
    for y in sorted(set(c_lang.tolist())):
        pool = np.flatnonzero(c_lang == y)
        local = -np.ones(len(cands), np.int64)
        local[pool] = np.arange(len(pool))
        rel_y = [local[r[c_lang[r] == y]] for r in relevant]
        qi = np.flatnonzero([len(r) > 0 for r in rel_y])
        if len(qi) == 0:
            continue
        res = score_pool(q_emb[qi], c_emb[pool], [rel_y[i] for i in qi], **kw)
        groups[f"pool={y}"] = {**PQ.select(ids, qi), **res.per_query}
        search_info[f"pool={y}"] = res.info

    return EvalOutput(summarise(groups, k=k, search_info=search_info), groups, run, qrels)


def summarise(groups: dict, *, k: int, search_info: dict | None = None) -> dict:
    """metrics.json content from the per-query tables."""
    v = PQ.views(groups)
    mono = {n.split("/", 1)[1]: mean_metrics(t) for n, t in v.items()
            if n.startswith("mono/") and len(t["qid"])}
    cross = {n.split("/", 1)[1]: mean_metrics(t) for n, t in v.items()
             if n.startswith("cross/") and len(t["qid"])}
    multi_lang = {n.split("/", 1)[1]: mean_metrics(t) for n, t in v.items()
                  if n.startswith("multi/") and len(t["qid"])}
    for m in multi_lang.values():
        m.pop("rank_distance", None)   # reported under rank_distance
    # Cross summary per query language: mean over its target languages (for plots and tables).
    cross_by_query = {}
    for x in sorted({p.split("->")[0] for p in cross}):
        cross_by_query[x] = macro([m for p, m in cross.items() if p.split("->")[0] == x])
    multi_micro = mean_metrics(groups["multi"])
    multi_micro.pop("rank_distance", None)
    m = groups["multi"]
    return {
        "type": "lareqa", "k": k,
        "languages": sorted(set(m["lang"].tolist())),
        "mono": {"macro": macro(list(mono.values())), "per_language": mono},
        "cross": {"macro": macro(list(cross.values())), "pairs": cross,
                  "per_query_language": cross_by_query},
        "multi": {"macro": macro(list(multi_lang.values())), "micro": multi_micro,
                  "per_language": multi_lang},
        "rank_distance": bias.summarise(m["rank_distance"], m["lang"]),
        "search": search_info or {},
        "definitions": {
            "mono_macro": "mean over languages X of mAP etc. of X questions vs X candidates",
            "cross_macro": "mean over ordered pairs X != Y with >= 1 scorable question",
            "multi_macro": "mean over query languages of the per-language mean in the pooled "
                           "setting; multi.micro is the mean over all questions",
            "rank_distance": "multi setting, exact ranks: worst minus best relevant rank per "
                             "question, mean per query language, macro over languages; "
                             "questions with < 2 relevant candidates skipped",
            "ties": "pessimistic: relevant candidates rank after equal-scored non-relevant ones",
        },
    }
