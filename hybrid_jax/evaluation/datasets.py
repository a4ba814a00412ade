"""Evaluation dataset types by name (the `type` of a `config.eval.datasets` entry).

    {name, type, path, <the type's own keys>}
name: the eval/<name>/ folder; type: a registered dataset type; path: where its files are.
Built in: LAReQA sets ('lareqa', 'xquad-r', 'mlqa-r', ...: keys fold, languages) and BEIR /
MIRACL folders ('beir', 'miracl': keys split, language). A type says how to load a spec, how to
encode and score a loaded dataset, its report and its headline numbers; a new type is one module
that calls `DATASET_TYPES.register(...)` on a DatasetType. A misspelt key is an error rather than
ignored (it would, say, evaluate the whole set instead of its test fold).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from hybrid_jax.data.beir import load_beir
from hybrid_jax.data.splits import FoldRule, load_lareqa_fold
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import plots, report
from hybrid_jax.evaluation.beir_eval import evaluate_beir
from hybrid_jax.evaluation.lareqa_eval import EvalOutput, evaluate_lareqa, trec_query_id
from hybrid_jax.registry import Registry

DATASET_TYPES = Registry("eval.datasets type")
COMMON_KEYS = ("name", "type", "path")
FOLDS = ("train", "dev", "test", "all")


@dataclasses.dataclass
class Evaluated:
    """One dataset's scores plus what eval.save_embeddings writes."""
    out: EvalOutput
    query_vectors: np.ndarray
    candidate_vectors: np.ndarray
    query_ids: list
    query_languages: list
    candidate_ids: list
    candidate_languages: list


@dataclasses.dataclass(frozen=True)
class DatasetType:
    keys: tuple                        # spec keys besides name, type and path
    load: Callable                     # (spec dict, FoldRule or None) -> dataset
    accepts: Callable                  # dataset -> whether it is of this type (loaded ones pass)
    evaluate: Callable                 # (dataset, encode(texts, role, desc), **score kw) -> Evaluated
    report: Callable                   # (directory, name, metrics, eval cfg) -> report.md text
    scalars: Callable                  # (name, metrics, k) -> {flat name: value} for logs
    check: Optional[Callable] = None   # (spec, where) -> None: the type's own value checks


def check_spec(spec) -> dict:
    """The spec as a plain dict; InputError naming the entry and the problem."""
    spec = spec.to_dict() if hasattr(spec, "to_dict") else spec
    if not isinstance(spec, dict):
        raise InputError(f"eval.datasets: {spec!r} is not a dataset spec (an object with name, "
                         f"type and path)")
    where = f"eval.datasets entry {spec.get('name', spec.get('path', '?'))!r}"
    missing = [k for k in COMMON_KEYS if not spec.get(k)]
    if missing:
        raise InputError(f"{where}: no {', '.join(repr(k) for k in missing)}")
    kind = DATASET_TYPES.get(str(spec["type"]).lower(), f"{where}: type")
    unknown = sorted(set(spec) - set(COMMON_KEYS + kind.keys))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown} (known for type "
                         f"{spec['type']!r}: {', '.join(COMMON_KEYS + kind.keys)})")
    if kind.check:
        kind.check(spec, where)
    return spec


def load_dataset(spec: Any, folds: Optional[FoldRule] = None):
    """A dataset from a spec; loaded datasets pass. A LAReQA fold other than 'all' is cut by
    `folds`, the training run's rule (default: the default data.split_seed / split_sizes)."""
    if any(t.accepts(spec) for t in map(DATASET_TYPES.get, DATASET_TYPES.names())):
        return spec
    spec = check_spec(spec)
    return DATASET_TYPES.get(str(spec["type"]).lower()).load(spec, folds)


def type_of(dataset) -> DatasetType:
    return next(t for t in map(DATASET_TYPES.get, DATASET_TYPES.names()) if t.accepts(dataset))


# -- LAReQA sets ----------------------------------------------------------------------------------

def _check_lareqa(spec: dict, where: str) -> None:
    if (spec.get("fold") or "all") not in FOLDS:
        raise InputError(f"{where}: fold {spec['fold']!r} is not one of {FOLDS}")


def _load_lareqa(spec: dict, folds: Optional[FoldRule]):
    return load_lareqa_fold(spec["path"], spec.get("fold") or "all", folds or FoldRule(),
                            languages=spec.get("languages") or None, name=spec.get("name"))


def _evaluate_lareqa(ds, encode, **kw) -> Evaluated:
    q_emb = encode([q.text for q in ds.questions], "query", f"{ds.name} questions")
    c_emb = encode([c.text for c in ds.candidates], "passage", f"{ds.name} candidates")
    return Evaluated(evaluate_lareqa(ds, q_emb, c_emb, **kw), q_emb, c_emb,
                     [trec_query_id(q) for q in ds.questions],
                     [q.language for q in ds.questions],
                     [c.uid for c in ds.candidates], [c.language for c in ds.candidates])


def _lareqa_report(d, name: str, metrics: dict, cfg: dict) -> str:
    pngs = []
    if cfg["plots"]:
        pngs = [p.name for p in plots.lareqa_plots(metrics, d, f"map@{cfg['k']}")]
    return report.lareqa_report(name, metrics, pngs)


def _lareqa_scalars(name: str, m: dict, k: int) -> dict[str, float]:
    out = {}
    for s in ("mono", "cross", "multi"):
        for metric in (f"map@{k}", "recall@1", "mrr"):
            v = m[s]["macro"].get(metric)
            if v is not None:
                out[f"{name}/{s}/{metric}"] = v
    if m["rank_distance"]["macro"] is not None:
        out[f"{name}/rank_distance"] = m["rank_distance"]["macro"]
    return out


DATASET_TYPES.register("lareqa", "xquad", "xquad-r", "xquad_r", "mlqa-r", "mlqa_r")(DatasetType(
    keys=("fold", "languages"), load=_load_lareqa, accepts=lambda d: hasattr(d, "questions"),
    evaluate=_evaluate_lareqa, report=_lareqa_report, scalars=_lareqa_scalars,
    check=_check_lareqa))


# -- BEIR / MIRACL folders ------------------------------------------------------------------------

def _load_beir(spec: dict, folds: Optional[FoldRule]):
    return load_beir(spec["path"], split=spec.get("split") or "test", name=spec.get("name"),
                     language=spec.get("language") or "")


def _evaluate_beir(ds, encode, **kw) -> Evaluated:
    q_emb = encode(ds.query_texts, "query", f"{ds.name} queries")
    c_emb = encode(ds.doc_texts, "passage", f"{ds.name} corpus")
    return Evaluated(evaluate_beir(ds, q_emb, c_emb, **kw), q_emb, c_emb,
                     ds.query_ids, [ds.language] * len(ds.query_ids),
                     ds.doc_ids, [ds.language] * len(ds.doc_ids))


def _beir_scalars(name: str, m: dict, k: int) -> dict[str, float]:
    return {f"{name}/{metric}": v for metric, v in m["all"].items() if metric != "n_queries"}


DATASET_TYPES.register("beir", "miracl")(DatasetType(
    keys=("split", "language"), load=_load_beir, accepts=lambda d: hasattr(d, "doc_ids"),
    evaluate=_evaluate_beir, report=lambda d, name, m, cfg: report.beir_report(name, m),
    scalars=_beir_scalars))
