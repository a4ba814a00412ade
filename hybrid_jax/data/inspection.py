"""What the training batches are made of: kinds, languages, truncation and hard negatives of the
first N batches (for `python -m hybrid_jax.main --mode inspect_data`)."""
from __future__ import annotations

import collections

import numpy as np

from hybrid_jax.data import pipeline


def inspect_batches(config_data, tokenizer, n: int, query_prefix: str = "query: ",
                    passage_prefix: str = "passage: ", examples=None, mining_model=None,
                    workdir=None, num_steps=None) -> dict:
    """JSON-serialisable composition of the first `n` global batches of `config_data`.
    `mining_model` and `workdir` as for pipeline.make_train_iterator (mined negatives: reads the
    run's cache, or mines without writing one); `num_steps` as for pipeline.make_sampler (the
    run's train.num_steps: data.mono_schedule='exact' fixes the mono share over them)."""
    loaded = examples is None
    examples = pipeline.load_training_examples(config_data) if loaded else examples
    sampler = pipeline.make_sampler(config_data, examples, num_steps)
    negatives = pipeline.make_negatives(config_data, sampler, loaded=loaded,
                                        mining_model=mining_model, workdir=workdir, write=False)
    langs = sampler.languages
    batches, pairs, mono_langs = [], collections.Counter(), collections.Counter()
    queries, passages = [], []
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
        for i, q, p in zip(plan.example_index, plan.query_lang, plan.passage_lang):
            pairs[f"{langs[q]}-{langs[p]}"] += 1
            queries.append(query_prefix + examples[i].queries[langs[q]])
            passages.append(passage_prefix + examples[i].passages[langs[p]])
    q_len, p_len = tokenizer.lengths(queries), tokenizer.lengths(passages)
    n_mono = sum(b["kind"] == "mono" for b in batches)
    hard = None if negatives is None else _negatives_summary(
        negatives, sum(pairs.values()), drawn, short, rejected)
    return {
        "batches": len(batches),
        "global_batch_size": sampler.batch_size,
        "examples_in_fold": len(examples),
        "train_fold": str(config_data.train_fold),
        "languages": langs,
        "sampling": str(config_data.sampling),
        "alpha": sampler.alpha,
        "fraction_mono": n_mono / max(len(batches), 1),
        "mono_batches_per_language": dict(sorted(mono_langs.items())),
        "pairs_per_language_pair": dict(sorted(pairs.items())),
        "excluded_too_small": sampler.excluded,
        "truncated_fraction": {
            "query": float(np.mean(q_len > config_data.query_max_length)) if len(q_len) else 0.0,
            "passage": float(np.mean(p_len > config_data.passage_max_length)) if len(p_len) else 0.0},
        "token_length_p95": {
            "query": int(np.percentile(q_len, 95)) if len(q_len) else 0,
            "passage": int(np.percentile(p_len, 95)) if len(p_len) else 0},
        "hard_negatives": hard,
        "per_batch": batches,
    }


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
