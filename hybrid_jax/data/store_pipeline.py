"""The training iterator over prepared corpora (data.store, data.sources): fold and training
fraction -> StoreSampler (+ StoreNegatives) per corpus -> grain source of per-host batches.

Folds are today's (splits.assign_folds over the corpus's unit names, so a corpus prepared from a
LAReQA folder gives the examples, in the same order, that data.format='lareqa' gives).
data.train_fraction keeps a nested, seeded subset of the fold's examples (`fraction_rows`).
"""
from __future__ import annotations

import numpy as np

from hybrid_jax.data import mixture, splits
from hybrid_jax.data.batch_dict import host_slice
from hybrid_jax.data.corpus_cache import check_tokenizer
from hybrid_jax.data.store_batches import TokenLayout
from hybrid_jax.data.store_negatives import StoreNegatives
from hybrid_jax.data.store_sampler import StoreSampler
from hybrid_jax.data.store_source import BatchAssembler, CorpusPart, CorpusScores
from hybrid_jax.data.store.layout import Store, open_store, read_rows
from hybrid_jax.data.train_fraction import fraction_rows
from hybrid_jax.errors import InputError


def fold_rows(corpus: Store, fold: str, rule: splits.FoldRule) -> np.ndarray:
    """Ascending corpus rows whose unit lies in `fold` ('all': every row)."""
    if fold == "all":
        return np.arange(corpus.query.shape[0], dtype=np.int64)
    names = corpus.unit_names()
    fold_of = splits.assign_folds(names, rule.seed, rule.sizes)
    in_fold = np.array([fold_of[n] == fold for n in names], bool)
    rows = np.flatnonzero(in_fold[read_rows(corpus.unit, np.arange(len(corpus.unit)))])
    if not len(rows):
        raise InputError(f"{corpus.path}: fold {fold!r} is empty (split seed {rule.seed}, "
                         f"sizes {rule.sizes})")
    return rows.astype(np.int64)


def corpus_part(corpus: Store, cfg, languages=None) -> CorpusPart:
    """The rows of cfg.train_fold (restricted by data.train_fraction) and the training columns."""
    rows = fold_rows(corpus, cfg.train_fold, splits.FoldRule.from_config(cfg))
    fraction = float(cfg.get("train_fraction", 1.0))
    if fraction != 1.0:
        rows = fraction_rows(rows, corpus.unit_names(), read_rows(corpus.unit, rows), fraction,
                             int(cfg.split_seed))
    wanted = sorted(set(languages or cfg.languages or corpus.languages))
    missing = [l for l in wanted if l not in corpus.languages]
    if missing:
        raise InputError(f"data.languages: {missing} requested but absent from {corpus.path} "
                         f"(present: {corpus.languages})")
    columns = np.array([corpus.languages.index(l) for l in wanted], np.int64)
    return CorpusPart(corpus, rows, columns, wanted)


def corpus_sampler(part: CorpusPart, cfg, batch_size: int, num_steps: int, stream=()):
    return StoreSampler(part.query(), part.positive(), part.languages, batch_size, cfg.sampling,
                        cfg.alpha, cfg.cross_pairing, cfg.language_weights, cfg.seed,
                        cfg.mono_schedule, num_steps, cfg.get("draw", "rejection"), stream)


def corpus_negatives(part: CorpusPart, cfg, sampler, mining=None) -> StoreNegatives | None:
    """The hard-negative draw of `cfg` over `part`; 'mined' needs `mining` = (the run's starting
    model, workdir, whether this process writes the cache), for a corpus prepared from the
    configured source (store_mined.py)."""
    count, source = int(cfg.hard_negatives), cfg.negative_source
    if count == 0:
        return None
    if source == "mined":
        if mining is None:
            raise InputError("data.negative_source='mined': mines the configured source "
                             "(data.format, data.dataset_dir); with data.store=<dir> or "
                             "data.sources use 'same_paragraph' or 'from_data'")
        from hybrid_jax.data.store_mined import mined_table

        mined, texts = mined_table(cfg, part, *mining)
        table = StoreNegatives(mined, np.arange(len(part.rows)), np.arange(len(part.languages)),
                               sampler, count, source)
        table.mined_texts = texts  # what a teacher model scores (store_teacher.py)
    else:
        table = StoreNegatives(part.corpus.negative, part.rows, part.columns, sampler, count,
                               source)
    if not table.has_candidates():
        raise InputError(f"data.negative_source={source!r}: no example of fold "
                         f"{cfg.train_fold!r} in {source_names(part.corpus)} has a candidate "
                         f"negative in the training languages {part.languages}")
    return table


def source_names(corpus: Store) -> str:
    """The files a corpus was prepared from (for messages), else its directory."""
    paths = [s.get("path") for s in corpus.meta.get("sources", ()) if s.get("path")]
    return ", ".join(paths) if paths else str(corpus.path)


def teacher_table(part: CorpusPart, cfg, negatives, mining):
    """The teacher scores of distillation: the corpus's (data.teacher_model = '') or a model's
    (store_teacher.py; needs the configured source, like mining)."""
    spec = str(cfg.get("teacher_model") or "")
    if not spec:
        check_scores(part, cfg)
        return CorpusScores(part)
    if mining is None:
        raise InputError("data.teacher_model: scores the configured source (data.format, "
                         "data.dataset_dir); with data.store=<dir> or data.sources prepare the "
                         "corpus from records carrying pos_scores / neg_scores")
    from hybrid_jax.data.store_teacher import model_table

    return model_table(cfg, spec, part, negatives, *mining[1:])


def check_scores(part: CorpusPart, cfg) -> None:
    """Distillation from the data's scores needs an example of the fold scored in a training
    language (data.teacher_model = '': the corpus's pos_scores / neg_scores)."""
    scored = part.corpus.meta.get("has_scores") and np.isfinite(
        np.asarray(part.corpus.positive_score[part.rows][:, part.columns])).any()
    if not scored:
        raise InputError(
            f"data.teacher_model='': no example of fold {cfg.train_fold!r} in "
            f"{source_names(part.corpus)} has teacher scores (pos_scores); set "
            f"data.teacher_model to a model spec to score the pairs with it")


class SingleCorpusPlanner:
    """step -> (assembler, plan, negative plan) of one corpus; `batch_size` pairs per step of
    which this host assembles `host_rows` (a slice of them)."""

    def __init__(self, part: CorpusPart, cfg, tokenizer, prefixes: tuple[str, str],
                 num_steps: int, batch_size: int, host_rows: slice, stream=(),
                 distill: bool = False, mining=None):
        self.sampler = corpus_sampler(part, cfg, batch_size, num_steps, stream)
        self.negatives = corpus_negatives(part, cfg, self.sampler, mining)
        scores = None
        if distill:
            scores = teacher_table(part, cfg, self.negatives, mining)
        layouts = (TokenLayout.of(tokenizer, prefixes[0]), TokenLayout.of(tokenizer, prefixes[1]))
        self.assemble = BatchAssembler(
            part, layouts, (int(cfg.query_max_length), int(cfg.passage_max_length)), host_rows,
            scores=scores)
        self.languages = part.languages

    def __call__(self, step: int):
        plan = self.sampler.plan(step)
        negatives = self.negatives.choose(plan) if self.negatives is not None else None
        return self.assemble, plan, negatives


def make_planner(cfg, tokenizer, prefixes: tuple[str, str], num_steps: int,
                 process_index: int, process_count: int, corpus: str | None = None,
                 distill: bool = False, mining=None):
    """The planner of data.sources (a mixture) or of the one corpus at `corpus` (data.store);
    `distill`: the batches carry the corpora's teacher scores; `mining`: as for
    corpus_negatives (the one corpus only)."""
    B = int(cfg.global_batch_size)
    rows = host_slice(B, process_index, process_count)
    if not cfg.get("sources"):
        part = corpus_part(open_store(corpus or cfg.store), cfg)
        return SingleCorpusPlanner(part, cfg, tokenizer, prefixes, num_steps, B, rows,
                                   distill=distill, mining=mining)
    entries = mixture.check_sources(cfg.sources)
    weights = [e["weight"] for e in entries]
    sizes = mixture.largest_remainder(weights, B) if cfg.source_mixing == "example" \
        else [B] * len(entries)
    starts = np.cumsum([0] + list(sizes))[:-1] if cfg.source_mixing == "example" \
        else [0] * len(entries)
    parts = []
    for s, (entry, size, start) in enumerate(zip(entries, sizes, starts)):
        store = open_store(entry["path"])
        check_tokenizer(store.meta, tokenizer, f"data.sources[{s}] ({entry['path']})")
        # data.languages restricts each source to those of its languages it has
        langs = [l for l in (cfg.languages or store.languages) if l in store.languages]
        if not langs:
            raise InputError(f"data.sources[{s}]: none of data.languages {list(cfg.languages)} "
                             f"in {entry['path']} (present: {store.languages})")
        part = corpus_part(store, cfg, langs)
        mine = slice(int(np.clip(rows.start - start, 0, size)),
                     int(np.clip(rows.stop - start, 0, size)))
        pre = (entry.get("query_prefix", prefixes[0]), entry.get("passage_prefix", prefixes[1]))
        planner = SingleCorpusPlanner(part, cfg, tokenizer, pre, num_steps, int(size), mine,
                                      stream=(2, s), distill=distill) if size else None
        parts.append((planner, len(part.rows), part.languages))
    return mixture.MixturePlanner(parts, weights, cfg.source_mixing, cfg.source_schedule,
                                  cfg.seed, num_steps)
