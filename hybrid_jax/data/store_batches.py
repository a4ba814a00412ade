"""Batches from a prepared corpus: the plan's text ids -> fixed-shape token rows, read from the
corpus's tokens/offsets files (no tokenization after preparation).

`TokenFile` reads each row with a positional read instead of indexing the memory map: a
memory-mapped read maps whole page-cache folios into the process, so at corpus scale a host's
resident memory grows towards the whole token file (GBs) within a few dozen random batches, though
it only reads its own rows. Positional reads leave the file in the page cache, outside the
process, and keep its resident memory to the rows it holds.

A row is [CLS] + prefix ids + text ids + [SEP], cut to the max length keeping [SEP] and right-padded,
which is what the tokenizer gives for prefix + text (`TokenLayout` derives the prefix's ids from
the tokenizer; tests check the equality on XQuAD-R). An empty text (a padding negative) is the
tokenized prefix alone, as in pipeline.BatchMaker. The batch dict is pipeline.py's.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from hybrid_jax.errors import InputError

_PROBE = "a"


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    cls_id: int
    sep_id: int
    pad_id: int
    prefix: np.ndarray  # int32: the prefix's ids when a text follows it
    alone: np.ndarray   # int32: the tokenized prefix alone, specials included (empty text)

    @classmethod
    def of(cls, tokenizer, prefix: str) -> "TokenLayout":
        """The prefix's ids before a text: tokenize prefix + probe and remove the probe's ids (a
        SentencePiece prefix ending in a space tokenizes alone with a trailing '▁' piece that
        disappears before a word)."""
        probe, joined, alone = tokenizer.token_ids([_PROBE, prefix + _PROBE, prefix])
        tail = len(probe) - 1  # probe ids + [SEP]
        if len(probe) < 2 or joined[-tail:] != probe[1:] or joined[0] != probe[0]:
            raise InputError(f"tokenizer {tokenizer.name!r}: the ids of prefix {prefix!r} cannot "
                             f"be separated from the text's; prepare the corpus with the prefix")
        return cls(probe[0], probe[-1], tokenizer.pad_id, np.array(joined[1:-tail], np.int32),
                   np.array(alone, np.int32))


class TokenFile:
    """Token rows of a corpus's memory-mapped tokens/offsets arrays (their .npy files), read with
    positional reads. Pickles by path; each process opens its own descriptors on first use."""

    def __init__(self, tokens: np.memmap, offsets: np.memmap):
        self._files = ((tokens.filename, int(tokens.offset), np.dtype(tokens.dtype)),
                       (offsets.filename, int(offsets.offset), np.dtype(offsets.dtype)))
        self._fds = None

    def __getstate__(self):
        return {"_files": self._files, "_fds": None}

    def __del__(self):
        for fd in self._fds or ():
            os.close(fd)

    def _open(self) -> tuple[int, int]:
        if self._fds is None:
            self._fds = tuple(os.open(path, os.O_RDONLY) for path, _, _ in self._files)
        return self._fds

    def _truncated(self, which: int, first: int, count: int):
        return InputError(f"{self._files[which][0]}: truncated (wanted {count} items at {first}); "
                          f"prepare the corpus again")

    def rows(self, text_ids: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens int32 [n, width]: the first `width` ids of each text, zero-padded; lengths
        int64 [n]: each text's full length), -1 -> the empty text. Two positional reads per
        text (its offsets, its first tokens): the per-row work is kept to plain Python calls."""
        (_, token_base, token_dtype), (_, offset_base, offset_dtype) = self._files
        token_fd, offset_fd = self._open()
        t_size, o_size, pread = token_dtype.itemsize, offset_dtype.itemsize, os.pread
        out = np.zeros((len(text_ids), width), token_dtype)
        lengths = np.zeros(len(text_ids), np.int64)
        for i, t in enumerate(text_ids.tolist()):
            if t < 0:
                continue
            data = pread(offset_fd, 2 * o_size, offset_base + t * o_size)
            if len(data) != 2 * o_size:
                raise self._truncated(1, t, 2)
            start, end = np.frombuffer(data, offset_dtype).tolist()
            lengths[i] = end - start
            take = min(end - start, width)
            if take:
                data = pread(token_fd, take * t_size, token_base + start * t_size)
                if len(data) != take * t_size:
                    raise self._truncated(0, start, take)
                out[i, :take] = np.frombuffer(data, token_dtype)
        return out, lengths


def gather_rows(tokens: TokenFile, text_ids: np.ndarray, layout: TokenLayout,
                max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """ids, mask int32 [n, max_length] of texts `text_ids` (-1: the empty text)."""
    if max_length < 2:
        raise InputError(f"max_length must be >= 2 (got {max_length})")
    text_ids = np.asarray(text_ids, np.int64)
    n, width = len(text_ids), max_length - 2
    P = len(layout.prefix)
    head, length = tokens.rows(text_ids, max(width - P, 0))
    body = np.minimum(P + length, width)                       # [n] prefix + text kept
    cols = np.arange(width)
    in_text = (cols >= P) & (cols < body[:, None])             # [n, width]
    text = np.zeros((n, width), np.int32)
    text[:, P:] = head
    prefix = np.broadcast_to(layout.prefix[np.minimum(cols, max(P - 1, 0))] if P else
                             np.zeros(width, np.int32), (n, width))
    ids = np.full((n, max_length), layout.pad_id, np.int32)
    ids[:, 0] = layout.cls_id
    ids[:, 1:-1] = np.where(in_text, text, np.where(cols < np.minimum(P, body)[:, None], prefix,
                                                     layout.pad_id))
    ids[np.arange(n), body + 1] = layout.sep_id
    mask = (np.arange(max_length) < (body + 2)[:, None]).astype(np.int32)
    empty = length == 0
    if empty.any():  # the prefix tokenized alone, cut like Tokenizer.pack
        alone = layout.alone if len(layout.alone) <= max_length else \
            np.concatenate([layout.alone[:max_length - 1], layout.alone[-1:]])
        ids[empty] = layout.pad_id
        ids[np.ix_(empty, np.arange(len(alone)))] = alone
        mask[empty] = np.arange(max_length) < len(alone)
    return ids, mask
