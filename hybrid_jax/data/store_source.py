"""A grain random-access source of training batches over a prepared corpus: record `step` is this
host's slice of the global batch of that step (a pure function of (seed, step)).

The plan (which examples, languages and negatives) is drawn for the global batch, since the
no-false-negative rule needs every host's pairs, but it is only integers; each host gathers the
token rows of its slice [p*B/P, (p+1)*B/P) alone (positional reads, store_batches.TokenFile), so
no host reads or holds the others' texts.
The batch dict is pipeline.py's (its docstring lists the fields), plus positive_score [b] and
negative_score [b, H] float32 with distillation (`scores`: the corpus's teacher scores).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hybrid_jax.data.batch_dict import batch_dict
from hybrid_jax.data.store_batches import TokenFile, TokenLayout, gather_rows
from hybrid_jax.data.store.layout import Store, open_store, read_rows

_CHUNK_ROWS = 1 << 16  # rows read at once while building a part's index


@dataclasses.dataclass
class CorpusPart:
    """The examples one sampler draws from: corpus rows (a fold, a fraction) and language columns.
    Its query and positive text ids are read once (positional reads, nothing left mapped) and
    held as int32 where the corpus's text ids fit: the per-host index, O(examples x languages)."""
    corpus: Store
    rows: np.ndarray     # int64 [E'] corpus example rows, ascending
    columns: np.ndarray  # int64 [L'] corpus language columns of the sorted training languages
    languages: list
    _ids: dict = dataclasses.field(default_factory=dict, repr=False)

    def __reduce__(self):
        # grain worker processes re-open the memory maps instead of receiving copies of them
        return _reopen, (str(self.corpus.path), self.rows, self.columns, self.languages)

    def query(self) -> np.ndarray:
        """int32 (or int64) [E', L'] text ids of the part's queries, -1 absent."""
        return self._read("query")

    def positive(self) -> np.ndarray:
        """[E', L'] text ids of the part's positive passages, -1 absent."""
        return self._read("positive")

    def _read(self, name: str) -> np.ndarray:
        if name not in self._ids:
            narrow = len(self.corpus.offsets) - 1 < np.iinfo(np.int32).max
            out = np.empty((len(self.rows), len(self.columns)), np.int32 if narrow else np.int64)
            for i in range(0, len(self.rows), _CHUNK_ROWS):
                block = read_rows(getattr(self.corpus, name), self.rows[i:i + _CHUNK_ROWS])
                out[i:i + _CHUNK_ROWS] = block[:, self.columns]
            self._ids[name] = out
        return self._ids[name]


def _reopen(path, rows, columns, languages) -> CorpusPart:
    return CorpusPart(open_store(path), rows, columns, languages)


class BatchAssembler:
    """A plan (+ negatives) of one part -> this host's slice of the batch dict."""

    def __init__(self, part: CorpusPart, layouts: tuple[TokenLayout, TokenLayout],
                 lengths: tuple[int, int], host_slice: slice, scores=None):
        self.part, self.layouts, self.lengths, self.slice = part, layouts, lengths, host_slice
        # teacher scores, with distillation: CorpusScores or store_teacher.ModelScores
        self.scores = scores
        self.tokens = TokenFile(part.corpus.tokens, part.corpus.offsets)
        self.rows_gathered = 0  # token rows read by this host (queries, passages, negatives)

    def _gather(self, text_ids, which: int):
        self.rows_gathered += int(np.size(text_ids))
        return gather_rows(self.tokens, np.ravel(text_ids), self.layouts[which],
                           self.lengths[which])

    def __call__(self, plan, negatives=None) -> dict[str, np.ndarray]:
        part = self.part
        idx = plan.example_index[self.slice]
        q_lang, p_lang = plan.query_lang[self.slice], plan.passage_lang[self.slice]
        query = self._gather(part.query()[idx, q_lang], 0)
        passage = self._gather(part.positive()[idx, p_lang], 1)
        chosen = negatives.passage[self.slice] if negatives is not None else None
        scores = None if self.scores is None else self.scores.batch(idx, p_lang, chosen)
        if chosen is not None:
            negatives = (*self._gather(chosen, 1), chosen)
        return batch_dict(query, passage, plan, self.slice, negatives, scores)


class CorpusScores:
    """The corpus's own teacher scores (pos_scores / neg_scores of the prepared records)."""

    def __init__(self, part: CorpusPart):
        self.part = part

    def batch(self, idx, p_lang, chosen):
        """(positive [b], negative [b, H] or None) float32 of example `idx` (part rows) in
        language `p_lang` (codes) with negatives `chosen` (text ids, -1 padding): NaN = none."""
        c, rows, p_col = self.part.corpus, self.part.rows[idx], self.part.columns[p_lang]
        positive = np.asarray(c.positive_score[rows, p_col], np.float32)
        if chosen is None:
            return positive, None
        return positive, scores_of(np.asarray(c.negative[rows, p_col]),
                                   np.asarray(c.negative_score[rows, p_col], np.float32), chosen)


def scores_of(candidates: np.ndarray, scores: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """[b, H] float32: the score of each chosen id among `candidates` [b, K] (its first
    occurrence; NaN for padding and for an id not among them)."""
    match = candidates[:, None, :] == chosen[:, :, None]                  # [b, H, K]
    k = match.argmax(-1)
    out = np.take_along_axis(scores, k, 1) if scores.shape[1] else np.full(chosen.shape, np.nan)
    return np.where((chosen >= 0) & match.any(-1), out, np.nan).astype(np.float32)


class StoreBatches:
    """grain.sources.RandomAccessDataSource: len = the run's steps, [step] = this host's batch."""

    def __init__(self, planner, num_steps: int):
        """`planner(step) -> (assembler, plan, negative plan or None)` (one source or a mix)."""
        self.planner, self.num_steps = planner, int(num_steps)

    @property
    def languages(self) -> list:
        return self.planner.languages

    def __len__(self) -> int:
        return self.num_steps

    def __getitem__(self, step) -> dict[str, np.ndarray]:
        assemble, plan, negatives = self.planner(int(step))
        return assemble(plan, negatives)


