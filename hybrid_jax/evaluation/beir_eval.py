"""Monolingual BEIR / MIRACL evaluation: nDCG@10 with graded qrels, Recall@100, MRR, mAP@k."""
from __future__ import annotations

import numpy as np

from hybrid_jax.evaluation.lareqa_eval import EvalOutput, mean_metrics
from hybrid_jax.evaluation.scoring import score_pool


def evaluate_beir(dataset, q_emb: np.ndarray, c_emb: np.ndarray, *, k: int = 20,
                  recall_ks=(1, 10, 100), ndcg_k: int = 10, search: str = "auto",
                  depth: int = 100) -> EvalOutput:
    index = {d: i for i, d in enumerate(dataset.doc_ids)}
    relevant, gains = [], []
    for q in dataset.query_ids:
        items = sorted(dataset.qrels[q].items(), key=lambda kv: index[kv[0]])
        relevant.append(np.array([index[d] for d, _ in items], np.int64))
        gains.append(np.array([g for _, g in items], np.float64))
    res = score_pool(q_emb, c_emb, relevant, gains, k=k, recall_ks=recall_ks, ndcg_k=ndcg_k,
                     search=search, depth=depth, want_topk=True, want_exact=False)
    qids = np.array(dataset.query_ids)
    table = {"qid": qids, "lang": np.array([dataset.language] * len(qids)), "cluster": qids,
             **res.per_query}
    run = [(q, [dataset.doc_ids[j] for j in row if j >= 0], sc[row >= 0])
           for q, row, sc in zip(dataset.query_ids, res.topk_idx, res.topk_scores)]
    metrics = {"type": "beir", "k": k, "language": dataset.language,
               "all": mean_metrics(table), "search": {"all": res.info},
               "definitions": {"ndcg": "linear graded gains, log2(rank+1) discount",
                               "ties": "exact search: pessimistic for relevant documents"}}
    return EvalOutput(metrics, {"all": table}, run, dict(dataset.qrels))
