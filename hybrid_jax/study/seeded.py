"""The second edition's analysis (docs/tradeoff_protocol.md is the plan it follows), as data.

Input: the finished runs of the grid (runs.Run), each with eval/<dataset>/ and
eval_steps/step_<n>/eval/<dataset>/ (metrics.json, per_query.npz). Output, per benchmark:

* families: the registered comparisons (primary, S1-S3), one row per high-resource language:
  the two-level bootstrap (statistics/seeds.py: seeds, then question clusters) estimate, 95%
  interval, SE, p, TOST at +-delta, MDE, and the verdict after Holm within the family;
* descriptive: multi mAP and rank distance, macro rows, uncorrected;
* curves: the primary and cross comparisons (macro over the high-resource languages and per
  language) at every evaluated step;
* sweep: per alpha, the mean and spread over seeds of the macro scores;
* design: the primary endpoint's variance components and the seeds / questions a 0.010
  half-width would take.
Nothing here writes files.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from hybrid_jax.evaluation.statistics import design as stat_design
from hybrid_jax.evaluation.statistics import seeds as seed_stats
from hybrid_jax.evaluation.statistics import tables
from hybrid_jax.study.runs import ZERO_SHOT, Run, by_condition, language_value, summarize

ALPHA = 0.05
TARGET_HALF_WIDTH = 0.010


# ----------------------------------------------------------------------------- one comparison


def compare(a: list[Run], b: list[Run], dataset: str, setting: str, langs: Sequence[str],
            key: str, *, delta: float, n_resamples: int, seed: int = 0,
            step: Optional[int] = None) -> Optional[dict]:
    """A - B on `setting` over question languages `langs` (a macro over views when there are
    several): seed_stats.SeedBootstrap.summary plus what was compared."""
    ta = [r.tables(dataset, key, step) for r in a]
    tb = [r.tables(dataset, key, step) for r in b]
    cells = tables.setting_arrays(ta, tb, setting, langs)
    if cells is None:
        return None
    A, B, clusters, strata = cells
    boot = seed_stats.two_level_bootstrap(A, B, clusters=clusters, strata=strata,
                                          n_resamples=n_resamples, seed=seed)
    row = boot.summary(delta, ALPHA)
    row.update(a=a[0].condition, b=b[0].condition, setting=setting, metric=key,
               scope=langs[0] if len(langs) == 1 else "macro", languages=list(langs),
               mean_a=float(A.mean()) if strata is None else None,
               mean_b=float(B.mean()) if strata is None else None)
    return row


# ----------------------------------------------------------------------------- a benchmark


def _per_language(a, b, dataset, setting, langs, key, **kw) -> list[dict]:
    return [r for x in langs if (r := compare(a, b, dataset, setting, [x], key, **kw))]


def families(groups: dict, dataset: str, hr: Sequence[str], key: str, primary: str,
             first: str, **kw) -> dict[str, list[dict]]:
    """The registered families on one benchmark, verdicts added (Holm within each family).
    `first`: the name of the hybrid - X-X-mono family here ('primary' on XQuAD-R, 'S1' on
    MLQA-R)."""
    out: dict[str, list[dict]] = {}
    hyb = groups.get(primary)
    if hyb and "mono" in groups:
        out[first] = _per_language(hyb, groups["mono"], dataset, "mono", hr, key, **kw)
    if hyb and "cross" in groups:
        out["S2"] = _per_language(hyb, groups["cross"], dataset, "cross", hr, key, **kw)
    if ZERO_SHOT in groups:
        out["S3"] = [r for c in ("mono", "cross", primary) if c in groups
                     for r in _per_language(groups[c], groups[ZERO_SHOT], dataset, "mono", hr,
                                            key, **kw)]
    for name, rows in out.items():
        if rows:
            seed_stats.add_verdicts(rows, alpha=ALPHA)
        for r in rows:
            r["family"] = name
    return out


def descriptive(groups: dict, dataset: str, hr: Sequence[str], languages: Sequence[str],
                key: str, primary: str, **kw) -> list[dict]:
    """Macro rows outside every family: hybrid against each reference on every setting and on
    rank distance (lower is better), over the high-resource and over all languages."""
    rows = []
    hyb = groups.get(primary)
    for ref in ("mono", "cross"):
        if not hyb or ref not in groups:
            continue
        for setting, metric in (("mono", key), ("cross", key), ("multi", key),
                                ("multi", "rank_distance")):
            for scope, langs in (("macro_hr", hr), ("macro_all", languages)):
                r = compare(hyb, groups[ref], dataset, setting, list(langs), metric, **kw)
                if r:
                    r["scope"] = scope
                    r["verdict"] = _uncorrected(r, higher_is_better=metric != "rank_distance")
                    rows.append(r)
    return rows


def _uncorrected(row: dict, higher_is_better: bool) -> str:
    if row["p"] >= ALPHA:
        return "no significant difference (uncorrected)"
    better = (row["diff"] > 0) == higher_is_better
    return f"{'better' if better else 'worse'} at uncorrected p < {ALPHA}"


def curves(groups: dict, dataset: str, hr: Sequence[str], key: str, primary: str,
           **kw) -> list[dict]:
    """hybrid - X-X-mono (mono) and hybrid - X-Y (cross) at every step all their runs evaluated:
    the macro over the high-resource languages and each language (uncorrected, descriptive)."""
    rows = []
    hyb = groups.get(primary)
    for ref, setting in (("mono", "mono"), ("cross", "cross")):
        if not hyb or ref not in groups:
            continue
        both = hyb + groups[ref]
        steps = sorted(set.intersection(*[set(r.curve_steps(dataset)) for r in both]))
        for step in steps:
            for langs, scope in [(list(hr), "macro")] + [([x], x) for x in hr]:
                r = compare(hyb, groups[ref], dataset, setting, langs, key, step=step, **kw)
                if r:
                    rows.append(dict(r, step=step, scope=scope))
    return rows


def sweep(groups: dict, dataset: str, hr: Sequence[str], key: str,
          seeds: Optional[Sequence[int]] = None) -> list[dict]:
    """Per alpha (X-X-mono = 1, X-Y = 0, hybrid-a<alpha>), over the runs of `seeds`: mean and
    sample std over seeds of the macro mono / cross / multi `key` (over the high-resource
    languages) and of the macro rank distance."""
    alphas = {"mono": 1.0, "cross": 0.0}
    rows = []
    for cond, runs in groups.items():
        a = alphas.get(cond, runs[0].alpha)
        runs = [r for r in runs if seeds is None or r.seed in seeds]
        if a is None or not runs:
            continue
        per_seed = [_macros(r.metrics(dataset), hr, key) for r in runs]
        row = {"condition": cond, "alpha": float(a), "n_seeds": len(runs)}
        for m in per_seed[0]:
            v = np.array([s[m] for s in per_seed], np.float64)
            row[m] = float(v.mean())
            row[f"{m}_std"] = float(v.std(ddof=1)) if len(v) > 1 else None
        rows.append(row)
    return sorted(rows, key=lambda r: r["alpha"])


def _macros(m: dict, hr: Sequence[str], key: str) -> dict:
    out = {s: float(np.mean([language_value(m, s, x, key) for x in hr]))
           for s in ("mono", "cross", "multi")}
    out["rank_distance"] = float(m["rank_distance"]["macro"])
    return out


def design(groups: dict, dataset: str, hr: Sequence[str], key: str, primary: str) -> list[dict]:
    """The primary comparison's variance components per language and what a 95% half-width of
    TARGET_HALF_WIDTH would take (statistics/design.py)."""
    out = []
    hyb, mono = groups.get(primary), groups.get("mono")
    if not hyb or not mono:
        return out
    ta = [r.tables(dataset, key) for r in hyb]
    tb = [r.tables(dataset, key) for r in mono]
    for x in hr:
        cells = tables.aligned_arrays(ta, tb, tables.setting_views("mono", [x], sorted(ta[0])))
        if cells is None:
            continue
        A, B, clusters, _ = cells
        vc = stat_design.variance_components(A, B, clusters=clusters)
        out.append({"language": x, **vc.as_dict(),
                    "for_half_width": stat_design.design_for_half_width(vc, TARGET_HALF_WIDTH)})
    return out


# ----------------------------------------------------------------------------- the whole grid

# The summary table's columns: name -> (setting, metric).
SUMMARY_METRICS = {f"{s} {m}": (s, m) for s, m in (
    ("mono", "map@20"), ("cross", "map@20"), ("multi", "map@20"), ("mono", "recall@1"),
    ("cross", "recall@1"), ("multi", "recall@10"))} | {"rank_distance": ("rank_distance", None)}


def analyse(runs: Sequence[Run], *, benchmarks: Sequence[str], high_resource: Sequence[str],
            primary: str = "hybrid-a0.5", k: int = 20, delta: float = 0.010,
            n_resamples: int = 10_000, bootstrap_seed: int = 0,
            sweep_seeds: Optional[Sequence[int]] = None) -> dict:
    """Everything the report shows, per benchmark (the first is the primary one: its hybrid -
    X-X-mono family is 'primary', the others' 'S1'), plus the alpha sweep on the first."""
    key = f"map@{k}"
    kw = dict(delta=delta, n_resamples=n_resamples, seed=bootstrap_seed)
    out = {"key": key, "delta": delta, "primary": primary, "alpha": ALPHA,
           "n_resamples": n_resamples, "benchmarks": {}}
    for i, ds in enumerate(benchmarks):
        groups = {c: [r for r in rs if r.has(ds)] for c, rs in by_condition(runs).items()}
        groups = {c: rs for c, rs in groups.items() if rs}
        if not groups:
            continue
        languages = list(next(iter(groups.values()))[0].metrics(ds)["languages"])
        hr = [x for x in high_resource if x in languages]
        out["benchmarks"][ds] = {
            "languages": languages, "high_resource": hr,
            "runs": {c: [r.name for r in rs] for c, rs in groups.items()},
            "summary": summarize(groups, ds, languages, hr, SUMMARY_METRICS, None),
            "families": families(groups, ds, hr, key, primary, "primary" if i == 0 else "S1",
                                 **kw),
            "descriptive": descriptive(groups, ds, hr, languages, key, primary, **kw),
            "curves": curves(groups, ds, hr, key, primary, **kw),
            "design": design(groups, ds, hr, key, primary)}
    if benchmarks and benchmarks[0] in out["benchmarks"]:
        b = out["benchmarks"][benchmarks[0]]
        groups = {c: [r for r in rs if r.has(benchmarks[0])]
                  for c, rs in by_condition(runs).items()}
        out["sweep"] = sweep({c: rs for c, rs in groups.items() if rs}, benchmarks[0],
                             b["high_resource"], key, sweep_seeds)
    return out
