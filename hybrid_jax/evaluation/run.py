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
from typing import Any, Optional

import ml_collections
import numpy as np

from hybrid_jax.data.splits import FoldRule, load_lareqa_fold
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import per_query, plots, report, trec
from hybrid_jax.evaluation.beir_eval import evaluate_beir
from hybrid_jax.evaluation.lareqa_eval import evaluate_lareqa, trec_query_id
from hybrid_jax.evaluation.specs import LAREQA_TYPES, check_spec
from hybrid_jax.retrieval.cache import EmbeddingCache, params_fingerprint
from hybrid_jax.retrieval.encode import DEFAULT_BUCKETS, encode_cached



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


def load_dataset(spec: Any, folds: Optional[FoldRule] = None):
    """A dataset from a spec {name, type, path, fold, languages, split}; loaded datasets pass.
    A LAReQA fold other than 'all' is cut by `folds`, the training run's rule (default: the
    default `data.split_seed` / `data.split_sizes`)."""
    if hasattr(spec, "questions") or hasattr(spec, "doc_ids"):
        return spec
    spec = check_spec(spec)
    kind, path = str(spec["type"]).lower(), spec["path"]
    if kind in LAREQA_TYPES:
        return load_lareqa_fold(path, spec.get("fold") or "all", folds or FoldRule(),
                                languages=spec.get("languages") or None, name=spec.get("name"))
    from hybrid_jax.data.beir import load_beir
    return load_beir(path, split=spec.get("split") or "test", name=spec.get("name"),
                     language=spec.get("language") or "")


def _write_text(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def evaluate(model_bundle, datasets, workdir, eval_config=None, *, write: bool = True,
             folds: Optional[FoldRule] = None, cache_dir=None) -> dict:
    """Evaluate on every dataset; returns {"datasets": {name: metrics}, "scalars": {flat}}.
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

    results, scalars = {}, {}
    for spec in datasets:
        ds = load_dataset(spec, folds)
        t0 = time.time()
        kw = dict(k=int(cfg["k"]), recall_ks=tuple(cfg["recall_ks"]), ndcg_k=int(cfg["ndcg_k"]),
                  search=cfg["search"], depth=int(cfg["depth"]))
        if hasattr(ds, "questions"):
            q_emb = encode([q.text for q in ds.questions], "query", f"{ds.name} questions")
            c_emb = encode([c.text for c in ds.candidates], "passage", f"{ds.name} candidates")
            out = evaluate_lareqa(ds, q_emb, c_emb, **kw)
            q_ids = [trec_query_id(q) for q in ds.questions]
            q_langs = [q.language for q in ds.questions]
            c_ids, c_langs = [c.uid for c in ds.candidates], [c.language for c in ds.candidates]
        else:
            q_emb = encode(ds.query_texts, "query", f"{ds.name} queries")
            c_emb = encode(ds.doc_texts, "passage", f"{ds.name} corpus")
            out = evaluate_beir(ds, q_emb, c_emb, **kw)
            q_ids, q_langs = ds.query_ids, [ds.language] * len(ds.query_ids)
            c_ids, c_langs = ds.doc_ids, [ds.language] * len(ds.doc_ids)
        out.metrics.update(dataset=ds.name, model=str(model_bundle.name),
                           seconds=round(time.time() - t0, 2))
        d = pathlib.Path(workdir) / "eval" / ds.name
        if write:
            d.mkdir(parents=True, exist_ok=True)
            write_outputs(d, ds.name, out, str(model_bundle.name), cfg)
        if write and cfg["save_embeddings"]:
            np.savez(d / "embeddings.npz", query_ids=np.array(q_ids), query_languages=np.array(
                q_langs), query_vectors=q_emb, candidate_ids=np.array(c_ids),
                candidate_languages=np.array(c_langs), candidate_vectors=c_emb)
        results[ds.name] = out.metrics
        scalars.update(headline_scalars(ds.name, out.metrics, int(cfg["k"])))
        logging.info("evaluated %s in %.1fs: %s", ds.name, time.time() - t0,
                     {k: round(v, 4) for k, v in scalars.items() if k.startswith(ds.name + "/")})
    return {"datasets": results, "scalars": scalars}


def write_outputs(d: pathlib.Path, name: str, out, tag: str, cfg: dict) -> None:
    per_query.save(d / "per_query.npz", out.groups)
    trec.write_run(d / "run.trec", out.run, tag=tag)
    trec.write_qrels(d / "qrels.trec", out.qrels)
    if out.metrics["type"] == "lareqa":
        pngs = []
        if cfg["plots"]:
            pngs = [p.name for p in plots.lareqa_plots(out.metrics, d, f"map@{cfg['k']}")]
        text = report.lareqa_report(name, out.metrics, pngs)
    else:
        text = report.beir_report(name, out.metrics)
    _write_text(d / "report.md", text)
    _write_text(d / "metrics.json", json.dumps(out.metrics, indent=1, sort_keys=True))


def headline_scalars(name: str, m: dict, k: int) -> dict[str, float]:
    """A few flat numbers for training logs (TensorBoard and metrics.jsonl)."""
    out = {}
    if m["type"] == "lareqa":
        for s in ("mono", "cross", "multi"):
            for metric in (f"map@{k}", "recall@1", "mrr"):
                v = m[s]["macro"].get(metric)
                if v is not None:
                    out[f"{name}/{s}/{metric}"] = v
        if m["rank_distance"]["macro"] is not None:
            out[f"{name}/rank_distance"] = m["rank_distance"]["macro"]
    else:
        for metric, v in m["all"].items():
            if metric != "n_queries":
                out[f"{name}/{metric}"] = v
    return out
