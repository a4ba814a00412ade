"""The Hugging Face export loads cleanly in transformers and sentence-transformers (no missing,
unexpected or newly initialised weights) and embeds like our encoder; a source pooler is carried,
a model without one gets an all-zero pooler that our own reader ignores."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax.models import config as config_lib
from hybrid_jax.models import hf_io
from hybrid_jax.models.encoder import Encoder
from hybrid_jax.models.pretrained import load_pretrained
from hybrid_jax.retrieval import embed_texts

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TEXTS = ["how tall is the Eiffel tower?", "Der Eiffelturm ist 330 Meter hoch.", "埃菲尔铁塔"]
LOAD_WARNINGS = ("MISSING", "newly initialized", "UNEXPECTED", "MISMATCH")


def _load_transformers(directory, capfd):
    model, info = transformers.AutoModel.from_pretrained(str(directory),
                                                         output_loading_info=True)
    printed = "".join(capfd.readouterr())
    assert info == {"missing_keys": set(), "unexpected_keys": set(),
                    "mismatched_keys": set(), "error_msgs": []}
    assert not [w for w in LOAD_WARNINGS if w in printed], printed
    return model.eval()


def test_model_without_pooler_loads_cleanly_and_embeds_like_ours(tmp_path, capfd):
    pre = load_pretrained("random:tiny")
    assert not pre.config.with_pooler
    hf_io.export(str(tmp_path), pre.config, pre.encoder_params, pre.tokenizer, pre.prefixes)
    model = _load_transformers(tmp_path, capfd)
    np.testing.assert_array_equal(model.pooler.dense.weight.detach().numpy(), 0.0)
    np.testing.assert_array_equal(model.pooler.dense.bias.detach().numpy(), 0.0)
    back = load_pretrained(f"hf:{tmp_path}")
    assert back.config == pre.config and "pooler" not in back.encoder_params

    st = pytest.importorskip("sentence_transformers")
    capfd.readouterr()
    encoder = st.SentenceTransformer(str(tmp_path), device="cpu")
    printed = "".join(capfd.readouterr())
    assert not [w for w in LOAD_WARNINGS if w in printed], printed
    for role in ("query", "passage"):
        theirs = encoder.encode(TEXTS, prompt_name=role, convert_to_numpy=True)
        ours = embed_texts(pre.bundle(), TEXTS, role, batch_size=4)
        np.testing.assert_allclose(theirs, ours, atol=2e-5)


def test_source_pooler_is_carried(tmp_path, capfd):
    config = config_lib.tiny(with_pooler=True, hidden_dropout=0.0, attention_dropout=0.0)
    ids = jnp.zeros((1, 2), jnp.int32)
    params = jax.tree_util.tree_map(
        np.asarray, Encoder(config).init(jax.random.key(3), ids, ids)["params"])
    tokenizer = load_pretrained("random:tiny").tokenizer
    hf_io.export(str(tmp_path), config, params, tokenizer, {"query": "query: "})
    model = _load_transformers(tmp_path, capfd)
    np.testing.assert_array_equal(model.pooler.dense.weight.detach().numpy(),
                                  params["pooler"]["kernel"].T)
    np.testing.assert_array_equal(model.pooler.dense.bias.detach().numpy(),
                                  params["pooler"]["bias"])
    batch = transformers.AutoTokenizer.from_pretrained(str(tmp_path))(
        TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    hidden_cls = out.last_hidden_state[:, 0].numpy()
    expected = np.tanh(hidden_cls @ params["pooler"]["kernel"] + params["pooler"]["bias"])
    np.testing.assert_allclose(out.pooler_output.numpy(), expected, atol=1e-5)
    back = load_pretrained(f"hf:{tmp_path}")
    assert back.config.with_pooler
    np.testing.assert_array_equal(back.encoder_params["pooler"]["kernel"],
                                  params["pooler"]["kernel"])
