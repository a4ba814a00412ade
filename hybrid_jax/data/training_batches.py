"""The batches of a training run: synthetic token ids (data.synthetic) or the grain pipeline over
the configured source, sliced for this process."""
from __future__ import annotations

import jax


def make_train_iterator(config, pretrained, workdir: str):
    """The run's batch iterator (next() -> a batch dict, get_state/set_state for checkpoints).
    `pretrained` gives the tokenizer and prefixes; mined hard negatives are mined with it (or
    data.mining_model) once and cached in the workdir."""
    if config.data.synthetic:
        from hybrid_jax.data.synthetic import SyntheticIterator
        return SyntheticIterator(config.data, pretrained.config.vocab_size, seed=config.data.seed,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
    from hybrid_jax.data import pipeline

    return pipeline.make_train_iterator(
        config.data, pretrained.tokenizer, pretrained.prefixes.get("query", ""),
        pretrained.prefixes.get("passage", ""), num_steps=int(config.train.num_steps),
        process_index=jax.process_index(), process_count=jax.process_count(),
        mining_model=pretrained, workdir=workdir, tokenizer_spec=str(config.model.spec),
        distill=config.loss.distill != "none")
