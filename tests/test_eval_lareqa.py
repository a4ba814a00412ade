"""LAReQA settings (mono / cross / multi), MLQA-R-shaped partial parallelism, per-query tables."""
import numpy as np
import pytest

from hybrid_jax.data.lareqa import Candidate, LareqaDataset, Question
from hybrid_jax.evaluation import per_query as PQ
from hybrid_jax.evaluation.lareqa_eval import evaluate_lareqa


def make_dataset(parallel=None, n_q=6, langs=("de", "en", "xx"), extra=3, seed=0):
    """Questions q0..q{n_q-1}; `parallel[qid]` lists the languages a question exists in
    (default: all). Each existing (qid, lang) has an answer sentence plus `extra` distractors per
    language. Returns the dataset and random unit embeddings correlated with the answer."""
    rng = np.random.default_rng(seed)
    parallel = parallel or {}
    qs, cs = [], []
    for lang in langs:
        for i in range(n_q):
            qid = f"q{i}"
            if lang not in parallel.get(qid, langs):
                continue
            uid = f"{lang}/a{i % 2}/{i}/0"
            cs.append(Candidate(uid, lang, f"answer {i} {lang}", f"a{i % 2}/{i}/0", f"a{i % 2}"))
            qs.append(Question(qid, lang, f"question {i} {lang}", f"a{i % 2}", uid))
        for j in range(extra):
            cs.append(Candidate(f"{lang}/x/{j}/1", lang, f"distractor {j} {lang}", f"x/{j}/1", "x"))
    ds = LareqaDataset("toy", qs, cs)
    topic = {f"q{i}": rng.standard_normal(8) for i in range(n_q)}
    q_emb = np.stack([topic[q.qid] + 0.8 * rng.standard_normal(8) for q in qs])
    c_emb = []
    for c in cs:
        qid = "q" + c.sentence_key.split("/")[1] if not c.uid.split("/")[1] == "x" else None
        c_emb.append((topic[qid] if qid else 0) + 0.8 * rng.standard_normal(8))
    c_emb = np.stack(c_emb)
    c_emb[1] = c_emb[0]  # a pair of identical candidates: exercises the tie rule
    norm = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa
    return ds, norm(q_emb), norm(c_emb)


def reference_ap(scores, relevant, k):
    """AP@k from an explicitly sorted list: score desc, non-relevant before relevant on ties."""
    n = len(scores)
    is_rel = np.isin(np.arange(n), relevant)
    order = np.lexsort((np.arange(n), is_rel, -scores))
    hits, total = 0, 0.0
    for i, c in enumerate(order[:k], 1):
        if is_rel[c]:
            hits += 1
            total += hits / i
    return total / min(len(relevant), k)


def reference(ds, q_emb, c_emb, k):
    c_lang = np.array([c.language for c in ds.candidates])
    uid = {c.uid: i for i, c in enumerate(ds.candidates)}
    pair, multi = {}, {}
    scores = q_emb @ c_emb.T
    scores[:, 1] = scores[:, 0]
    for qi, q in enumerate(ds.questions):
        rel = np.array(sorted(uid[u] for u in ds.relevant_uids(q)))
        multi.setdefault(q.language, []).append(reference_ap(scores[qi], rel, k))
        for y in ds.languages:
            pool = np.flatnonzero(c_lang == y)
            local = np.flatnonzero(np.isin(pool, rel))
            if len(local):
                pair.setdefault((q.language, y), []).append(
                    reference_ap(scores[qi, pool], local, k))
    return {p: np.mean(v) for p, v in pair.items()}, {x: np.mean(v) for x, v in multi.items()}


@pytest.mark.parametrize("parallel", [None, {"q0": ("en", "de"), "q3": ("xx",),
                                             "q4": ("en", "xx")}])
def test_settings_match_reference(parallel):
    ds, q_emb, c_emb = make_dataset(parallel)
    k = 3
    out = evaluate_lareqa(ds, q_emb, c_emb, k=k, search="exact", depth=10)
    pair, multi = reference(ds, q_emb, c_emb, k)
    m = out.metrics
    key = f"map@{k}"
    for (x, y), v in pair.items():
        got = m["mono"]["per_language"][x] if x == y else m["cross"]["pairs"][f"{x}->{y}"]
        assert got[key] == pytest.approx(v), (x, y)
    mono = [v for (x, y), v in pair.items() if x == y]
    cross = [v for (x, y), v in pair.items() if x != y]
    assert m["mono"]["macro"][key] == pytest.approx(np.mean(mono))
    assert m["cross"]["macro"][key] == pytest.approx(np.mean(cross))
    assert m["multi"]["macro"][key] == pytest.approx(np.mean(list(multi.values())))
    assert m["cross"]["macro"]["n_entries"] == len(cross)


def test_mlqa_shaped_partial_parallelism():
    parallel = {"q0": ("en", "de"), "q3": ("xx",), "q4": ("en", "xx")}
    ds, q_emb, c_emb = make_dataset(parallel)
    out = evaluate_lareqa(ds, q_emb, c_emb, k=20, search="exact")
    views = PQ.views(out.groups)
    # q0 has no candidate in xx: it is skipped in the en->xx and de->xx pairs, kept elsewhere.
    assert "q0" not in set(views["cross/en->xx"]["cluster"])
    assert "q0" in set(views["cross/en->de"]["cluster"])
    # q3 exists only in xx: no cross rows at all, one multi row whose |R| = 1 (no rank distance).
    assert not any("q3" in set(t["cluster"]) for n, t in views.items() if n.startswith("cross"))
    multi = out.groups["multi"]
    i = list(multi["qid"]).index("xx_q3")
    assert np.isnan(multi["rank_distance"][i])
    # Full-parallel questions have |R| = 3 in multi: relevance spans languages.
    assert set(out.qrels["en_q1"]) == {"de/a1/1/0", "en/a1/1/0", "xx/a1/1/0"}
    assert set(out.qrels["en_q0"]) == {"de/a0/0/0", "en/a0/0/0"}
    counts = {x: m["n_queries"] for x, m in out.metrics["mono"]["per_language"].items()}
    assert counts == {"de": 4, "en": 5, "xx": 5}


def test_real_xquad_r_two_languages(shared_data):
    from hybrid_jax.data.lareqa import load_lareqa
    ds = load_lareqa(shared_data / "xquad-r", languages=["de", "en"])
    rng = np.random.default_rng(0)
    q = rng.standard_normal((len(ds.questions), 16)).astype(np.float32)
    c = rng.standard_normal((len(ds.candidates), 16)).astype(np.float32)
    out = evaluate_lareqa(ds, q, c, k=20, search="exact", depth=20)
    m = out.metrics
    assert m["mono"]["per_language"]["en"]["n_queries"] == 1190
    assert m["cross"]["pairs"]["en->de"]["n_queries"] == 1190
    # Random vectors: mAP near chance, rank distance near a third of the pool.
    assert m["multi"]["macro"]["map@20"] < 0.05
    assert 500 < m["rank_distance"]["macro"] < 1200


def test_scann_path_reports_recall_and_matches_exact_on_tiny_pools():
    from hybrid_jax.retrieval import search as S
    if not S.scann_available():
        pytest.skip("scann not importable")
    ds, q_emb, c_emb = make_dataset(n_q=40, extra=30, seed=3)
    c_emb[1] = c_emb[1] + 1e-3  # no exact ties: ScaNN's order then equals the exact order
    c_emb /= np.linalg.norm(c_emb, axis=1, keepdims=True)
    exact = evaluate_lareqa(ds, q_emb, c_emb, k=5, search="exact", depth=20)
    approx = evaluate_lareqa(ds, q_emb, c_emb, k=5, search="scann", depth=20)
    info = approx.metrics["search"]["multi"]
    assert info["method"] == "scann" and info["scann_recall@100"] > 0.9  # depth >= recall@100
    for setting in ("mono", "cross", "multi"):
        assert approx.metrics[setting]["macro"]["map@5"] == pytest.approx(
            exact.metrics[setting]["macro"]["map@5"], abs=0.02)
    assert approx.metrics["rank_distance"] == exact.metrics["rank_distance"]  # always exact
