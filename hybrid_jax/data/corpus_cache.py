"""data.store: which prepared corpus a run reads, preparing it on first use.

data.store = '<dir>'  a corpus prepared by `python -m hybrid_jax.prepare_data`
data.store = 'auto'   the configured source (data.format lareqa | xquad_plain | pairs_jsonl with
                      data.dataset_dir) prepared once into data.store_cache (default
                      <workdir>/corpora) under a name keyed by the source's fingerprint (files,
                      sizes, modification times) and the tokenizer's, so an edited source or
                      another tokenizer prepares anew. Process 0 prepares; other hosts wait for
                      the finished directory (it appears by one rename, whole).
Either way the corpus's tokenizer fingerprint must be the run's tokenizer's.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
import time

from hybrid_jax.data.store import layout
from hybrid_jax.data.store.prepare import identity, prepare, tokenizer_fingerprint
from hybrid_jax.errors import InputError

READER_OF_FORMAT = {"lareqa": "lareqa", "xquad_plain": "xquad_plain", "pairs_jsonl": "pairs_jsonl"}
WAIT_S = 3600.0  # how long another host waits for process 0's prepare


def resolve(cfg, tokenizer, tokenizer_spec: str | None, workdir=None, process_index: int = 0,
            log=None) -> pathlib.Path:
    """The corpus directory of data.store, prepared when 'auto' and not cached yet."""
    if str(cfg.store) != "auto":
        path = pathlib.Path(cfg.store)
    else:
        path = _prepared(cfg, tokenizer, tokenizer_spec, workdir, process_index, log)
    try:
        meta = layout.open_store(path).meta
    except InputError as e:
        raise InputError(f"data.store: {e}") from None
    check_tokenizer(meta, tokenizer, f"data.store ({path})")
    return path


def check_tokenizer(meta: dict, tokenizer, where: str) -> None:
    want = meta.get("tokenizer", {}).get("fingerprint")
    have = tokenizer_fingerprint(tokenizer)
    if want != have:
        raise InputError(f"{where}: prepared with tokenizer {meta.get('tokenizer', {}).get('spec')!r}"
                         f" (fingerprint {str(want)[:12]}), not the run's ({have[:12]}); "
                         f"prepare it with the run's model spec")


def _prepared(cfg, tokenizer, spec, workdir, process_index, log) -> pathlib.Path:
    reader = READER_OF_FORMAT.get(str(cfg.format))
    if reader is None:
        raise InputError(f"data.store='auto': data.format {cfg.format!r} cannot be prepared; "
                         f"use one of {sorted(READER_OF_FORMAT)} or prepare the corpus with "
                         f"`python -m hybrid_jax.prepare_data` and set data.store to it")
    if not cfg.dataset_dir:
        raise InputError("data.dataset_dir: not set (data.store='auto' prepares it)")
    if not spec:
        raise InputError("data.store='auto': needs the run's model spec to prepare with")
    cache = pathlib.Path(cfg.get("store_cache") or "")
    if not str(cfg.get("store_cache") or ""):
        if workdir is None:
            raise InputError("data.store_cache: not set and no workdir to cache the corpus in")
        cache = pathlib.Path(workdir) / "corpora"
    source = pathlib.Path(cfg.dataset_dir).resolve()
    key = hashlib.sha256(json.dumps([reader, str(source), identity(str(source)),
                                     tokenizer_fingerprint(tokenizer)]).encode()).hexdigest()
    out = cache / f"{reader}-{source.name}-{key[:16]}"
    if (out / layout.META).is_file():
        return out
    if process_index == 0:
        cache.mkdir(parents=True, exist_ok=True)
        prepare([f"{reader}:{source}"], out, spec, **({"log": log} if log else {}))
        return out
    deadline = time.monotonic() + WAIT_S
    while not (out / layout.META).is_file():
        if time.monotonic() > deadline:
            raise InputError(f"data.store='auto': {out} did not appear within {WAIT_S:.0f} s "
                             f"(process 0 prepares it)")
        time.sleep(2.0)
    return out
