"""From per-query tables (evaluation/per_query.py) to paired arrays: the one place where the
compare CLI and both editions of the study pick views, align queries across runs and choose
strata, so they always test the same thing the same way."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from hybrid_jax.evaluation import per_query
from hybrid_jax.evaluation.statistics import paired


def per_question_scores(groups: dict, metric: str) -> dict[str, dict]:
    """view -> {qid: (value, cluster, lang)} for the views holding `metric`."""
    out = {}
    for view, t in per_query.views(groups).items():
        if metric in t:
            cl = t.get("cluster", t["qid"])
            lang = t.get("lang", np.array([""] * len(t["qid"])))
            out[view] = {q: (v, c, lg) for q, v, c, lg in zip(t["qid"], t[metric], cl, lang)}
    return out


def language_views(lang: str, setting: str, views: Sequence[str]) -> list[str]:
    """The views of question language `lang` in `setting`: 'mono' -> [mono/lang] (if present),
    'cross' -> every cross/lang->Y."""
    if setting == "mono":
        return [f"mono/{lang}"] if f"mono/{lang}" in views else []
    if setting == "cross":
        return [v for v in views if v.startswith(f"cross/{lang}->")]
    raise ValueError(f"setting {setting!r}: expected 'mono' or 'cross'")


def aligned_cells(runs_a, runs_b, views: Sequence[str]):
    """The (view, query) cells of `views` finite in every run of both sides (per_question_scores
    tables), sorted: (a [runs_a x cells], b, clusters, views, query languages) as lists, or None
    when there is no such cell."""
    keys = None
    for t in list(runs_a) + list(runs_b):
        ks = {(v, q) for v in views for q, val in t.get(v, {}).items() if np.isfinite(val[0])}
        keys = ks if keys is None else keys & ks
    keys = sorted(keys or ())
    if not keys:
        return None
    ref = runs_a[0]
    a = [[t[v][q][0] for v, q in keys] for t in runs_a]
    b = [[t[v][q][0] for v, q in keys] for t in runs_b]
    return (a, b, [ref[v][q][1] for v, q in keys], [v for v, _ in keys],
            [ref[v][q][2] for v, q in keys])


def paired_row(runs_a, runs_b, views: list[str], stratify: str | None, **kw):
    """paired.compare_runs(...).as_dict() over the queries of `views` present (finite) in every run
    of both sides (per_question_scores tables), or None when none is. stratify: None, 'view' (macro
    over views) or 'lang' (macro over query languages); kw goes to compare_runs."""
    cells = aligned_cells(runs_a, runs_b, views)
    if cells is None:
        return None
    a, b, clusters, cell_views, langs = cells
    strata = {"view": cell_views, "lang": langs}[stratify] if stratify else None
    return paired.compare_runs(a, b, clusters=clusters, strata=strata, **kw).as_dict()


def setting_views(setting: str, langs: Sequence[str], views: Sequence[str]) -> list[str]:
    """The views of `setting` ('mono', 'cross' or 'multi') for question languages `langs`."""
    if setting == "multi":
        return [f"multi/{x}" for x in langs if f"multi/{x}" in views]
    return [v for x in langs for v in language_views(x, setting, views)]


def aligned_arrays(runs_a, runs_b, views: Sequence[str]):
    """(A [runs_a, Q], B [runs_b, Q], clusters, view of each column) over aligned_cells; None
    when there is no such cell."""
    cells = aligned_cells(runs_a, runs_b, views)
    if cells is None:
        return None
    a, b, clusters, cell_views, _ = cells
    return np.array(a, np.float64), np.array(b, np.float64), clusters, cell_views


def setting_arrays(runs_a, runs_b, setting: str, langs: Sequence[str]):
    """aligned_arrays over the views of `setting` for question languages `langs`, with the views
    as strata when there are several (a macro): (A, B, clusters, strata or None), or None."""
    cells = aligned_arrays(runs_a, runs_b, setting_views(setting, langs, sorted(runs_a[0])))
    if cells is None:
        return None
    A, B, clusters, views = cells
    return A, B, clusters, views if len(set(views)) > 1 else None


def scope_row(runs_a, runs_b, setting: str, langs: Sequence[str], **kw):
    """paired_row over the views of `setting` for question languages `langs`, macro over views
    (one view is its plain mean); None when no query is shared."""
    views = setting_views(setting, langs, sorted(runs_a[0]))
    return paired_row(runs_a, runs_b, views, "view", **kw) if views else None
