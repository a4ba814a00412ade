"""Random learnable batches in the training pipeline's format, for tests and benchmarks that need
no dataset (`config.data.synthetic`): passages share tokens with their queries, so the loss falls.
With `data.hard_negatives = H > 0` every pair also gets H negatives that share fewer of its query's
tokens than the positive does (hard, but distinguishable), about a quarter of them marked padding
(`negative_valid = 0`), as the pipeline marks pairs with fewer candidates than asked."""
from __future__ import annotations

import numpy as np

from hybrid_jax.errors import InputError


class SyntheticIterator:
    """Random learnable batches in the pipeline's format (passages share tokens with their
    queries); the state is the number of batches drawn, so restore is exact."""

    def __init__(self, data_config, vocab_size: int, seed: int = 0,
                 process_index: int = 0, process_count: int = 1):
        self.c = data_config
        self.vocab = min(int(vocab_size), 1000)
        self.seed = seed
        self.step = 0
        self.process_index, self.process_count = process_index, process_count

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        b = int(self.c.global_batch_size)
        lq, lp = int(self.c.query_max_length), int(self.c.passage_max_length)
        rng = np.random.default_rng((self.seed, self.step))
        self.step += 1
        q = rng.integers(5, self.vocab, size=(b, lq), dtype=np.int32)
        p = rng.integers(5, self.vocab, size=(b, lp), dtype=np.int32)
        shared = min(lq, lp) // 2
        p[:, 1:1 + shared] = q[:, 1:1 + shared]
        q_len = rng.integers(max(2, shared + 1), lq + 1, size=b)
        mask_q = (np.arange(lq)[None] < q_len[:, None]).astype(np.int32)
        mask_p = np.ones((b, lp), np.int32)
        lang = rng.integers(0, 11, size=b).astype(np.int32)
        batch = dict(query_ids=np.where(mask_q > 0, q, 1), query_mask=mask_q,
                     passage_ids=p, passage_mask=mask_p,
                     is_mono=np.ones(b, np.int32), query_lang=lang, passage_lang=lang,
                     example_id=np.arange(b) + b * (self.step - 1))
        hard = int(self.c.get("hard_negatives", 0) or 0)
        if hard > 0:  # drawn after everything else: batches without negatives stay as they were
            batch.update(self._negatives(rng, q, hard, lp, shared))
        per = b // self.process_count
        lo = self.process_index * per
        return {k: v[lo:lo + per] for k, v in batch.items()}

    def _negatives(self, rng, q, hard: int, lp: int, shared: int) -> dict:
        b = q.shape[0]
        ids = rng.integers(5, self.vocab, size=(b, hard, lp), dtype=np.int32)
        overlap = shared // 2
        ids[:, :, 1:1 + overlap] = q[:, None, 1:1 + overlap]
        lengths = rng.integers(max(2, overlap + 1), lp + 1, size=(b, hard))
        mask = (np.arange(lp) < lengths[..., None]).astype(np.int32)
        valid = (rng.random((b, hard)) >= 0.25).astype(np.int32)
        return dict(negative_ids=np.where(mask > 0, ids, 1), negative_mask=mask,
                    negative_valid=valid)

    def get_state(self):
        return {"step": self.step}

    def set_state(self, state):
        if not isinstance(state, dict) or "step" not in state:
            raise InputError(
                f"data iterator state {str(state)[:80]!r} was not saved by synthetic batches "
                "(data.synthetic=True): resume with the data config the run was saved with")
        self.step = int(state["step"])
