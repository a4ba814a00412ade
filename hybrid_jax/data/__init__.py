"""Input data: training formats by name (formats: lareqa, xquad_plain, pairs_jsonl, tfds) and their
readers (lareqa, sentences, pairs_jsonl, tfds_builders, download), BEIR folders (beir),
leakage-free article folds (splits), hybrid-batch composition (sampler), hard negatives
(negatives, mining), the grain pipeline (pipeline) and inspection. See docs/data.md."""
