"""Metrics, tie rule and rank distance against hand-computed cases."""
import math

import numpy as np
import pytest

from hybrid_jax.evaluation import bias
from hybrid_jax.evaluation import metrics as M

INF = np.inf


def test_average_precision_hand_cases():
    # ranks 1 and 3 of two relevant: (1/1 + 2/3) / 2
    assert M.average_precision([[1, 3]], [2], 20)[0] == pytest.approx((1 + 2 / 3) / 2)
    # order of the ranks given does not matter
    assert M.average_precision([[3, 1]], [2], 20)[0] == pytest.approx((1 + 2 / 3) / 2)
    # fewer relevant than k, one never retrieved (inf): only rank 2 counts, normaliser 2
    assert M.average_precision([[2, INF]], [2], 20)[0] == pytest.approx(0.25)
    # a relevant item beyond k: AP@20 ignores it, full AP counts it
    assert M.average_precision([[3, 25]], [2], 20)[0] == pytest.approx((1 / 3) / 2)
    assert M.average_precision([[3, 25]], [2], None)[0] == pytest.approx((1 / 3 + 2 / 25) / 2)
    # more relevant than k: normaliser min(|R|, k) = 2, so a perfect top-2 scores 1
    assert M.average_precision([[1, 2, 5]], [3], 2)[0] == pytest.approx(1.0)
    # padded batch: second query has one relevant item (pad with inf)
    ap = M.average_precision([[1, 2], [4, INF]], [2, 1], 20)
    np.testing.assert_allclose(ap, [1.0, 0.25])


def test_recall_mrr_ndcg_hand_cases():
    r = np.array([[1, 3], [12, INF]])
    np.testing.assert_allclose(M.recall_at(r, [2, 2], 1), [0.5, 0.0])
    np.testing.assert_allclose(M.recall_at(r, [2, 2], 10), [1.0, 0.0])
    np.testing.assert_allclose(M.recall_at(r, [2, 2], 100), [1.0, 0.5])
    np.testing.assert_allclose(M.reciprocal_rank(r), [1.0, 1 / 12])
    ndcg = M.ndcg_at(r, np.array([[1.0, 1.0], [1.0, 1.0]]), 10)
    assert ndcg[0] == pytest.approx((1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert ndcg[1] == 0.0
    # graded: grade 3 at rank 2, grade 1 at rank 1
    g = M.ndcg_at([[2, 1]], [[3.0, 1.0]], 10)[0]
    assert g == pytest.approx((3 / math.log2(3) + 1) / (3 + 1 / math.log2(3)))


def test_query_metrics_keys():
    out = M.query_metrics([[1, 3]], [2], k=20)
    assert set(out) == {"map@20", "map", "recall@1", "recall@10", "recall@100", "ndcg@10", "mrr"}


def test_pessimistic_ties():
    q = np.array([[1.0, 0.0]], np.float32)
    c = np.array([[1, 0], [1, 0], [0.5, 0.5], [0, 1], [1, 0]], np.float32)  # 0, 1, 4 tie at 1.0
    # A lone relevant candidate ranks behind every tied non-relevant one, whatever its index.
    assert M.exact_relevant_ranks(q, c, [np.array([0])])[0, 0] == 3
    assert M.exact_relevant_ranks(q, c, [np.array([4])])[0, 0] == 3
    # Tied relevant candidates are ordered by index among themselves, after the non-relevant.
    np.testing.assert_array_equal(M.exact_relevant_ranks(q, c, [np.array([4, 0])])[0], [3, 2])
    # Untied candidates: plain ranks.
    assert M.exact_relevant_ranks(q, c, [np.array([2])])[0, 0] == 4
    assert M.exact_relevant_ranks(q, c, [np.array([3])])[0, 0] == 5
    # A constant model (everything tied) puts the relevant item last: no credit from ties.
    flat = np.ones((6, 2), np.float32)
    assert M.exact_relevant_ranks(q, flat, [np.array([0])])[0, 0] == 6


def test_exact_ranks_match_sorting_reference():
    rng = np.random.default_rng(0)
    c = rng.standard_normal((200, 4)).astype(np.float32)
    c[50:60] = c[0]  # a block of exact duplicates
    q = rng.standard_normal((40, 4)).astype(np.float32)
    rel = [rng.choice(200, rng.integers(1, 14), replace=False) for _ in q]  # both count paths
    rel[0] = np.array([55, 0, 3])
    ranks = M.exact_relevant_ranks(q, c, rel, block=16)
    scores = q @ c.T
    scores[:, 50:60] = scores[:, :1]
    for i, r in enumerate(rel):
        is_rel = np.isin(np.arange(200), r)
        order = np.lexsort((np.arange(200), is_rel, -scores[i]))  # score desc, non-rel first
        pos = {int(c_): p + 1 for p, c_ in enumerate(order)}
        np.testing.assert_array_equal(ranks[i, :len(r)], [pos[int(x)] for x in r])
        assert np.isinf(ranks[i, len(r):]).all()


def test_topk_ranks():
    topk = np.array([[5, 2, 9, -1]])
    np.testing.assert_array_equal(M.topk_relevant_ranks(topk, [np.array([9, 7, 5])]),
                                  [[3, INF, 1]])


def test_rank_distance_on_constructed_ranking():
    ranks = np.array([[1, 5, 3], [2, INF, INF], [7, 8, INF]])
    d = bias.rank_distance(ranks)
    assert d[0] == 4 and np.isnan(d[1]) and d[2] == 1
    s = bias.summarise([4, np.nan, 1, 10], ["en", "en", "de", "de"])
    assert s["per_language"]["en"] == {"rank_distance": 4.0, "n_queries": 1}
    assert s["per_language"]["de"]["rank_distance"] == 5.5
    assert s["macro"] == pytest.approx((4 + 5.5) / 2)
    assert s["micro"] == pytest.approx(5.0)
