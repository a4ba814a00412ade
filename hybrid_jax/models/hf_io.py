"""Hugging Face checkpoints <-> Flax params: config.json + model.safetensors (+ tokenizer files).

Names follow transformers' BertModel / XLMRobertaModel; torch Linear weights are [out, in] and
become Flax kernels [in, out]. Pickled `pytorch_model.bin` weights are refused unless the caller
allows them, because unpickling can run arbitrary code.
"""
from __future__ import annotations

import json
import os

import numpy as np

from hybrid_jax.errors import InputError
from hybrid_jax.models.config import EncoderConfig

_MODEL_TYPES = {"bert": "bert", "xlm-roberta": "xlm-roberta", "roberta": "xlm-roberta"}
_HF_CLASS = {"bert": ("bert", "BertModel"), "xlm-roberta": ("xlm-roberta", "XLMRobertaModel")}
_PREFIXES = ("bert.", "roberta.", "model.", "encoder_model.")
EXTRA_FILE = "hybrid_jax.json"  # our own fields (pooling, prefixes) so a round trip is exact


def name_map(config: EncoderConfig) -> list[tuple[str, tuple[str, ...], bool]]:
    """(HF tensor name, Flax param path, transpose?) for every parameter of the encoder."""
    out = [
        ("embeddings.word_embeddings.weight", ("word_embeddings", "embedding"), False),
        ("embeddings.position_embeddings.weight", ("position_embeddings", "embedding"), False),
        ("embeddings.token_type_embeddings.weight", ("token_type_embeddings",), False),
        ("embeddings.LayerNorm.weight", ("embeddings_norm", "scale"), False),
        ("embeddings.LayerNorm.bias", ("embeddings_norm", "bias"), False),
    ]
    for i in range(config.num_layers):
        hf, fx = f"encoder.layer.{i}.", f"layer_{i}"
        dense = [("attention.self.query", ("attention", "query")),
                 ("attention.self.key", ("attention", "key")),
                 ("attention.self.value", ("attention", "value")),
                 ("attention.output.dense", ("attention", "output")),
                 ("intermediate.dense", ("intermediate",)),
                 ("output.dense", ("output",))]
        for hf_name, path in dense:
            out.append((hf + hf_name + ".weight", (fx, *path, "kernel"), True))
            out.append((hf + hf_name + ".bias", (fx, *path, "bias"), False))
        for hf_name, norm in [("attention.output.LayerNorm", "attention_norm"),
                              ("output.LayerNorm", "output_norm")]:
            out.append((hf + hf_name + ".weight", (fx, norm, "scale"), False))
            out.append((hf + hf_name + ".bias", (fx, norm, "bias"), False))
    if config.with_pooler:
        out.append(("pooler.dense.weight", ("pooler", "kernel"), True))
        out.append(("pooler.dense.bias", ("pooler", "bias"), False))
    return out


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise InputError(f"{path}: file not found") from e
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: malformed JSON ({e})") from e


def _pooling_from_sentence_transformers(directory: str) -> str | None:
    """'cls' or 'mean' from a sentence-transformers Pooling module config, if there is one."""
    modules = os.path.join(directory, "modules.json")
    if not os.path.exists(modules):
        return None
    for module in _read_json(modules):
        if module.get("type", "").endswith("Pooling"):
            cfg = _read_json(os.path.join(directory, module["path"], "config.json"))
            if cfg.get("pooling_mode_cls_token"):
                return "cls"
            if cfg.get("pooling_mode_mean_tokens"):
                return "mean"
    return None


def read_config(directory: str, **overrides) -> tuple[EncoderConfig, dict]:
    """EncoderConfig and text prefixes of a Hugging Face checkpoint directory."""
    path = os.path.join(directory, "config.json")
    hf = _read_json(path)
    model_type = hf.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise InputError(f"{path}: unsupported architecture model_type={model_type!r} "
                         f"(supported: {', '.join(sorted(_MODEL_TYPES))})")
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        raise InputError(f"{path}: unsupported hidden_act {act!r} (only exact 'gelu')")
    try:
        fields = dict(
            arch=_MODEL_TYPES[model_type], vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf["max_position_embeddings"],
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            pad_token_id=hf.get("pad_token_id", 0 if model_type == "bert" else 1),
            hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
            attention_dropout=hf.get("attention_probs_dropout_prob", 0.1))
    except KeyError as e:
        raise InputError(f"{path}: missing key {e.args[0]!r}") from e
    prefixes = {"query": "", "passage": ""}
    extra_path = os.path.join(directory, EXTRA_FILE)
    if os.path.exists(extra_path):
        extra = _read_json(extra_path)
        fields.update(pooling=extra["pooling"], with_pooler=extra["with_pooler"])
        prefixes.update(extra.get("prefixes", {}))
    else:
        fields["pooling"] = _pooling_from_sentence_transformers(directory) or "mean"
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return EncoderConfig(**fields), prefixes


def _load_tensors(directory: str, allow_pickle: bool) -> tuple[dict, str]:
    st = os.path.join(directory, "model.safetensors")
    if os.path.exists(st):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
        try:
            return load_file(st), st
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{st}: cannot read safetensors weights ({e})") from e
    pickled = os.path.join(directory, "pytorch_model.bin")
    if os.path.exists(pickled):
        if not allow_pickle:
            raise InputError(f"{pickled}: pickled weights are refused because unpickling runs "
                             "code; convert to model.safetensors or pass allow_pickle=True")
        import torch
        state = torch.load(pickled, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}, pickled
    raise InputError(f"{directory}: no model.safetensors (or pytorch_model.bin) found")


def _normalise_name(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                        "LayerNorm.bias")


def load_params(directory: str, config: EncoderConfig | None = None, *,
                allow_pickle: bool = False) -> tuple[dict, EncoderConfig]:
    """One encoder's Flax params from a Hugging Face directory."""
    tensors, source = _load_tensors(directory, allow_pickle)
    tensors = {_normalise_name(k): v for k, v in tensors.items()}
    if config is None:
        config, _ = read_config(directory)
    if config.with_pooler is False and "pooler.dense.weight" in tensors and \
            not os.path.exists(os.path.join(directory, EXTRA_FILE)):
        config = config.replace(with_pooler=True)
    params: dict = {}
    for hf_name, path, transpose in name_map(config):
        if hf_name not in tensors:
            raise InputError(f"{source}: missing tensor {hf_name!r}")
        value = np.asarray(tensors[hf_name], np.float32)
        value = value.T if transpose else value
        node = params
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    _check_shapes(params, config, source)
    return params, config


def _check_shapes(params: dict, config: EncoderConfig, source: str) -> None:
    import jax
    from hybrid_jax.models.encoder import Encoder
    import jax.numpy as jnp
    ids = jnp.zeros((1, 2), jnp.int32)
    expected = jax.eval_shape(lambda: Encoder(config).init(jax.random.key(0), ids, ids))["params"]
    flat_expected = {jax.tree_util.keystr(k): v.shape
                     for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    for k, v in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(k)
        if name in flat_expected and flat_expected[name] != v.shape:
            raise InputError(f"{source}: shape mismatch for {name}: checkpoint has {v.shape}, "
                             f"config.json implies {flat_expected[name]}")


def export(directory: str, config: EncoderConfig, encoder_params, tokenizer, prefixes: dict) -> None:
    """Write one encoder as a transformers + sentence-transformers checkpoint directory."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    model_type, cls_name = _HF_CLASS[config.arch]
    hf_config = {
        "architectures": [cls_name], "model_type": model_type,
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_layers, "num_attention_heads": config.num_heads,
        "intermediate_size": config.intermediate_size, "hidden_act": "gelu",
        "hidden_dropout_prob": config.hidden_dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "max_position_embeddings": config.max_position_embeddings,
        "type_vocab_size": config.type_vocab_size, "layer_norm_eps": config.layer_norm_eps,
        "pad_token_id": config.pad_token_id, "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "bos_token_id": 0, "eos_token_id": 2,
    }
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
    tensors = {}
    for hf_name, path, transpose in name_map(config):
        value = encoder_params
        for key in path:
            value = value[key]
        value = np.asarray(value, np.float32)
        tensors[hf_name] = np.ascontiguousarray(value.T if transpose else value)
    if not config.with_pooler:
        tensors.update(_zero_pooler(config.hidden_size))
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, EXTRA_FILE), "w") as f:
        json.dump({"pooling": config.pooling, "with_pooler": config.with_pooler,
                   "prefixes": prefixes}, f, indent=2)
    _export_tokenizer(directory, tokenizer)
    _export_sentence_transformers(directory, config, prefixes)


def _zero_pooler(hidden_size: int) -> dict:
    """transformers builds BertModel / XLMRobertaModel with a pooler (no config key turns it off)
    and randomly initialises one the checkpoint lacks, with a "newly initialized" load report.
    A model without a pooler therefore gets an all-zero one: `pooler_output` is a zero vector
    instead of noise, and the embeddings (mean or CLS pooling of the hidden states) never read
    it. Our own reader ignores it (hybrid_jax.json says with_pooler=false)."""
    return {"pooler.dense.weight": np.zeros((hidden_size, hidden_size), np.float32),
            "pooler.dense.bias": np.zeros((hidden_size,), np.float32)}


def _export_tokenizer(directory: str, tokenizer) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    backend = HFTokenizer.from_str(tokenizer.backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    vocab = backend.get_vocab()
    specials = {k: v for k, v in dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                      pad_token="<pad>", cls_token="<s>", sep_token="</s>",
                                      mask_token="<mask>").items() if v in vocab}
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, model_max_length=512, **specials)
    fast.save_pretrained(directory)


def _export_sentence_transformers(directory: str, config: EncoderConfig, prefixes: dict) -> None:
    """modules.json & co. so sentence-transformers rebuilds the same pooling and normalisation."""
    if config.pooling == "pooler":
        return  # the tanh pooler has no plain sentence-transformers equivalent; transformers only
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"},
    ]
    with open(os.path.join(directory, "modules.json"), "w") as f:
        json.dump(modules, f, indent=2)
    os.makedirs(os.path.join(directory, "1_Pooling"), exist_ok=True)
    os.makedirs(os.path.join(directory, "2_Normalize"), exist_ok=True)
    with open(os.path.join(directory, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": config.hidden_size,
                   "pooling_mode_cls_token": config.pooling == "cls",
                   "pooling_mode_mean_tokens": config.pooling == "mean",
                   "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False}, f, indent=2)
    with open(os.path.join(directory, "config_sentence_transformers.json"), "w") as f:
        json.dump({"prompts": {k: v for k, v in prefixes.items() if v},
                   "default_prompt_name": None, "similarity_fn_name": "cosine"}, f, indent=2)
    with open(os.path.join(directory, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": config.max_length, "do_lower_case": False}, f, indent=2)
