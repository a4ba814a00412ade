"""The training input pipeline: config -> examples -> per-step batch plans -> fixed-shape arrays.

grain graph: MapDataset.range(num_steps = train.num_steps) . map(make_batch) . to_iter_dataset(ReadOptions)
[. mp_prefetch]. `make_batch(step)` is a pure function of (seed, step) (see sampler.py), so the
iterator state is the step counter and a restored iterator yields exactly the next batch.
Each host builds only its contiguous slice [p*B/P, (p+1)*B/P) of the global batch; the kind
(mono / cross) is decided per global batch, so every host and device slice shares it.

Output per step (per host, b = global_batch_size / process_count), all numpy:
  query_ids, query_mask      int32 [b, query_max_length]
  passage_ids, passage_mask  int32 [b, passage_max_length]
  is_mono                    int32 [b] (same value across the global batch)
  query_lang, passage_lang   int32 [b], codes into `iterator.languages` (sorted training languages)
  example_id                 int32 [b], index into `iterator.examples`
With data.hard_negatives = H > 0 (negatives.py), also
  negative_ids, negative_mask  int32 [b, H, passage_max_length], passage prefix like passages
  negative_valid               int32 [b, H]: 1 real, 0 padding (a pair with fewer than H); a
                               padding row is the tokenized empty passage (the prefix alone), so
                               its mask is never all zero
With distillation (make_train_iterator(..., distill=True), i.e. loss.distill != 'none'; see
teacher_scores.py), also
  positive_score               float32 [b]: the teacher's score of each (query, positive), NaN: none
  negative_score               float32 [b, H]: of each hard negative, NaN: none or padding
"""
from __future__ import annotations

import grain
import ml_collections
import numpy as np

from hybrid_jax.data import examples as examples_lib
from hybrid_jax.data.formats import FORMATS, formats_carrying
from hybrid_jax.data.negatives import SOURCES as NEGATIVE_SOURCES, HardNegatives
from hybrid_jax.data.sampler import HybridSampler
from hybrid_jax.data.train_fraction import fraction_of_examples
from hybrid_jax.errors import InputError


def default_config() -> ml_collections.ConfigDict:
    """`config.data` fields (see docs/data.md)."""
    return ml_collections.ConfigDict(dict(
        format="lareqa",          # a name in data/formats.py: lareqa | xquad_plain | pairs_jsonl | tfds
        dataset_dir="",           # <lang>.json folder / xquad.<lang>.json folder / .jsonl file / tfds data_dir
        tfds_name="hybrid_parallel_examples/lareqa",  # for format='tfds'
        download=False,           # fetch missing xquad-r/ or xquad/ files (checksum-verified)
        train_fold="train",       # train | dev | test | all
        split_seed=0,
        split_sizes=(2 / 3, 1 / 12, 1 / 4),  # fractions or article counts (32, 4, 12)
        languages=("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"),
        sampling="hybrid",        # mono | cross | hybrid
        alpha=0.5,                # P(mono batch) when sampling='hybrid'
        mono_schedule="coin",     # coin | exact: of N steps ~Binomial(N, alpha) | round(alpha*N) mono
        cross_pairing="example",  # example | batch: language pair drawn per pair or per batch
        language_weights="uniform",  # uniform | size
        global_batch_size=32,
        hard_negatives=0,         # per pair (query, positive): extra passages scored by every query
        negative_source="same_paragraph",  # same_paragraph | mined | from_data (docs/data.md)
        mining_model="",          # 'mined': model spec to mine with ('' = the run's starting model)
        mining_depth=16,          # 'mined': candidates kept per (example, language), best first
        mining_skip_top=0,        # 'mined': drop the k best ranks (likely unlabelled positives)
        mining_margin=0.0,        # 'mined': > 0: keep score < positive's score * (1 - margin)
        mining_range=(0, 0),      # 'mined': (lo, hi): draw from ranks lo..hi-1, not the top; (0, 0): off
        teacher_model="",         # loss.distill: model spec scoring the pairs ('' = data's scores)
        query_max_length=32,
        passage_max_length=64,
        seed=0,
        prefetch=8,               # batches buffered ahead
        num_threads=1,            # grain read threads (tokenization holds a lock; 1 suffices)
        worker_count=0,           # >0: grain multiprocessing workers (needs absl flags parsed)
        # Prepared corpora (store_pipeline.py, docs/data.md "Training from a prepared corpus"):
        store="",                 # '' = examples as above | corpus dir | 'auto' (prepare + cache)
        store_cache="",           # store='auto': where prepared corpora go ('' = <workdir>/corpora)
        draw="permutation",       # permutation (HybridSampler's batches) | rejection (faster)
        sources=(),               # mixture: ({"path": dir, "weight": w, "query_prefix": ...}, ...)
        source_mixing="batch",    # batch | example: one source per batch | shares within a batch
        source_schedule="draw",   # draw | exact: a batch's source drawn | exact shares over a run
        train_fraction=1.0,       # nested seeded subset of the fold's examples, by unit
    ))


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
        fmt = FORMATS.get(cfg.format) if loaded else None
        if fmt is not None and not fmt.carries(cfg, source):
            raise InputError(
                f"data.negative_source={source!r} needs data.format in "
                f"{formats_carrying(source)} (or a tfds dataset prepared from one), not "
                f"{fmt.source_of(cfg)!r}")
        candidates = [e.negatives for e in examples]
    table = HardNegatives(sampler, candidates, count, source)
    if not table.stats["candidates"]:
        raise InputError(f"data.negative_source={source!r}: no example of fold "
                         f"{cfg.train_fold!r} in {cfg.dataset_dir or 'the given examples'} has a "
                         f"candidate negative in the training languages {sampler.languages}")
    return table


class BatchMaker:
    """step -> this host's slice of the global batch, tokenized (a pure function of step)."""

    def __init__(self, sampler: HybridSampler, tokenizer, query_prefix: str, passage_prefix: str,
                 query_max_length: int, passage_max_length: int,
                 process_index: int = 0, process_count: int = 1,
                 negatives: HardNegatives | None = None, scores=None):
        B = sampler.batch_size
        if process_count < 1 or not 0 <= process_index < process_count:
            raise InputError(f"process_index {process_index} / process_count {process_count} invalid")
        if B % process_count:
            raise InputError(f"data.global_batch_size: {B} is not divisible by the "
                             f"{process_count} hosts")
        per_host = B // process_count
        self._slice = slice(process_index * per_host, (process_index + 1) * per_host)
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
        query_ids, query_mask = self._tokenizer(queries, self._lengths[0])
        passage_ids, passage_mask = self._tokenizer(passages, self._lengths[1])
        batch = {
            "query_ids": query_ids, "query_mask": query_mask,
            "passage_ids": passage_ids, "passage_mask": passage_mask,
            "is_mono": np.full(len(idx), plan.is_mono, np.int32),
            "query_lang": q_lang.astype(np.int32), "passage_lang": p_lang.astype(np.int32),
            "example_id": idx.astype(np.int32),
        }
        if self.negatives is not None:
            # Drawn for the whole global batch (the rule needs every host's pairs), then sliced.
            chosen = self.negatives.choose(plan).passage[self._slice]
            texts = [self._prefixes[1] + (self.negatives.text(p) if p >= 0 else "")
                     for p in chosen.reshape(-1).tolist()]
            ids, mask = self._tokenizer(texts, self._lengths[1])
            shape = (*chosen.shape, self._lengths[1])
            batch.update(negative_ids=ids.reshape(shape), negative_mask=mask.reshape(shape),
                         negative_valid=(chosen >= 0).astype(np.int32))
            if self.scores is not None:
                batch.update(self.scores.batch(idx, p_lang, chosen))
        return batch


class TrainIterator(grain.DatasetIterator):
    """The grain iterator plus what is needed to read its batches back (`languages`,
    `examples`, `sampler`). get_state()/set_state() are the grain iterator's (orbax-savable)."""

    def __init__(self, inner: grain.DatasetIterator, sampler: HybridSampler,
                 negatives: HardNegatives | None = None):
        super().__init__(inner)
        self.sampler = sampler
        self.negatives = negatives
        self.languages = sampler.languages
        self.examples = sampler.examples

    def __next__(self):
        return next(self._parent)

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)


def make_train_iterator(data_config, tokenizer, query_prefix: str = "query: ",
                        passage_prefix: str = "passage: ", *, num_steps: int,
                        process_index: int | None = None, process_count: int | None = None,
                        examples=None, mining_model=None, workdir=None,
                        tokenizer_spec: str | None = None, distill: bool = False) -> TrainIterator:
    """The training iterator of `data_config` (a `config.data` ConfigDict, see default_config):
    batches for steps 0 .. num_steps - 1 (the run's `train.num_steps`).

    `examples` overrides loading from the configured source (tests, custom corpora).
    With data.negative_source='mined': `mining_model` is the run's starting model (a
    models.pretrained.Pretrained; used unless data.mining_model names another) and `workdir` the
    run's, where the mining is cached (<workdir>/negatives/mined.json, written by process 0).
    With data.store or data.sources set, batches come from prepared corpora instead
    (store_pipeline.py; same batches as the examples path for the same config with
    data.draw='permutation'); `tokenizer_spec` (the model spec) prepares data.store='auto'.
    `distill`: the batches carry teacher scores (data.teacher_model; cached in `workdir` too).
    """
    cfg = data_config
    if process_index is None or process_count is None:
        import jax
        process_index, process_count = jax.process_index(), jax.process_count()
    if cfg.get("store") or cfg.get("sources"):
        return _store_iterator(cfg, tokenizer, (query_prefix, passage_prefix), int(num_steps),
                               process_index, process_count, tokenizer_spec, workdir)
    loaded = examples is None
    if loaded:
        examples = load_training_examples(cfg)
    examples = fraction_of_examples(examples, float(cfg.get("train_fraction", 1.0)),
                                    int(cfg.split_seed))
    sampler = make_sampler(cfg, examples, int(num_steps))
    negatives = make_negatives(cfg, sampler, loaded=loaded, mining_model=mining_model,
                               workdir=workdir, write=process_index == 0)
    scores = None
    if distill:
        from hybrid_jax.data.teacher_scores import make_teacher_scores
        scores = make_teacher_scores(cfg, sampler, negatives, workdir=workdir,
                                     write=process_index == 0)
    make_batch = BatchMaker(sampler, tokenizer, query_prefix, passage_prefix,
                            cfg.query_max_length, cfg.passage_max_length,
                            process_index, process_count, negatives, scores)
    ds = grain.MapDataset.range(int(num_steps)).map(make_batch)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(cfg.num_threads),
                                                 prefetch_buffer_size=int(cfg.prefetch)))
    if cfg.worker_count:
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(cfg.worker_count)))
    return TrainIterator(iter(it_ds), sampler, negatives)


def _store_iterator(cfg, tokenizer, prefixes, num_steps, process_index, process_count,
                    tokenizer_spec, workdir):
    from hybrid_jax.data import corpus_cache, store_pipeline

    corpus = None
    if not cfg.get("sources"):
        corpus = corpus_cache.resolve(cfg, tokenizer, tokenizer_spec, workdir, process_index)
    planner = store_pipeline.make_planner(cfg, tokenizer, prefixes, num_steps, process_index,
                                          process_count, corpus)
    return store_pipeline.make_store_iterator(cfg, planner, num_steps)
