"""evaluate() end to end with a toy model: output files, TREC round trip, compare CLI, bad input."""
import json

import numpy as np
import pytest

from hybrid_jax import compare
from hybrid_jax.data.beir import load_beir
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import per_query, trec
from hybrid_jax.evaluation.datasets import load_dataset
from hybrid_jax.evaluation.run import evaluate
from test_eval_lareqa import make_dataset
from test_retrieval_encode import ToyTokenizer, toy_model


class ToyBundle:
    def __init__(self, seed):
        self.name = f"toy-{seed}"
        self._apply, self.params, _ = toy_model(seed)
        self.tokenizer = ToyTokenizer()

    def apply_fn(self, role):
        return self._apply

    def prefix(self, role):
        return {"query": "query: ", "passage": "passage: "}[role]


def write_beir(d, qrels_text=None):
    (d / "qrels").mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": f"t{i}", "text": f"doc {i} w{i % 5}"} for i in range(30)]
    (d / "corpus.jsonl").write_text("\n".join(json.dumps(x) for x in docs))
    qs = [{"_id": f"q{i}", "text": f"w{i % 5} doc {i}"} for i in range(6)]
    (d / "queries.jsonl").write_text("\n".join(json.dumps(x) for x in qs))
    (d / "qrels" / "test.tsv").write_text(qrels_text or (
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t2\nq{i}\td{i + 5}\t1\n"
                                                 for i in range(5)) + "q5\td9\t0\n"))


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    ds, _, _ = make_dataset({"q0": ("en", "de")}, n_q=8)
    write_beir(root / "tiny-beir")
    specs = [ds, {"name": "tiny-beir", "type": "beir", "path": str(root / "tiny-beir")}]
    cfg = {"k": 5, "depth": 10, "batch_size": 8, "max_length": 32, "buckets": (8, 16),
           "save_embeddings": True, "progress": False}
    out = {s: evaluate(ToyBundle(s), specs, root / f"run{s}", cfg) for s in (0, 1)}
    return root, out


def test_outputs_written(evaluated):
    root, out = evaluated
    d = root / "run0" / "eval" / "toy"
    for f in ("metrics.json", "report.md", "per_query.npz", "run.trec", "qrels.trec",
              "embeddings.npz", "heatmap_language_pairs.png", "settings_by_language.png",
              "rank_distance.png"):
        assert (d / f).is_file() and (d / f).stat().st_size > 0, f
    m = json.loads((d / "metrics.json").read_text())
    assert m == json.loads(json.dumps(out[0]["datasets"]["toy"]))
    assert {"mono", "cross", "multi", "rank_distance"} <= set(m)
    assert "en->de" in m["cross"]["pairs"]
    assert "toy/mono/map@5" in out[0]["scalars"]
    assert "mono (macro)" in (d / "report.md").read_text()
    emb = np.load(d / "embeddings.npz")
    assert emb["query_vectors"].shape[0] == len(emb["query_ids"]) == len(emb["query_languages"])
    b = json.loads((root / "run0" / "eval" / "tiny-beir" / "metrics.json").read_text())
    assert b["all"]["n_queries"] == 5  # q5 has only a grade-0 judgement
    assert 0 <= b["all"]["ndcg@10"] <= 1
    assert (root / "run0" / "embedding_cache").is_dir()


def test_non_writing_process_computes_the_same_and_writes_nothing(evaluated, tmp_path):
    """A multi-host run's processes other than 0 evaluate (to stay in step) but write nothing."""
    root, out = evaluated
    ds, _, _ = make_dataset({"q0": ("en", "de")}, n_q=8)
    cfg = {"k": 5, "depth": 10, "batch_size": 8, "max_length": 32, "buckets": (8, 16),
           "save_embeddings": True, "progress": False}
    res = evaluate(ToyBundle(0), [ds], tmp_path / "other", cfg, write=False)
    assert res["scalars"] == {k: v for k, v in out[0]["scalars"].items() if k.startswith("toy/")}
    assert not (tmp_path / "other").exists()


def test_trec_files_parse_and_agree_with_metrics(evaluated):
    root, _ = evaluated
    d = root / "run0" / "eval" / "toy"
    run = trec.read_run(d / "run.trec")
    qrels = trec.read_qrels(d / "qrels.trec")
    assert set(run) == set(qrels)
    groups = per_query.load(d / "per_query.npz")
    multi = groups["multi"]
    for qid, rr in zip(multi["qid"], multi["mrr"]):
        docs = [doc for doc, _, _ in sorted(run[qid], key=lambda x: x[1])]
        first = next(i for i, doc in enumerate(docs, 1) if doc in qrels[qid])
        assert rr == pytest.approx(1 / first)  # the toy model makes no exact ties
        ranks = [r for _, r, _ in run[qid]]
        assert ranks == list(range(1, len(ranks) + 1))


def test_compare_cli(evaluated, capsys, tmp_path):
    root, _ = evaluated
    rc = compare.main([str(root / "run0"), f"{root / 'run1'},{root / 'run1'}", "--resamples",
                       "200", "--json", str(tmp_path / "rows.json")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "multi (macro over languages)" in text and "mono/en" in text and "ndcg@10" in text
    rows = json.loads((tmp_path / "rows.json").read_text())
    by_view = {(r["dataset"], r["view"], r["metric"]): r for r in rows}
    mono = by_view[("toy", "mono (macro)", "map@5")]
    m0 = json.loads((root / "run0/eval/toy/metrics.json").read_text())
    m1 = json.loads((root / "run1/eval/toy/metrics.json").read_text())
    expected = m0["mono"]["macro"]["map@5"] - m1["mono"]["macro"]["map@5"]
    assert mono["diff"] == pytest.approx(expected)
    assert all(0 <= r["p_holm"] <= 1 for r in rows if r.get("holm_group"))
    # A run against itself: zero difference, p = 1.
    compare.main([str(root / "run0" / "eval" / "toy"), str(root / "run0" / "eval" / "toy"),
                  "--resamples", "100", "--json", str(tmp_path / "self.json")])
    self_rows = json.loads((tmp_path / "self.json").read_text())
    assert all(r["diff"] == 0 and r["p_bootstrap"] == 1 for r in self_rows)
    assert compare.main([str(tmp_path), str(tmp_path)]) == 2


def test_bad_input(tmp_path):
    bad = tmp_path / "bad"
    write_beir(bad, "q0\td1\n")
    with pytest.raises(InputError, match=r"test.tsv:1: expected"):
        load_beir(bad)
    bad2 = tmp_path / "bad2"
    write_beir(bad2, "q0\td1\tmany\n")
    with pytest.raises(InputError, match="not a number"):
        load_beir(bad2)
    bad3 = tmp_path / "bad3"
    write_beir(bad3, "q0\tnope\t1\n")
    with pytest.raises(InputError, match="not in corpus.jsonl"):
        load_beir(bad3)
    with pytest.raises(InputError, match="entry 'x': type 'tsv' is not one of lareqa, .*beir, miracl"):
        load_dataset({"name": "x", "type": "tsv", "path": str(tmp_path)})
    # a misspelt key would silently evaluate the whole set instead of its test fold
    with pytest.raises(InputError, match=r"entry 'x': unknown key\(s\) \['fodl'\]"):
        load_dataset({"name": "x", "type": "xquad-r", "path": str(tmp_path), "fodl": "test"})
    with pytest.raises(InputError, match="fold 'valid' is not one of"):
        load_dataset({"name": "x", "type": "xquad-r", "path": str(tmp_path), "fold": "valid"})
    with pytest.raises(InputError, match="unknown key"):
        from configs import tiny
        from hybrid_jax import config as schema
        c = tiny.get_config()
        c.eval.datasets = ({"name": "x", "type": "xquad-r", "path": "p", "fodl": "test"},)
        schema.validate_config(c, num_devices=1)
    with pytest.raises(InputError, match="eval.search"):
        evaluate(ToyBundle(0), [{"type": "beir", "path": "x"}], tmp_path, {"search": "faiss"})


def test_trec_ids_with_spaces_and_bad_per_query(tmp_path):
    trec.write_run(tmp_path / "r.trec", [("q 1", ["doc a", "b"], [0.5, 0.25])], tag="my run")
    run = trec.read_run(tmp_path / "r.trec")
    assert run == {"q_1": [("doc_a", 1, 0.5), ("b", 2, 0.25)]}
    (tmp_path / "bad.trec").write_text("q1 0 d1\n")
    with pytest.raises(InputError, match="bad.trec:1"):
        trec.read_qrels(tmp_path / "bad.trec")
    (tmp_path / "per_query.npz").write_text("not a zip")
    with pytest.raises(InputError, match="per_query.npz"):
        per_query.load(tmp_path / "per_query.npz")
