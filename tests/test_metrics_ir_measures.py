"""Our metrics against trec_eval (through ir-measures' pytrec_eval provider): equal per query and
on average for tie-free rankings, on random pools and on the run / qrels files an evaluation
writes; the two documented differences (mAP@k's normaliser, the tie rule) tested as documented in
docs/evaluation.md."""
import numpy as np
import pytest

from hybrid_jax.evaluation import metrics as M
from hybrid_jax.evaluation import per_query
from hybrid_jax.evaluation.run import evaluate
from hybrid_jax.evaluation.scoring import score_pool
from test_eval_lareqa import make_dataset
from test_eval_run import ToyBundle, write_beir

ir_measures = pytest.importorskip("ir_measures")
from ir_measures import AP, RR, R, nDCG  # noqa: E402

TOL = 1e-9
K = 5  # mAP@k cut-off small enough that some queries have more relevant documents than k


def trec_eval(measures, qrels, run) -> dict:
    """{(query id, measure name): value} from trec_eval's own code (pytrec_eval)."""
    return {(m.query_id, str(m.measure)): m.value
            for m in ir_measures.pytrec_eval.iter_calc(measures, qrels, run)}


def random_pool(seed, n_queries=24, n_docs=60, depth=None):
    """Random embeddings (tie-free scores), 1..12 relevant documents per query with grades 1..3;
    our per-query metrics from score_pool, and the same pool as trec qrels and run dicts."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n_queries, 16)).astype(np.float32)
    c = rng.standard_normal((n_docs, 16)).astype(np.float32)
    relevant = [np.sort(rng.choice(n_docs, rng.integers(1, 13), replace=False))
                for _ in range(n_queries)]
    gains = [rng.integers(1, 4, len(r)).astype(np.float64) for r in relevant]
    depth = depth or n_docs
    res = score_pool(q, c, relevant, gains, k=K, recall_ks=(1, 10, 20), ndcg_k=10,
                     search="exact", depth=depth, want_topk=True)
    doc = [f"d{j:03d}" for j in range(n_docs)]
    qrels = {f"q{i}": {doc[j]: int(g) for j, g in zip(r, gs)}
             for i, (r, gs) in enumerate(zip(relevant, gains))}
    run = {f"q{i}": {doc[j]: float(s) for j, s in zip(idx, sc) if j >= 0}
           for i, (idx, sc) in enumerate(zip(res.topk_idx, res.topk_scores))}
    for ranked in run.values():
        assert len(set(ranked.values())) == len(ranked)  # tie-free, as these checks require
    return res.per_query, relevant, qrels, run


MEASURES = {"ndcg@10": nDCG @ 10, "recall@1": R @ 1, "recall@10": R @ 10, "recall@20": R @ 20,
            "mrr": RR, "map": AP}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_rankings_equal_trec_eval_per_query_and_on_average(seed):
    ours, relevant, qrels, run = random_pool(seed)
    theirs = trec_eval(list(MEASURES.values()) + [AP @ K], qrels, run)
    for name, measure in MEASURES.items():
        got = np.array([theirs[(f"q{i}", str(measure))] for i in range(len(relevant))])
        np.testing.assert_allclose(ours[name], got, rtol=0, atol=TOL, err_msg=name)
        aggregate = ir_measures.pytrec_eval.calc_aggregate([measure], qrels, run)[measure]
        assert abs(ours[name].mean() - aggregate) <= TOL, name
    # mAP@k: trec_eval's map_cut_k divides by |R|, ours by min(|R|, k) (docs/evaluation.md).
    n_rel = np.array([len(r) for r in relevant])
    cut = np.array([theirs[(f"q{i}", str(AP @ K))] for i in range(len(relevant))])
    assert (n_rel > K).any() and (n_rel <= K).any()
    np.testing.assert_allclose(ours[f"map@{K}"], cut * n_rel / np.minimum(n_rel, K),
                               rtol=0, atol=TOL)
    np.testing.assert_allclose(ours[f"map@{K}"][n_rel <= K], cut[n_rel <= K], rtol=0, atol=TOL)


def test_truncated_runs_equal_trec_eval_up_to_the_depth():
    """A top-20 run (what run.trec holds): every metric whose cut-off fits in the depth agrees;
    MRR agrees wherever a relevant document was retrieved (ours looks past the depth)."""
    ours, relevant, qrels, run = random_pool(3, n_docs=200, depth=20)
    measures = [nDCG @ 10, R @ 1, R @ 10, R @ 20, RR, AP @ K]
    theirs = trec_eval(measures, qrels, run)
    for name, measure in zip(["ndcg@10", "recall@1", "recall@10", "recall@20"], measures):
        got = np.array([theirs[(f"q{i}", str(measure))] for i in range(len(relevant))])
        np.testing.assert_allclose(ours[name], got, rtol=0, atol=TOL, err_msg=name)
    rr = np.array([theirs[(f"q{i}", "RR")] for i in range(len(relevant))])
    found = rr > 0
    assert found.any() and (~found).any()
    np.testing.assert_allclose(ours["mrr"][found], rr[found], rtol=0, atol=TOL)
    assert (ours["mrr"][~found] <= 1 / 21).all()


@pytest.mark.parametrize("relevant_doc, trec_rank", [("b", 1), ("a", 2)])
def test_ties_trec_eval_orders_by_document_id_descending_ours_pessimistic(relevant_doc,
                                                                           trec_rank):
    """Documents 'a' and 'b' tie on the top score, one of them relevant. trec_eval breaks the tie
    by document id, descending ('b' before 'a'), whatever the run file's rank column says; our
    exact ranks put the relevant one after the tied non-relevant one either way."""
    q = np.array([[1.0, 0.0]], np.float32)
    c = np.array([[0.6, 0.8], [0.6, 0.8], [0.5, 0.866], [0.0, 1.0]], np.float32)
    docs = ["a", "b", "c", "d"]
    rel = docs.index(relevant_doc)
    ours = score_pool(q, c, [np.array([rel])], search="exact", depth=4, want_topk=True)
    assert ours.exact_ranks[0, 0] == 2 and ours.per_query["mrr"][0] == 0.5
    run = {"q": {d: float(s) for d, s in zip(docs, q[0] @ c.T)}}
    theirs = trec_eval([RR], {"q": {relevant_doc: 1}}, run)[("q", "RR")]
    assert theirs == 1 / trec_rank
    assert M.reciprocal_rank([[trec_rank]])[0] == theirs


def test_files_an_evaluation_writes_parse_and_agree(tmp_path):
    """run.trec / qrels.trec of a small LAReQA set and a graded BEIR set, read by ir-measures:
    trec_eval on them equals the per-query metrics the evaluation saved (depth >= pool size)."""
    ds, _, _ = make_dataset({"q0": ("en", "de")}, n_q=8)
    write_beir(tmp_path / "tiny-beir")
    specs = [ds, {"name": "tiny-beir", "type": "beir", "path": str(tmp_path / "tiny-beir")}]
    cfg = {"k": K, "recall_ks": (1, 10), "depth": 100, "batch_size": 8, "max_length": 32,
           "buckets": (8, 16), "progress": False, "plots": False, "cache": False}
    evaluate(ToyBundle(0), specs, tmp_path / "run", cfg)
    for name, group in (("toy", "multi"), ("tiny-beir", "all")):
        d = tmp_path / "run" / "eval" / name
        run, qrels = {}, {}
        for row in ir_measures.read_trec_run(str(d / "run.trec")):
            run.setdefault(row.query_id, {})[row.doc_id] = row.score
        for row in ir_measures.read_trec_qrels(str(d / "qrels.trec")):
            qrels.setdefault(row.query_id, {})[row.doc_id] = row.relevance
        for ranked in run.values():
            assert len(set(ranked.values())) == len(ranked)  # no ties at 6 decimals
        table = per_query.load(d / "per_query.npz")[group]
        measures = {"ndcg@10": nDCG @ 10, "recall@1": R @ 1, "recall@10": R @ 10, "mrr": RR,
                    f"map@{K}": AP @ K}
        theirs = trec_eval(list(measures.values()), qrels, run)
        assert set(table["qid"]) <= {q for q, _ in theirs}
        for metric, measure in measures.items():
            got = np.array([theirs[(str(q), str(measure))] for q in table["qid"]])
            np.testing.assert_allclose(table[metric], got, rtol=0, atol=TOL,
                                       err_msg=f"{name} {metric}")
