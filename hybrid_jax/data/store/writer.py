"""The resumable corpus writer that readers feed: texts in, text ids out; examples as ids.

Readers call `text_ids([(lang, text), ...])` (equal texts of one language get one id, new texts
are queued for tokenization) and `add_example(...)`. Every `chunk_examples` examples or
`chunk_texts` new texts the queue is tokenized in one batch and written as one chunk file in
<out>.partial/chunks/, then progress.json is replaced (atomically) to count it. A rerun after an
interruption reloads the committed chunks and replays the reader: committed examples are skipped
and committed texts are found by content, so ids, and the assembled files, equal an uninterrupted
run's byte for byte (assemble.py turns the chunks into the final files).
"""
from __future__ import annotations

import array
import itertools
import json
import os
import pathlib
import sys
import time

import numpy as np

from hybrid_jax.data.store.interner import DIGEST, Interner, digest
from hybrid_jax.errors import InputError

PROGRESS = "progress.json"
CHUNKS = "chunks"


def chunk_path(partial: pathlib.Path, i: int) -> pathlib.Path:
    return partial / CHUNKS / f"{i:06d}.npz"


def _joined(names) -> np.ndarray:
    # each name ends in a newline, so an empty name (a record's empty split unit) is kept
    return np.frombuffer("".join(f"{n}\n" for n in names).encode("utf-8"), np.uint8)


def split_joined(data: np.ndarray) -> list[str]:
    return bytes(data).decode("utf-8").split("\n")[:-1]


class StoreWriter:
    def __init__(self, partial: pathlib.Path, tokenizer, run_id: dict, *,
                 chunk_examples: int = 100_000, chunk_texts: int = 200_000, log=sys.stderr):
        self.partial, self.backend, self.run_id = partial, tokenizer.backend, run_id
        self.chunk_examples, self.chunk_texts, self.log = chunk_examples, chunk_texts, log
        self.texts, self.units, self.keys = Interner(), Interner(), Interner()
        self.languages: list[str] = []
        self.state = {"chunks": 0, "examples": 0, "max_negatives": 0, "has_scores": False,
                      "texts": 0, "units": 0}
        self.seen_examples = 0           # examples the reader has given (replayed ones included)
        self.submitted = 0               # texts the reader has given in this process
        self._reset_pending()
        self._started = time.monotonic()
        (partial / CHUNKS).mkdir(parents=True, exist_ok=True)
        if (partial / PROGRESS).is_file():
            self._resume()
        else:
            self._save_progress()

    # -- what readers call ---------------------------------------------------------------------

    def text_ids(self, items) -> np.ndarray:
        """Ids of (language, text) pairs; equal texts of one language share one id."""
        items = list(items)
        ids, new = self.texts.ids([digest(f"{lang}\0{text}") for lang, text in items])
        for i in new:
            lang, text = items[i]
            self._new_texts.append(text)
            self._new_langs.append(self._code(lang))
        self.submitted += len(items)
        self._maybe_flush()
        return ids

    def add_example(self, key: str, unit: str, query: dict, positive: dict, negatives: dict,
                    scores: tuple[dict, dict] | None = None, where: str = "") -> None:
        """One example: language -> text id (query, positive), language -> [text ids]
        (negatives), and optional teacher scores (language -> positive score, language ->
        [negative scores])."""
        index = self.seen_examples
        self.seen_examples += 1
        if index < self.state["examples"]:
            return  # committed before an interruption
        for name, value in (("key", key), ("unit", unit)):
            # keys.txt / units.txt hold one per line; a unit may be empty (pairs_jsonl's article)
            if value.splitlines() != ([value] if value or name == "key" else []):
                raise InputError(f"{where}: example {name} {value!r} must be one "
                                 f"{'non-empty ' if name == 'key' else ''}line")
        if not self.keys.ids([digest(key)])[1]:
            raise InputError(f"{where}: duplicate example key {key!r}")
        unit_id, new_unit = self.units.ids([digest(unit)])
        if new_unit:
            self._unit_names.append(unit)
        e = len(self._keys)
        self._keys.append(key)
        self._unit.append(int(unit_id[0]))
        self._add_cells(e, query, positive, negatives, scores)
        self._maybe_flush()

    def _add_cells(self, e, query, positive, negatives, scores) -> None:
        pos_score, neg_score = scores or ({}, {})
        if scores is not None:
            self.state["has_scores"] = True
        for lang, t in query.items():
            self._q.extend((e, self._code(lang), t))
        for lang, t in positive.items():
            self._p.extend((e, self._code(lang), t))
            self._p_score.append(pos_score.get(lang, np.nan))
        for lang, ids in negatives.items():
            code, given = self._code(lang), neg_score.get(lang, ())
            for slot, t in enumerate(ids):
                self._n.extend((e, code, slot, t))
                self._n_score.append(given[slot] if slot < len(given) else np.nan)
            self.state["max_negatives"] = max(self.state["max_negatives"], len(ids))

    def _code(self, lang: str) -> int:
        if lang not in self._lang_code:
            self._lang_code[lang] = len(self.languages)
            self.languages.append(lang)
        return self._lang_code[lang]

    # -- chunks --------------------------------------------------------------------------------

    def _reset_pending(self) -> None:
        self._lang_code = {l: i for i, l in enumerate(self.languages)}
        self._new_texts, self._new_langs, self._unit_names = [], [], []
        self._keys, self._unit = [], []
        # Flat int64 / float32 buffers (not lists of tuples): a chunk of 100,000 examples in 9
        # languages holds millions of cells.
        self._q, self._p, self._n = array.array("q"), array.array("q"), array.array("q")
        self._p_score, self._n_score = array.array("f"), array.array("f")

    def _maybe_flush(self) -> None:
        if len(self._keys) >= self.chunk_examples or len(self._new_texts) >= self.chunk_texts:
            self.flush()

    def flush(self) -> None:
        """Tokenize the queued texts and commit them and the queued examples as one chunk."""
        if not self._keys and not self._new_texts:
            return
        tokens, lengths = tokenize(self.backend, self._new_texts)
        chunk = dict(
            tokens=tokens, lengths=lengths, text_lang=np.array(self._new_langs, np.int16),
            text_digest=self.texts.commit(), unit_names=_joined(self._unit_names),
            keys=_joined(self._keys), unit=np.array(self._unit, np.int64),
            query=np.frombuffer(self._q, np.int64).reshape(-1, 3),
            positive=np.frombuffer(self._p, np.int64).reshape(-1, 3),
            negative=np.frombuffer(self._n, np.int64).reshape(-1, 4),
            positive_score=np.frombuffer(self._p_score, np.float32),
            negative_score=np.frombuffer(self._n_score, np.float32))
        self.units.commit()
        self.keys.commit()
        path = chunk_path(self.partial, self.state["chunks"])
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            np.savez(f, **chunk)
        os.replace(tmp, path)
        self.state["chunks"] += 1
        self.state["examples"] += len(self._keys)
        self.state["texts"] = self.texts.committed
        self.state["units"] = self.units.committed
        self._save_progress()
        self._reset_pending()
        self._report()

    def _save_progress(self) -> None:
        doc = {"run": self.run_id, "state": self.state, "languages": self.languages}
        tmp = self.partial / f".{PROGRESS}.tmp"
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        os.replace(tmp, self.partial / PROGRESS)

    def _resume(self) -> None:
        saved = json.loads((self.partial / PROGRESS).read_text(encoding="utf-8"))
        if saved.get("run") != self.run_id:
            raise InputError(f"{self.partial}: holds an unfinished prepare of other sources or "
                             f"another tokenizer; delete it or pass --fresh")
        self.state, self.languages = saved["state"], saved["languages"]
        texts, units, keys = [], [], []
        for i in range(self.state["chunks"]):
            with np.load(chunk_path(self.partial, i)) as z:
                texts.append(z["text_digest"])
                units += [digest(u) for u in split_joined(z["unit_names"])]
                keys += [digest(k) for k in split_joined(z["keys"])]
        self.texts.extend(np.concatenate(texts) if texts else [])
        self.units.extend(units)
        self.keys.extend(keys)
        for stale in (self.partial / CHUNKS).iterdir():  # written after the last commit
            if not stale.name[:6].isdigit() or int(stale.name[:6]) >= self.state["chunks"]:
                stale.unlink()
        self._reset_pending()
        print(f"prepare: resuming after {self.state['examples']} examples, "
              f"{self.state['texts']} texts", file=self.log, flush=True)

    def _report(self) -> None:
        seconds = max(time.monotonic() - self._started, 1e-9)
        print(f"prepare: {self.state['examples']} examples, {self.state['texts']} distinct texts; "
              f"{self.submitted / seconds:,.0f} texts/s", file=self.log, flush=True)


def tokenize(backend, texts: list[str], batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (no special tokens) of `texts`, concatenated, and each text's length.

    Sub-batches bound the memory the tokenizer's per-text encodings take."""
    tokens, lengths = [], []
    for start in range(0, len(texts), batch):
        ids = [e.ids for e in backend.encode_batch(texts[start:start + batch],
                                                   add_special_tokens=False)]
        lengths.append(np.fromiter(map(len, ids), np.int64, len(ids)))
        tokens.append(np.fromiter(itertools.chain.from_iterable(ids), np.int32,
                                  int(lengths[-1].sum())))
    if not tokens:
        return np.empty(0, np.int32), np.empty(0, np.int64)
    return np.concatenate(tokens), np.concatenate(lengths)
