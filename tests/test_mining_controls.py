"""The false-negative controls of mined negatives (data.mining_skip_top / mining_margin /
mining_range): each excludes exactly what it promises on a case with known scores, the defaults
keep the plain top ranks, and the mining cache is refused when a control changes."""
import json

import numpy as np
import pytest

from hybrid_jax import config as config_lib
from hybrid_jax.data import mining, pipeline
from hybrid_jax.data.examples import ParallelExample
from hybrid_jax.errors import InputError

# The query's score for each passage: its positive scores 0.8, two candidates score above it.
SCORES = {"pos": 0.8, "n0": 0.95, "n1": 0.9, "n2": 0.85, "n3": 0.79, "n4": 0.7, "n5": 0.6,
          "n6": 0.5, "n7": 0.4, "n8": 0.3, "n9": 0.2}
EXAMPLE = ParallelExample("q", "a", {"en": "query"}, {"en": "pos"},
                          {"en": tuple(f"n{i}" for i in range(10))})


class FakeBundle:
    name, params = "fake", {}

    class config:
        compute_dtype = "float32"

    @staticmethod
    def prefix(kind):
        return ""


@pytest.fixture
def known_scores(monkeypatch):
    """embed_texts returning vectors whose inner product with the query is SCORES[text]."""
    import hybrid_jax.retrieval

    def embed(bundle, texts, kind, max_length):
        if kind == "query":
            return np.array([[1.0, 0.0]] * len(texts), np.float32)
        return np.array([[SCORES[t], 0.0] for t in texts], np.float32)
    monkeypatch.setattr(hybrid_jax.retrieval, "embed_texts", embed)


def mined(depth, **controls):
    return mining.mine([EXAMPLE], ["en"], FakeBundle, depth, 8, 8,
                       mining.MiningControls(**controls))[0]["en"]


def test_defaults_take_the_top_ranks(known_scores):
    assert mined(3) == ("n0", "n1", "n2")


def test_skip_top_drops_exactly_the_first_k_ranks(known_scores):
    assert mined(3, skip_top=2) == ("n2", "n3", "n4")
    assert mined(20, skip_top=9) == ("n9",)


def test_margin_keeps_only_scores_below_the_positive_minus_a_relative_margin(known_scores):
    # 0.8 * (1 - 0.1) = 0.72: n0..n3 (0.95 .. 0.79) go, n4 (0.70) is the best left
    assert mined(3, margin=0.1) == ("n4", "n5", "n6")
    # a tiny margin removes exactly the candidates scoring at or above the positive
    assert mined(20, margin=1e-6) == tuple(f"n{i}" for i in range(3, 10))


def test_range_draws_only_from_its_ranks_in_rank_order(known_scores):
    draws = {mined(3, rank_range=(3, 7), seed=s) for s in range(12)}
    for got in draws:
        assert len(got) == 3 and set(got) <= {"n3", "n4", "n5", "n6"}
        assert list(got) == sorted(got, key=lambda t: -SCORES[t])
    assert len(draws) > 1                       # a draw, not the top three of the range
    assert mined(3, rank_range=(3, 7), seed=5) == mined(3, rank_range=(3, 7), seed=5)
    assert mined(10, rank_range=(3, 7)) == ("n3", "n4", "n5", "n6")   # fewer left: all of them


def test_controls_combine(known_scores):
    # ranks 1..8 minus the first two ranks and minus scores >= 0.72: n4..n8
    got = mined(10, skip_top=2, margin=0.1, rank_range=(1, 9))
    assert got == ("n4", "n5", "n6", "n7", "n8")


def _cfg(**overrides):
    cfg = pipeline.default_config()
    cfg.update({"dataset_dir": "unused", "negative_source": "mined", "hard_negatives": 2,
                "mining_depth": 3, **overrides})
    return cfg


def test_the_cache_is_refused_when_a_control_changes(known_scores, tmp_path, monkeypatch):
    monkeypatch.setattr(mining.workdir_cache, "model_bundle", lambda *args: FakeBundle)
    monkeypatch.setattr("hybrid_jax.retrieval.cache.params_fingerprint", lambda p: "fp")
    first = mining.mined_candidates(_cfg(), [EXAMPLE], ["en"], None, tmp_path)
    cache = tmp_path / mining.CACHE
    assert "controls" not in json.loads(cache.read_text())["meta"]   # old caches stay valid
    assert mining.mined_candidates(_cfg(), [EXAMPLE], ["en"], None, tmp_path) == first
    for key, value in (("mining_skip_top", 1), ("mining_margin", 0.05), ("mining_range", (1, 5))):
        with pytest.raises(InputError, match=rf"data\.{key}.*cached null"):
            mining.mined_candidates(_cfg(**{key: value}), [EXAMPLE], ["en"], None, tmp_path)
    cache.unlink()
    mining.mined_candidates(_cfg(mining_range=(1, 5)), [EXAMPLE], ["en"], None, tmp_path)
    with pytest.raises(InputError, match=r"data\.seed"):   # a range's draw depends on the seed
        mining.mined_candidates(_cfg(mining_range=(1, 5), seed=1), [EXAMPLE], ["en"], None,
                                tmp_path)


@pytest.mark.parametrize("key, value, message", [
    ("mining_skip_top", -1, "must be an integer >= 0"),
    ("mining_margin", 1.0, r"must be a fraction in \[0, 1\)"),
    ("mining_range", (5, 2), r"must be \(lo, hi\) with 0 <= lo < hi"),
    ("mining_range", (0, 1), r"\(0, 1\) holds fewer ranks than data.hard_negatives=2"),
])
def test_bad_control_values_name_the_key(key, value, message):
    from configs.default import get_config
    config = get_config()
    config.data.update({"negative_source": "mined", "hard_negatives": 2, key: value})
    with pytest.raises(InputError, match=rf"data\.{key}: {message}"):
        config_lib._check_data(config.data)
