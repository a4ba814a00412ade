"""The training input pipeline: config -> a batch source (step -> fixed-shape arrays) -> grain.

The batch source reads a prepared corpus (store_pipeline.py: data.store, data.sources, and by
default every format that can be prepared, prepared on first use: corpus_cache.py) or, for what
cannot be prepared, in-memory examples (examples_path.py); for the same config both give the same
batches. grain graph: MapDataset.source(batch source of num_steps = train.num_steps records)
. to_iter_dataset(ReadOptions) [. mp_prefetch]. Record `step` is a pure function of (seed, step)
(see sampler.py), so the iterator state is the step counter and a restored iterator yields
exactly the next batch.
Each host builds only its contiguous slice [p*B/P, (p+1)*B/P) of the global batch; the kind
(mono / cross) is decided per global batch, so every host and device slice shares it.

Output per step (per host, b = global_batch_size / process_count), all numpy:
  query_ids, query_mask      int32 [b, query_max_length]
  passage_ids, passage_mask  int32 [b, passage_max_length]
  is_mono                    int32 [b] (same value across the global batch)
  query_lang, passage_lang   int32 [b], codes into `iterator.languages` (sorted training languages)
  example_id                 int32 [b], index into the fold's examples (in the fold's order)
With data.hard_negatives = H > 0 (negatives.py), also
  negative_ids, negative_mask  int32 [b, H, passage_max_length], passage prefix like passages
  negative_valid               int32 [b, H]: 1 real, 0 padding (a pair with fewer than H); a
                               padding row is the tokenized empty passage (the prefix alone), so
                               its mask is never all zero
With distillation (make_train_iterator(..., distill=True), i.e. loss.distill != 'none'; see
teacher_scores.py and the corpus's scores), also
  positive_score               float32 [b]: the teacher's score of each (query, positive), NaN: none
  negative_score               float32 [b, H]: of each hard negative, NaN: none or padding
"""
from __future__ import annotations

import grain
import ml_collections

from hybrid_jax.data import corpus_cache, examples_path
# The examples path's pieces, for callers that build it directly (tests, benchmarks).
from hybrid_jax.data.examples_path import (BatchMaker, load_training_examples,  # noqa: F401
                                           make_negatives, make_sampler)


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
        store="",                 # '' = 'auto' where the format can be prepared | corpus dir | 'auto'
        store_cache="",           # where prepared corpora go ('' = $HYBRID_JAX_CORPUS_CACHE, else
                                  # <workdir>/corpora)
        draw="rejection",         # rejection: O(batch) per step | permutation: HybridSampler's
        sources=(),               # mixture: ({"path": dir, "weight": w, "query_prefix": ...}, ...)
        source_mixing="batch",    # batch | example: one source per batch | shares within a batch
        source_schedule="draw",   # draw | exact: a batch's source drawn | exact shares over a run
        train_fraction=1.0,       # nested seeded subset of the fold's examples, by unit
    ))


class TrainIterator(grain.DatasetIterator):
    """The grain iterator plus its batch `source` (StoreBatches or ExampleBatches), whose
    attributes it shows (`languages`; `planner` or `sampler`, `negatives`, `examples`).
    get_state()/set_state() are the grain iterator's (orbax-savable)."""

    def __init__(self, inner: grain.DatasetIterator, source):
        super().__init__(inner)
        self.source = source

    def __getattr__(self, name):
        if name == "source":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.source, name)

    def __next__(self):
        return next(self._parent)

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)


def make_batch_source(data_config, tokenizer, prefixes: tuple[str, str] = ("query: ", "passage: "),
                      *, num_steps: int, process_index: int = 0, process_count: int = 1,
                      examples=None, mining_model=None, workdir=None,
                      tokenizer_spec: str | None = None, distill: bool = False,
                      write_caches: bool = True):
    """step -> this host's batch of `data_config` (a `config.data` ConfigDict, see
    default_config), for steps 0 .. num_steps - 1 (the run's `train.num_steps`): a grain
    random-access source.

    A prepared corpus unless the format cannot be prepared or `examples` are given (they override
    loading from the configured source: tests, custom corpora); `corpus_cache.store_setting` says
    which. data.store='auto' (the default's meaning) prepares the source on first use with the
    tokenizer (`tokenizer_spec`, the model spec, names it) into the corpus cache (`workdir`'s
    unless data.store_cache says otherwise).
    With data.negative_source='mined': `mining_model` is the run's starting model (a
    models.pretrained.Pretrained; used unless data.mining_model names another) and `workdir` the
    run's, where the mining is cached (<workdir>/negatives/mined.json, written by process 0).
    `distill`: the batches carry teacher scores (the corpus's, or data.teacher_model's, cached
    in `workdir` too). `write_caches` False: process 0 writes no mining / scoring cache either.
    """
    cfg = data_config
    store = corpus_cache.store_setting(cfg, examples_given=examples is not None)
    if not (store or cfg.get("sources")):
        return examples_path.example_batches(cfg, tokenizer, prefixes, num_steps, process_index,
                                             process_count, examples, mining_model, workdir,
                                             distill, write_caches and process_index == 0)
    from hybrid_jax.data import store_pipeline
    from hybrid_jax.data.store_source import StoreBatches

    corpus = mining = None
    if not cfg.get("sources"):
        if store == "auto" and int(cfg.hard_negatives) and cfg.negative_source != "mined":
            examples_path.check_carried(cfg, cfg.negative_source)
        if store == "auto":  # the configured source is there to mine and to score
            mining = (mining_model, workdir, write_caches and process_index == 0)
        corpus = corpus_cache.resolve(cfg, tokenizer, tokenizer_spec, workdir, process_index,
                                      store=store)
    planner = store_pipeline.make_planner(cfg, tokenizer, prefixes, int(num_steps),
                                          process_index, process_count, corpus, distill=distill,
                                          mining=mining)
    return StoreBatches(planner, int(num_steps))


def make_train_iterator(data_config, tokenizer, query_prefix: str = "query: ",
                        passage_prefix: str = "passage: ", *, num_steps: int,
                        process_index: int | None = None, process_count: int | None = None,
                        **source_options) -> TrainIterator:
    """The training iterator of `data_config`: grain over make_batch_source(...) (its keyword
    arguments: examples, mining_model, workdir, tokenizer_spec, distill)."""
    cfg = data_config
    if process_index is None or process_count is None:
        import jax
        process_index, process_count = jax.process_index(), jax.process_count()
    source = make_batch_source(cfg, tokenizer, (query_prefix, passage_prefix),
                               num_steps=int(num_steps), process_index=process_index,
                               process_count=process_count, **source_options)
    ds = grain.MapDataset.source(source).to_iter_dataset(
        grain.ReadOptions(num_threads=int(cfg.num_threads),
                          prefetch_buffer_size=int(cfg.prefetch)))
    if cfg.worker_count:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(cfg.worker_count)))
    return TrainIterator(iter(ds), source)
