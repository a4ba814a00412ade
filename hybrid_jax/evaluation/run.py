"""Evaluation entry: encode, search, score, and write everything under <workdir>/eval/<dataset>/.

    evaluate(model_bundle, datasets, workdir, eval_config) -> dict

model_bundle: any object with `.name` (str, part of the embedding-cache key), `.tokenizer`,
`.params`, `.apply_fn(role)` and `.prefix(role)` for role "query" / "passage" (towers may be
untied: two apply functions over one params pytree).

Files per dataset: metrics.json, report.md, per_query.npz (for `python -m hybrid_jax.compare`),
run.trec, qrels.trec, PNG plots (LAReQA sets) and embeddings.npz when eval.save_embeddings.
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from typing import Optional

import ml_collections
import numpy as np

from hybrid_jax.data.splits import FoldRule
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import per_query, trec
from hybrid_jax.evaluation.datasets import DatasetType, load_dataset, type_of
from hybrid_jax.evaluation.metric_ranges import check_metrics
from hybrid_jax.retrieval.cache import EmbeddingCache, params_fingerprint
from hybrid_jax.retrieval.encode import DEFAULT_BUCKETS, NonFiniteEmbeddingError, encode_cached



def default_config() -> ml_collections.ConfigDict:
    """`config.eval` fields (see docs/evaluation.md)."""
    return ml_collections.ConfigDict(dict(
        # Dataset specs {name, type, path, fold, languages, split}, e.g. {'name': 'xquad-r-test',
        # 'type': 'xquad-r', 'path': '../shared/data/xquad-r', 'fold': 'test'}; empty: no eval.
        datasets=(),
        k=20,                    # mAP@k
        recall_ks=(1, 10, 100),
        ndcg_k=10,
        search="auto",           # auto | exact | scann
        depth=100,               # candidates retrieved per query
        batch_size=64,           # rows per batch when token_budget is 0
        token_budget=0,          # >0: padded tokens per encoding batch (rows = budget // length)
        max_length=128,          # tokens per encoded text
        compute_dtype="",        # '' = the model's; 'bfloat16': cast once for inference only
        buckets=DEFAULT_BUCKETS,
        save_embeddings=False,
        cache=True,              # reuse embeddings of unchanged params and texts
        plots=True,
        progress=False,
        every_steps=0,           # during training; 0: evaluate at the end only
        every_datasets=(),       # names of the datasets evaluated every_steps (): all of them
    ))


def resolve_config(eval_config=None) -> dict:
    """`eval_config` (ConfigDict, dict or None) over the defaults, as a plain dict; an unknown
    key is an error rather than silently ignored."""
    cfg = default_config().to_dict()
    given = {} if eval_config is None else (
        eval_config.to_dict() if hasattr(eval_config, "to_dict") else dict(eval_config))
    unknown = sorted(set(given) - set(cfg))
    if unknown:
        raise InputError(f"eval: no such key(s) {unknown} (known: {sorted(cfg)})")
    cfg.update(given)
    if cfg["search"] not in ("auto", "exact", "scann"):
        raise InputError(f"eval.search must be 'auto', 'exact' or 'scann' (got {cfg['search']!r})")
    if cfg["compute_dtype"] not in ("", "float32", "bfloat16"):
        raise InputError("eval.compute_dtype must be '', 'float32' or 'bfloat16' "
                         f"(got {cfg['compute_dtype']!r})")
    return cfg


def _write_text(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def evaluate(model_bundle, datasets, workdir, eval_config=None, *, write: bool = True,
             folds: Optional[FoldRule] = None, cache_dir=None) -> dict:
    """Evaluate on every dataset; returns {"datasets": {name: metrics}, "scalars": {flat},
    "per_query": {name: per-query tables (per_query.py)}}.
    `write=False` computes the same results but writes nothing under `workdir` (no reports, no
    embedding cache): the other processes of a multi-host run, whose process 0 writes.
    `folds`: the training run's article folds (see load_dataset). `cache_dir`: where the
    embedding cache lives (default `workdir`)."""
    cfg = resolve_config(eval_config)
    datasets = list(datasets if datasets is not None else cfg["datasets"])
    if not datasets:
        raise InputError("eval.datasets is empty: nothing to evaluate")
    if cfg["compute_dtype"]:
        model_bundle = model_bundle.with_compute_dtype(str(cfg["compute_dtype"]))
    cache = EmbeddingCache(cache_dir or workdir) if cfg["cache"] and write else None
    fingerprint = params_fingerprint(model_bundle.params) if cache else None
    enc = dict(tokenizer=model_bundle.tokenizer, params=model_bundle.params,
               max_length=int(cfg["max_length"]), buckets=tuple(cfg["buckets"]),
               batch_size=int(cfg["batch_size"]), token_budget=int(cfg["token_budget"]),
               progress=bool(cfg["progress"]))

    def encode(texts, role, desc):
        return encode_cached(texts, cache=cache, model_id=str(model_bundle.name),
                             fingerprint=fingerprint, apply_fn=model_bundle.apply_fn(role),
                             prefix=model_bundle.prefix(role), desc=desc, **enc)

    results, scalars, tables = {}, {}, {}
    for spec in datasets:
        ds = load_dataset(spec, folds)
        kind = type_of(ds)
        t0 = time.time()
        try:
            done = kind.evaluate(ds, encode, k=int(cfg["k"]), recall_ks=tuple(cfg["recall_ks"]),
                                 ndcg_k=int(cfg["ndcg_k"]), search=cfg["search"],
                                 depth=int(cfg["depth"]))
        except NonFiniteEmbeddingError as e:
            raise NonFiniteEmbeddingError(f"evaluation of {ds.name}: {e}") from None
        out = done.out
        check_metrics(ds.name, out.metrics)
        out.metrics.update(dataset=ds.name, model=str(model_bundle.name),
                           seconds=round(time.time() - t0, 2))
        d = pathlib.Path(workdir) / "eval" / ds.name
        if write:
            d.mkdir(parents=True, exist_ok=True)
            write_outputs(d, ds.name, out, str(model_bundle.name), cfg, kind)
        if write and cfg["save_embeddings"]:
            np.savez(d / "embeddings.npz", query_ids=np.array(done.query_ids),
                     query_languages=np.array(done.query_languages),
                     query_vectors=done.query_vectors, candidate_ids=np.array(done.candidate_ids),
                     candidate_languages=np.array(done.candidate_languages),
                     candidate_vectors=done.candidate_vectors)
        results[ds.name] = out.metrics
        tables[ds.name] = out.groups
        scalars.update(kind.scalars(ds.name, out.metrics, int(cfg["k"])))
        logging.info("evaluated %s in %.1fs: %s", ds.name, time.time() - t0,
                     {k: round(v, 4) for k, v in scalars.items() if k.startswith(ds.name + "/")})
    return {"datasets": results, "scalars": scalars, "per_query": tables}


def write_outputs(d: pathlib.Path, name: str, out, tag: str, cfg: dict,
                  kind: DatasetType) -> None:
    per_query.save(d / "per_query.npz", out.groups)
    trec.write_run(d / "run.trec", out.run, tag=tag)
    trec.write_qrels(d / "qrels.trec", out.qrels)
    _write_text(d / "report.md", kind.report(d, name, out.metrics, cfg))
    _write_text(d / "metrics.json", json.dumps(out.metrics, indent=1, sort_keys=True))
