"""Input data: sources (lareqa, sentences, pairs_jsonl, tfds_builders, download), leakage-free
article folds (splits), hybrid-batch composition (sampler), the grain pipeline (pipeline),
inspection and a throughput benchmark. See docs/data.md."""
