"""Results a model computes once over the training fold and keeps in the run's workdir (mined hard
negatives, teacher scores), each stored with everything that decided it.

A cache file is JSON {"meta": ..., ...}. `meta` holds the model's parameter fingerprint, compute
dtype, the fold rule, a hash of the examples, the languages, lengths and prefixes (`model_meta`),
plus whatever the caller adds. A later run of the same workdir reuses the file when every checked
field matches and is refused with an InputError naming the settings that changed otherwise.
Several hosts: the writing process computes and writes, the others wait for it and read the file,
so that float near-ties cannot give hosts different results.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
from typing import Callable

from hybrid_jax.errors import InputError

# Fields of model_meta that must match, and the setting each comes from (for the refusal
# message); `{model}` is filled with the setting naming the model.
MODEL_CHECKED = {
    "fingerprint": "the {model}'s parameters",
    "compute_dtype": "model.compute_dtype",
    "fold": "the fold rule (data.train_fold, data.split_seed, data.split_sizes)",
    "data": "the training examples (data.format, data.dataset_dir)",
    "languages": "data.languages",
    "max_length": "data.query_max_length / data.passage_max_length",
    "prefixes": "the model's query / passage prefixes",
}


def model_bundle(spec: str, model, needed_by: str, setting: str):
    """The encoding bundle of model spec `spec` ('' = `model`, the run's starting model);
    `needed_by` and `setting` (the key naming the spec) word the error when there is neither."""
    if spec:
        from hybrid_jax.models.pretrained import load_pretrained
        model = load_pretrained(spec)
    if model is None:
        raise InputError(f"{needed_by} needs a model: set {setting} to a model spec, or pass "
                         f"the run's starting model")
    return model.bundle(tied=not model.towers)


def model_meta(cfg, examples, languages, bundle) -> dict:
    """What a model's result over `examples` depends on (cfg: config.data)."""
    from hybrid_jax.retrieval.cache import params_fingerprint

    sizes = cfg.split_sizes
    return {
        "model": bundle.name,
        "fingerprint": params_fingerprint(bundle.params),
        "compute_dtype": str(bundle.config.compute_dtype),
        "fold": {"train_fold": str(cfg.train_fold), "split_seed": int(cfg.split_seed),
                 "split_sizes": None if sizes is None else [float(s) for s in sizes]},
        "data": examples_fingerprint(examples),
        "languages": sorted(set(languages)),
        "max_length": [int(cfg.query_max_length), int(cfg.passage_max_length)],
        "prefixes": [bundle.prefix("query"), bundle.prefix("passage")],
    }


def examples_fingerprint(examples) -> str:
    """Hash of every example's key, article, texts and candidate negatives, in order."""
    h = hashlib.blake2b(digest_size=16)
    for e in examples:
        record = [e.key, e.article, sorted(e.queries.items()), sorted(e.passages.items()),
                  sorted((l, list(v)) for l, v in e.negatives.items())]
        h.update(json.dumps(record, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def round_trip(meta: dict) -> dict:
    """`meta` in the form it takes after a round trip through the file (tuples -> lists)."""
    return json.loads(json.dumps(meta))


def computed_once(path, meta: dict, checked: dict, kind: str, compute: Callable[[], object],
                  encode: Callable[[object], dict], decode: Callable[[dict], object], *,
                  write: bool = True):
    """`decode(doc)` of the cache at `path` if there is one (refused when stale), else
    `compute()`, written there by the writing process (`write`) as {"meta": meta, **encode(r)}.
    `path` None: computed, not cached. `kind` names the result in messages."""
    path = pathlib.Path(path) if path is not None else None
    if path is not None and path.is_file():
        return _read(path, meta, checked, kind, decode)
    import jax

    shared = path is not None and jax.process_count() > 1
    result = None
    if write or not shared:
        result = compute()
        if path is not None and write:
            write_json_atomic(path, {"meta": meta, **encode(result)})
    if shared:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"hybrid_jax: {kind} written")
        if result is None:
            result = _read(path, meta, checked, kind, decode)
    return result


def write_json_atomic(path: pathlib.Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a run killed mid-write leaves no half file behind


def _read(path: pathlib.Path, meta: dict, checked: dict, kind: str, decode):
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        stored = doc["meta"]
        if not isinstance(stored, dict):
            raise TypeError(f"meta is a {type(stored).__name__}, not an object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: unreadable {kind} cache ({e}); delete it to compute it "
                         f"again") from e
    changed = [k for k in checked if stored.get(k) != meta[k]]
    if changed:
        what = "; ".join(f"{checked[k]}: cached {_short(stored.get(k))}, now {_short(meta[k])}"
                         for k in changed)
        raise InputError(f"{path}: the {kind} no longer match this run ({what}); restore those "
                         f"settings, or delete the file to compute them again")
    logging.info("reusing the %s cached in %s", kind, path)
    try:
        return decode(doc)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise InputError(f"{path}: corrupt {kind} cache ({e!r}); delete it to compute it "
                         f"again") from e


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
