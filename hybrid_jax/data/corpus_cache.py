"""Which prepared corpus a run reads (data.store), preparing the configured source on first use.

data.store = '<dir>'  a corpus prepared by `python -m hybrid_jax.prepare_data`
data.store = 'auto'   the configured source (data.format lareqa | xquad_plain | pairs_jsonl with
                      data.dataset_dir) prepared once into the corpus cache under a name keyed by
                      the source's fingerprint (files, sizes, modification times) and the
                      tokenizer's, so an edited source or another tokenizer prepares anew
data.store = ''       (default) 'auto' for those formats: the one training path (`store_setting`)
The cache is data.store_cache, else $HYBRID_JAX_CORPUS_CACHE, else <workdir>/corpora, else a
corpus this process already resolved for the same key, else a temporary directory removed at exit.
Process 0 prepares (under a file lock, so concurrent runs sharing a cache prepare once); other
hosts wait for the finished directory (it appears by one rename, whole). Either way the corpus's
tokenizer fingerprint must be the run's tokenizer's.
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import time

from hybrid_jax.data.store import layout
from hybrid_jax.data.store.prepare import identity, prepare, tokenizer_fingerprint
from hybrid_jax.errors import InputError

READER_OF_FORMAT = {"lareqa": "lareqa", "xquad_plain": "xquad_plain", "pairs_jsonl": "pairs_jsonl"}
CACHE_ENV = "HYBRID_JAX_CORPUS_CACHE"
WAIT_S = 3600.0  # how long another host waits for process 0's prepare
_RESOLVED: dict[str, pathlib.Path] = {}  # cache key -> corpus, for callers without a workdir


@contextlib.contextmanager
def shared_cache(directory):
    """Within the block, `directory` is the corpus cache of runs that set none (neither
    data.store_cache nor $HYBRID_JAX_CORPUS_CACHE): a grid's runs prepare each source once
    instead of once per run workdir, without a config change."""
    if os.environ.get(CACHE_ENV):
        yield
        return
    os.environ[CACHE_ENV] = str(directory)
    try:
        yield
    finally:
        os.environ.pop(CACHE_ENV, None)


def store_setting(cfg, *, examples_given: bool = False) -> str:
    """The effective data.store: as set, else 'auto' where the format can be prepared and the
    examples come from it ('' only for formats that cannot be prepared and in-memory examples:
    the examples path)."""
    if cfg.get("store") or cfg.get("sources") or examples_given:
        return str(cfg.get("store") or "")
    return "auto" if str(cfg.format) in READER_OF_FORMAT else ""


def resolve(cfg, tokenizer, tokenizer_spec: str | None, workdir=None, process_index: int = 0,
            log=None, store: str | None = None) -> pathlib.Path:
    """The corpus directory of `store` (default data.store), prepared when 'auto' and not
    cached yet."""
    store = str(cfg.store if store is None else store)
    if store != "auto":
        path = pathlib.Path(store)
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
        raise InputError("data.dataset_dir: not set (the corpus is prepared from it)")
    if cfg.get("download") and reader != "pairs_jsonl":
        from hybrid_jax.data import download
        where = pathlib.Path(cfg.dataset_dir)
        download.ensure_files(where.parent, where.name, cfg.languages or None)
    source = pathlib.Path(cfg.dataset_dir).resolve()
    key = hashlib.sha256(json.dumps([reader, str(source), identity(str(source)),
                                     tokenizer_fingerprint(tokenizer)]).encode()).hexdigest()
    cache, private = _cache_dir(cfg, workdir, key)
    out = cache / f"{reader}-{source.name}-{key[:16]}"
    if not (out / layout.META).is_file():
        if process_index == 0 or private:
            _prepare_once(cache, out, f"{reader}:{source}", spec or tokenizer, log)
        else:
            _wait_for(out)
    _RESOLVED[key] = out
    return out


def _cache_dir(cfg, workdir, key: str) -> tuple[pathlib.Path, bool]:
    """(the cache directory, whether it is this process's own temporary one)."""
    for where in (cfg.get("store_cache"), os.environ.get(CACHE_ENV)):
        if str(where or ""):
            return pathlib.Path(where), False
    if workdir is not None:
        return pathlib.Path(workdir) / "corpora", False
    if key in _RESOLVED:
        return _RESOLVED[key].parent, False
    return _temporary_cache(), True


_TEMPORARY: list[pathlib.Path] = []


def _temporary_cache() -> pathlib.Path:
    if not _TEMPORARY:
        _TEMPORARY.append(pathlib.Path(tempfile.mkdtemp(prefix="hybrid_jax-corpora-")))
        atexit.register(shutil.rmtree, _TEMPORARY[0], True)
    return _TEMPORARY[0]


def _prepare_once(cache: pathlib.Path, out: pathlib.Path, source: str, tokenizer, log) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    with _locked(cache / f".{out.name}.lock"):
        if not (out / layout.META).is_file():  # another run may have prepared it meanwhile
            prepare([source], out, tokenizer, **({"log": log} if log else {}))


@contextlib.contextmanager
def _locked(path: pathlib.Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_for(out: pathlib.Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not (out / layout.META).is_file():
        if time.monotonic() > deadline:
            raise InputError(f"data.store='auto': {out} did not appear within {WAIT_S:.0f} s "
                             f"(process 0 prepares it)")
        time.sleep(2.0)
