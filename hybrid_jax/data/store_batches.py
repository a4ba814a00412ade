"""Batches from a prepared corpus: the plan's text ids -> fixed-shape token rows, gathered from the
memory-mapped tokens/offsets (no tokenization after preparation).

A row is [CLS] + prefix ids + text ids + [SEP], cut to the max length keeping [SEP] and right-padded,
which is what the tokenizer gives for prefix + text (`TokenLayout` derives the prefix's ids from
the tokenizer; tests check the equality on XQuAD-R). An empty text (a padding negative) is the
tokenized prefix alone, as in pipeline.BatchMaker. The batch dict is pipeline.py's.
"""
from __future__ import annotations

import dataclasses

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


def gather_rows(tokens: np.ndarray, offsets: np.ndarray, text_ids: np.ndarray,
                layout: TokenLayout, max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """ids, mask int32 [n, max_length] of texts `text_ids` (-1: the empty text)."""
    if max_length < 2:
        raise InputError(f"max_length must be >= 2 (got {max_length})")
    text_ids = np.asarray(text_ids, np.int64)
    n, width = len(text_ids), max_length - 2
    safe = np.maximum(text_ids, 0)
    start = np.asarray(offsets[safe], np.int64)
    length = np.where(text_ids >= 0, np.asarray(offsets[safe + 1], np.int64) - start, 0)
    P = len(layout.prefix)
    body = np.minimum(P + length, width)                       # [n] prefix + text kept
    cols = np.arange(width)
    in_text = (cols >= P) & (cols < body[:, None])             # [n, width]
    where = np.where(in_text, start[:, None] + cols - P, 0)
    text = np.asarray(tokens[where.ravel()], np.int32).reshape(n, width) if n and width else \
        np.zeros((n, width), np.int32)
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
