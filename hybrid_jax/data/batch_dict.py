"""The training batch dict (its fields: pipeline.py's docstring) and each host's rows of it, in one
place for both batch sources (store_source.BatchAssembler, examples_path.BatchMaker)."""
from __future__ import annotations

import numpy as np

from hybrid_jax.errors import InputError


def host_slice(batch_size: int, process_index: int, process_count: int) -> slice:
    """This host's contiguous rows [p*B/P, (p+1)*B/P) of the global batch."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise InputError(f"process_index {process_index} / process_count {process_count} invalid")
    if batch_size % process_count:
        raise InputError(f"data.global_batch_size: {batch_size} is not divisible by the "
                         f"{process_count} hosts")
    per_host = batch_size // process_count
    return slice(process_index * per_host, (process_index + 1) * per_host)


def batch_dict(query, passage, plan, rows: slice, negatives=None, scores=None) -> dict:
    """`query`, `passage`: (ids, mask) int32 [b, L] of this host's `rows` of `plan` (a BatchPlan);
    `negatives`: (ids, mask) int32 [b * H, Lp] and the chosen passages [b, H] (-1 padding);
    `scores`: (positive [b], negative [b, H] or None) teacher scores, with distillation."""
    idx = plan.example_index[rows]
    batch = {
        "query_ids": query[0], "query_mask": query[1],
        "passage_ids": passage[0], "passage_mask": passage[1],
        "is_mono": np.full(len(idx), plan.is_mono, np.int32),
        "query_lang": plan.query_lang[rows].astype(np.int32),
        "passage_lang": plan.passage_lang[rows].astype(np.int32),
        "example_id": idx.astype(np.int32),
    }
    if negatives is not None:
        ids, mask, chosen = negatives
        shape = (*chosen.shape, ids.shape[-1])
        batch.update(negative_ids=ids.reshape(shape), negative_mask=mask.reshape(shape),
                     negative_valid=(chosen >= 0).astype(np.int32))
    if scores is not None:
        batch["positive_score"] = np.asarray(scores[0], np.float32)
        if scores[1] is not None:
            batch["negative_score"] = np.asarray(scores[1], np.float32)
    return batch
