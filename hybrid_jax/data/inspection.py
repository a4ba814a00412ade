"""What the training batches are made of: kinds, languages, truncation and hard negatives of the
first N batches (for `python -m hybrid_jax.main --mode inspect_data`)."""
from __future__ import annotations

import collections

import numpy as np

from hybrid_jax.data import pipeline
from hybrid_jax.errors import InputError


def inspect_batches(config_data, tokenizer, n: int, query_prefix: str = "query: ",
                    passage_prefix: str = "passage: ", examples=None, mining_model=None,
                    workdir=None, num_steps=None, tokenizer_spec: str | None = None) -> dict:
    """JSON-serialisable composition of the first `n` global batches of `config_data`, drawn by
    the training batches' own source (pipeline.make_batch_source: a prepared corpus, prepared on
    first use in `workdir`'s cache, or `examples`). `mining_model` and `workdir` as for
    pipeline.make_train_iterator (mined negatives: reads the run's cache, or mines without
    writing one); `num_steps` the run's train.num_steps (data.mono_schedule='exact' fixes the
    mono share over them; default `n`)."""
    source = pipeline.make_batch_source(
        config_data, tokenizer, (query_prefix, passage_prefix),
        num_steps=int(num_steps if num_steps is not None else n), examples=examples,
        mining_model=mining_model, workdir=workdir, tokenizer_spec=tokenizer_spec,
        write_caches=False)
    parts = _Parts(source, tokenizer, (query_prefix, passage_prefix))
    sampler, negatives = parts.sampler, parts.negatives
    langs = sampler.languages
    batches, pairs, mono_langs = [], collections.Counter(), collections.Counter()
    q_len, p_len = [], []
    drawn = rejected = short = 0
    for step in range(int(n)):
        plan = sampler.plan(step)
        if negatives is not None:
            chosen = negatives.choose(plan)
            drawn += int(chosen.valid.sum())
            rejected += chosen.rejected
            short += int((chosen.valid.sum(axis=1) < negatives.count).sum())
        kind = "mono" if plan.is_mono else "cross"
        batches.append({"step": step, "kind": kind,
                        "query_languages": sorted({langs[l] for l in plan.query_lang}),
                        "passage_languages": sorted({langs[l] for l in plan.passage_lang})})
        if plan.is_mono:
            mono_langs[langs[plan.query_lang[0]]] += 1
        for q, p in zip(plan.query_lang, plan.passage_lang):
            pairs[f"{langs[q]}-{langs[p]}"] += 1
        lengths = parts.token_lengths(plan)
        q_len.append(lengths[0])
        p_len.append(lengths[1])
    n_mono = sum(b["kind"] == "mono" for b in batches)
    hard = None if negatives is None else _negatives_summary(
        negatives, sum(pairs.values()), drawn, short, rejected)
    return {
        "batches": len(batches),
        "global_batch_size": sampler.batch_size,
        "examples_in_fold": parts.examples_in_fold,
        "train_fold": str(config_data.train_fold),
        "languages": langs,
        "sampling": str(config_data.sampling),
        "alpha": sampler.alpha,
        "fraction_mono": n_mono / max(len(batches), 1),
        "mono_batches_per_language": dict(sorted(mono_langs.items())),
        "pairs_per_language_pair": dict(sorted(pairs.items())),
        "excluded_too_small": sampler.excluded,
        **_lengths_summary(q_len, p_len, config_data),
        "hard_negatives": hard,
        "per_batch": batches,
    }


def _lengths_summary(q_len: list, p_len: list, cfg) -> dict:
    """Truncation rates and 95th percentiles of the per-batch token lengths."""
    q = np.concatenate(q_len) if q_len else np.zeros(0, np.int64)
    p = np.concatenate(p_len) if p_len else np.zeros(0, np.int64)
    return {
        "truncated_fraction": {
            "query": float(np.mean(q > cfg.query_max_length)) if len(q) else 0.0,
            "passage": float(np.mean(p > cfg.passage_max_length)) if len(p) else 0.0},
        "token_length_p95": {
            "query": int(np.percentile(q, 95)) if len(q) else 0,
            "passage": int(np.percentile(p, 95)) if len(p) else 0}}


class _Parts:
    """What inspection reads of a batch source: its sampler, negatives, fold size, and the token
    lengths (specials included) of a plan's queries and positives, uncut."""

    def __init__(self, source, tokenizer, prefixes):
        self.tokenizer, self.prefixes = tokenizer, prefixes
        if hasattr(source, "sampler"):  # examples_path.ExampleBatches
            self.sampler, self.negatives = source.sampler, source.negatives
            self.examples, self.examples_in_fold = source.examples, len(source.examples)
            return
        planner = source.planner
        if not hasattr(planner, "sampler"):
            raise InputError("inspect_data: data.sources (a mixture) is not summarised; inspect "
                             "each source with data.store=<its directory>")
        self.sampler, self.negatives = planner.sampler, planner.negatives
        self.examples, self.part = None, planner.assemble.part
        self.examples_in_fold = len(self.part.rows)
        self.prefix_ids = [len(layout.prefix) for layout in planner.assemble.layouts]

    def token_lengths(self, plan) -> tuple[np.ndarray, np.ndarray]:
        idx, q, p = plan.example_index, plan.query_lang, plan.passage_lang
        if self.examples is not None:
            langs, (qp, pp) = self.sampler.languages, self.prefixes
            return (self.tokenizer.lengths([qp + self.examples[i].queries[langs[l]]
                                            for i, l in zip(idx, q)]),
                    self.tokenizer.lengths([pp + self.examples[i].passages[langs[l]]
                                            for i, l in zip(idx, p)]))
        c, rows, cols = self.part.corpus, self.part.rows[idx], self.part.columns
        offsets = c.offsets

        def length(ids, prefix):  # [CLS] + prefix + text + [SEP]
            ids = np.asarray(ids, np.int64)
            return np.asarray(offsets[ids + 1] - offsets[ids], np.int64) + prefix + 2
        return (length(c.query[rows, cols[q]], self.prefix_ids[0]),
                length(c.positive[rows, cols[p]], self.prefix_ids[1]))


def _negatives_summary(negatives, n_pairs: int, drawn: int, short: int, rejected: int) -> dict:
    """How the hard negatives of the inspected batches were filled."""
    return {"per_pair": negatives.count, "source": negatives.source,
            "from_source": {negatives.source: drawn},
            "padded": n_pairs * negatives.count - drawn,
            "pairs_with_fewer": short, "pairs": n_pairs,
            "rejected_in_batch_footprint": rejected,
            "candidates": negatives.stats["candidates"],
            "rejected_own_positive": negatives.stats["rejected_own_positive"]}


def format_inspection(info: dict, max_rows: int = 20) -> str:
    lines = [
        f"{info['batches']} batches of {info['global_batch_size']} from fold "
        f"{info['train_fold']!r} ({info['examples_in_fold']} examples), sampling "
        f"{info['sampling']} (alpha {info['alpha']:.2f}): {info['fraction_mono']:.1%} mono",
        f"languages: {' '.join(info['languages'])}",
        "mono batches per language: " + (", ".join(
            f"{k} {v}" for k, v in info["mono_batches_per_language"].items()) or "none"),
        "truncated: queries {query:.1%}, passages {passage:.1%}".format(**info["truncated_fraction"])
        + "  (95th percentile tokens: queries {query}, passages {passage})".format(
            **info["token_length_p95"]),
    ]
    excluded = {k: v for k, v in info["excluded_too_small"].items() if v}
    if excluded:
        lines.append(f"too few distinct positives for one batch (not sampled): {excluded}")
    hard = info.get("hard_negatives")
    if hard:
        lines.append(
            f"hard negatives: {hard['per_pair']} per pair from {hard['source']!r}: "
            f"{sum(hard['from_source'].values())} drawn, {hard['padded']} padded; "
            f"{hard['pairs_with_fewer']} of {hard['pairs']} pairs had fewer than "
            f"{hard['per_pair']}; {hard['rejected_in_batch_footprint']} candidates rejected as "
            f"the positive of a query in the batch ({hard['rejected_own_positive']} of the "
            f"{hard['candidates']} candidates in the fold are the example's own positive)")
    lines.append("pairs per query-passage language pair:")
    pairs = sorted(info["pairs_per_language_pair"].items(), key=lambda kv: (-kv[1], kv[0]))
    lines += [f"  {k:>8} {v}" for k, v in pairs]
    lines.append("first batches:")
    for b in info["per_batch"][:max_rows]:
        lines.append(f"  step {b['step']:>4} {b['kind']:>5}  q: {','.join(b['query_languages'])}"
                     f"  p: {','.join(b['passage_languages'])}")
    return "\n".join(lines)
