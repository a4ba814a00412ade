"""Exact and ScaNN search behind one interface; ScaNN recall against exact search."""
import numpy as np
import pytest

from hybrid_jax.errors import InputError
from benchmarks import search as bench
from hybrid_jax.retrieval import search as S


def test_exact_topk_matches_numpy_and_breaks_ties_by_index():
    rng = np.random.default_rng(0)
    c = rng.standard_normal((300, 8)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    c[10] = c[3]  # exact tie: index 3 must come first
    q = np.concatenate([c[3:4], rng.standard_normal((700, 8)).astype(np.float32)])
    idx, val = S.ExactSearcher(c, block=256).search(q, 5)
    assert idx.shape == (701, 5) and idx.dtype == np.int64
    assert list(idx[0, :2]) == [3, 10]
    scores = q @ c.T
    scores[:, 10] = scores[:, 3]  # BLAS may score equal columns differently; the searcher doesn't
    ref = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx[1:], ref[1:])
    # k larger than the pool: padded with -1 / -inf.
    idx, val = S.ExactSearcher(c[:3]).search(q[:2], 5)
    assert (idx[:, 3:] == -1).all() and np.isneginf(val[:, 3:]).all()


def test_duplicate_rows():
    v = np.array([[1, 2], [3, 4], [1, 2], [3, 4], [1, 2]], np.float32)
    dup, rep = S.duplicate_rows(v)
    assert dup.tolist() == [2, 3, 4] and rep.tolist() == [0, 1, 0]


def test_choose_method():
    assert S.choose_method(10, "exact") == "exact"
    assert S.choose_method(10, "auto") == "exact"
    assert S.choose_method(13_014, "auto", n_queries=13_090) == "exact"  # XQuAD-R multi
    assert S.choose_method(10**6, "auto", n_queries=1000) == "exact"
    big = S.choose_method(10**6, "auto", n_queries=20_000)
    assert big == ("scann" if S.scann_available() else "exact")
    assert S.scann_build_seconds(10**5) == pytest.approx(37.5)
    assert 37.5 < S.scann_build_seconds(3 * 10**5) < 166
    with pytest.raises(InputError):
        S.choose_method(10, "faiss")


@pytest.mark.skipif(not S.scann_available(), reason="scann not importable")
def test_scann_recall_on_clustered_vectors():
    rng = np.random.default_rng(0)
    cands, centres = bench.clustered_unit_vectors(20_000, 64, 200, rng, spread=1.0)
    queries, _ = bench.clustered_unit_vectors(300, 64, 200, rng, centres, spread=1.0)
    sc = S.build_searcher(cands, "scann", k=20)
    assert sc.name == "scann"
    s_idx, s_val = sc.search(queries, 20)
    e_idx, e_val = S.ExactSearcher(cands).search(queries, 20)
    recall = S.recall_vs_exact(s_idx, e_idx)
    assert recall >= 0.9, recall
    # ScaNN re-scores exactly, so its returned scores are true dot products.
    np.testing.assert_allclose(s_val[:, 0], np.einsum("qd,qd->q", queries, cands[s_idx[:, 0]]),
                               atol=1e-4)


def test_recall_vs_exact_hand_case():
    a = np.array([[1, 2, 3], [4, 5, 6]])
    e = np.array([[1, 2, 9], [6, 5, 4]])
    assert S.recall_vs_exact(a, e) == pytest.approx((2 / 3 + 1) / 2)
