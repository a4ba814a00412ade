"""The examples path: a format's examples in memory -> HybridSampler (+ HardNegatives, teacher
scores) -> batches tokenized on the fly. Used for what cannot be prepared into a corpus (formats
without a store reader, examples passed in); everything else reads a prepared corpus
(store_pipeline.py), which gives the same batches for the same config.
"""
from __future__ import annotations

import numpy as np

from hybrid_jax.data import examples as examples_lib
from hybrid_jax.data.batch_dict import batch_dict, host_slice
from hybrid_jax.data.formats import FORMATS, formats_carrying
from hybrid_jax.data.negatives import SOURCES as NEGATIVE_SOURCES, HardNegatives
from hybrid_jax.data.sampler import HybridSampler
from hybrid_jax.data.train_fraction import fraction_of_examples
from hybrid_jax.errors import InputError


def load_training_examples(cfg) -> list[examples_lib.ParallelExample]:
    """The examples of fold `cfg.train_fold` from the configured source (a registered format)."""
    fmt = FORMATS.get(cfg.format)
    if not cfg.dataset_dir:
        raise InputError("data.dataset_dir: not set")
    return fmt.load(cfg)


def make_sampler(cfg, examples, num_steps: int | None = None) -> HybridSampler:
    """`num_steps`: the steps the batches are drawn for (train.num_steps for training), over
    which data.mono_schedule='exact' fixes the share of mono batches (it needs them)."""
    languages = list(cfg.languages) if cfg.languages else examples_lib.languages_of(examples)
    return HybridSampler(examples, languages, cfg.global_batch_size, cfg.sampling, cfg.alpha,
                         cfg.cross_pairing, cfg.language_weights, cfg.seed, cfg.mono_schedule,
                         num_steps)


def make_negatives(cfg, sampler: HybridSampler, *, loaded: bool = True, mining_model=None,
                   workdir=None, write: bool = True) -> HardNegatives | None:
    """The hard-negative draw of `cfg` over `sampler`'s examples (None when data.hard_negatives
    is 0). `loaded`: the examples came from the configured source (not passed in), so the source
    is checked against data.format. 'mined' needs `mining_model` (the run's starting model) unless
    data.mining_model names one; `workdir` caches the mining (written when `write`)."""
    count, source = cfg.hard_negatives, cfg.negative_source
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InputError(f"data.hard_negatives: must be an integer >= 0, got {count!r}")
    if source not in NEGATIVE_SOURCES:
        raise InputError(f"data.negative_source: {source!r} is not one of {NEGATIVE_SOURCES}")
    if count == 0:
        return None
    examples = sampler.examples
    if source == "mined":
        if int(cfg.mining_depth) < count:
            raise InputError(f"data.mining_depth: {cfg.mining_depth} mined candidates cannot give "
                             f"data.hard_negatives={count} per pair")
        from hybrid_jax.data import mining
        candidates = mining.mined_candidates(cfg, examples, sampler.languages, mining_model,
                                             workdir, write=write)
    else:
        if loaded:
            check_carried(cfg, source)
        candidates = [e.negatives for e in examples]
    table = HardNegatives(sampler, candidates, count, source)
    if not table.stats["candidates"]:
        raise InputError(f"data.negative_source={source!r}: no example of fold "
                         f"{cfg.train_fold!r} in {cfg.dataset_dir or 'the given examples'} has a "
                         f"candidate negative in the training languages {sampler.languages}")
    return table


def check_carried(cfg, source: str) -> None:
    """data.negative_source (not 'mined') must be a kind of negative data.format carries."""
    fmt = FORMATS.get(cfg.format)
    if not fmt.carries(cfg, source):
        raise InputError(f"data.negative_source={source!r} needs data.format in "
                         f"{formats_carrying(source)} (or a tfds dataset prepared from one), not "
                         f"{fmt.source_of(cfg)!r}")


class BatchMaker:
    """step -> this host's slice of the global batch, tokenized (a pure function of step)."""

    def __init__(self, sampler: HybridSampler, tokenizer, query_prefix: str, passage_prefix: str,
                 query_max_length: int, passage_max_length: int,
                 process_index: int = 0, process_count: int = 1,
                 negatives: HardNegatives | None = None, scores=None):
        self._slice = host_slice(sampler.batch_size, process_index, process_count)
        self.sampler = sampler
        self._prefixes = (query_prefix, passage_prefix)
        self._lengths = (int(query_max_length), int(passage_max_length))
        self._tokenizer = tokenizer
        self.negatives = negatives
        self.scores = scores  # teacher_scores.TeacherScores, with distillation

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        plan = self.sampler.plan(int(step))
        idx = plan.example_index[self._slice]
        q_lang, p_lang = plan.query_lang[self._slice], plan.passage_lang[self._slice]
        langs, examples = self.sampler.languages, self.sampler.examples
        queries = [self._prefixes[0] + examples[i].queries[langs[l]] for i, l in zip(idx, q_lang)]
        passages = [self._prefixes[1] + examples[i].passages[langs[l]] for i, l in zip(idx, p_lang)]
        query = self._tokenizer(queries, self._lengths[0])
        passage = self._tokenizer(passages, self._lengths[1])
        negatives = scores = None
        if self.negatives is not None:
            # Drawn for the whole global batch (the rule needs every host's pairs), then sliced.
            chosen = self.negatives.choose(plan).passage[self._slice]
            texts = [self._prefixes[1] + (self.negatives.text(p) if p >= 0 else "")
                     for p in chosen.reshape(-1).tolist()]
            negatives = (*self._tokenizer(texts, self._lengths[1]), chosen)
            if self.scores is not None:
                got = self.scores.batch(idx, p_lang, chosen)
                scores = (got["positive_score"], got["negative_score"])
        return batch_dict(query, passage, plan, self._slice, negatives, scores)


class ExampleBatches:
    """A random-access source of training batches over in-memory examples: len = the run's
    steps, [step] = this host's batch (pipeline.py's dict), like store_source.StoreBatches."""

    def __init__(self, make_batch: BatchMaker, num_steps: int):
        self.make_batch, self.num_steps = make_batch, int(num_steps)
        self.sampler, self.negatives = make_batch.sampler, make_batch.negatives
        self.languages, self.examples = self.sampler.languages, self.sampler.examples

    def __len__(self) -> int:
        return self.num_steps

    def __getitem__(self, step) -> dict[str, np.ndarray]:
        return self.make_batch(int(step))


def example_batches(cfg, tokenizer, prefixes: tuple[str, str], num_steps: int,
                    process_index: int, process_count: int, examples=None, mining_model=None,
                    workdir=None, distill: bool = False, write: bool = True) -> ExampleBatches:
    """The batch source of the examples path (arguments as for pipeline.make_batch_source;
    `write`: this process writes the mining / scoring caches)."""
    loaded = examples is None
    if loaded:
        examples = load_training_examples(cfg)
    examples = fraction_of_examples(examples, float(cfg.get("train_fraction", 1.0)),
                                    int(cfg.split_seed))
    sampler = make_sampler(cfg, examples, int(num_steps))
    negatives = make_negatives(cfg, sampler, loaded=loaded, mining_model=mining_model,
                               workdir=workdir, write=write)
    scores = None
    if distill:
        from hybrid_jax.data.teacher_scores import make_teacher_scores
        scores = make_teacher_scores(cfg, sampler, negatives, workdir=workdir, write=write)
    return ExampleBatches(BatchMaker(sampler, tokenizer, prefixes[0], prefixes[1],
                                     cfg.query_max_length, cfg.passage_max_length,
                                     process_index, process_count, negatives, scores), num_steps)
