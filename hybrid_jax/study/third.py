"""The third edition's analysis (docs/tradeoff3_protocol.md, sections 6-9), as data.

Input: the main grid's finished runs (W/runs/<name>/eval/<dataset>/: metrics.json and
per_query.npz) and the sibling grids beside W (third_grids.py). Every comparison of two trained
conditions is paired by seed: only the seeds both finished enter, and the two-level bootstrap
(statistics/seeds.py, paired_seeds=True) draws seed s of both arms together, then question
clusters once for both. Against the zero-shot model (one deterministic run) only the trained
arm's seeds and the questions are resampled. Output:

* primary: hybrid - X-X-mono, mono mAP@20, macro over the high-resource languages on the
  primary benchmark: estimate, 95% interval, p, TOST at +-delta, verdict, SE, power at delta, MDE;
* S1 (per language), S2 (direction B: macro and per language, one family), S3 (each trained
  condition - the zero-shot model, macro): Holm within each family, verdicts;
* descriptive (uncorrected): cross / multi mAP@20 and rank distance, the unseen languages;
* dose: the least-squares slope against alpha (statistics/trend.py), Holm over its 4 metrics;
* arms: the primary difference at each budget, data fraction and start;
* grids: what each grid planned, finished and misses; pilot: the recipe pilot's entry criteria.
Nothing here writes files.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from hybrid_jax.evaluation.statistics import paired as paired_stats
from hybrid_jax.evaluation.statistics import power as power_stats
from hybrid_jax.evaluation.statistics import seeds as seed_stats
from hybrid_jax.evaluation.statistics import tables, trend
from hybrid_jax.study import plan, third_grids
from hybrid_jax.study.runs import ZERO_SHOT, Run, language_value, summarize
from hybrid_jax.study.third_grids import ARMS, MAIN_POINT, Grid

ALPHA = 0.05
# The protocol's sequential rule (section 10): after SEQUENTIAL_AFTER seed pairs, add pairs, up to
# SEQUENTIAL_MOST, while the primary's power at delta is below SEQUENTIAL_POWER (the SE only).
SEQUENTIAL_AFTER, SEQUENTIAL_MOST, SEQUENTIAL_POWER = 5, 10, 0.8
RANK_DISTANCE = "rank_distance"   # per-query column of the multi views (lower = less bias)
# The dose-response and descriptive metrics: name -> (setting, per-query column or None = k).
TREND_METRICS = {"mono": ("mono", None), "cross": ("cross", None), "multi": ("multi", None),
                 "rank distance": ("multi", RANK_DISTANCE)}
SUMMARY_METRICS = {"mono map@20": ("mono", "map@20"), "cross map@20": ("cross", "map@20"),
                   "multi map@20": ("multi", "map@20"),
                   "rank_distance": ("rank_distance", None)}


# ----------------------------------------------------------------------------- one comparison


def seed_pairs(a: list[Run], b: list[Run]):
    """(runs of A, runs of B, paired, seeds): seed-matched when both arms are trained (only the
    seeds both finished, in seed order); B as it is when it is the one zero-shot run."""
    if len(b) == 1 and b[0].condition == ZERO_SHOT:
        return sorted(a, key=lambda r: r.seed), b, False, sorted(r.seed for r in a)
    by_a, by_b = {r.seed: r for r in a}, {r.seed: r for r in b}
    seeds = sorted(set(by_a) & set(by_b))
    return [by_a[s] for s in seeds], [by_b[s] for s in seeds], True, seeds


def compare(a: list[Run], b: list[Run], dataset: str, setting: str, langs: Sequence[str],
            key: str, *, delta: float, n_resamples: int, seed: int = 0) -> Optional[dict]:
    """A - B on `setting` over question languages `langs` (macro over views when several),
    paired by seed: SeedBootstrap.summary plus what was compared, the seeds, the macro means and
    the power the design reached at +-delta. None when no seed pair or no shared question."""
    ra, rb, paired, seeds = seed_pairs(a, b)
    if not ra:
        return None
    ta = [r.tables(dataset, key) for r in ra]
    tb = [r.tables(dataset, key) for r in rb]
    cells = tables.setting_arrays(ta, tb, setting, langs)
    if cells is None:
        return None
    A, B, clusters, strata = cells
    boot = seed_stats.two_level_bootstrap(A, B, clusters=clusters, strata=strata,
                                          n_resamples=n_resamples, seed=seed,
                                          paired_seeds=paired)
    design = paired_stats.Design(A.shape[1], clusters, strata)
    ones = np.ones(A.shape[1])
    row = boot.summary(delta, ALPHA)
    row.update(a=a[0].condition, b=b[0].condition, setting=setting, metric=key,
               scope=langs[0] if len(langs) == 1 else "macro", languages=list(langs),
               seeds=[int(s) for s in seeds],
               unpaired=sorted({r.seed for r in a + b if r.seed is not None} - set(seeds)),
               mean_a=float(design.stat(A.mean(0), ones)),
               mean_b=float(design.stat(B.mean(0), ones)),
               power_at_delta=power_stats.power_two_sided(delta, boot.se, ALPHA))
    return row


def _family(rows: list[dict], name: str) -> list[dict]:
    rows = [r for r in rows if r]
    if rows:
        seed_stats.add_verdicts(rows, alpha=ALPHA)
    for r in rows:
        r["family"] = name
    return rows


def _uncorrected(row: dict, higher_is_better: bool = True) -> dict:
    if row["p"] >= ALPHA:
        row["verdict"] = "no significant difference (uncorrected)"
    else:
        better = (row["diff"] > 0) == higher_is_better
        row["verdict"] = f"{'better' if better else 'worse'} at uncorrected p < {ALPHA:g}"
    return row


# ----------------------------------------------------------------------------- the endpoints


def endpoints(groups: dict, dataset: str, hr: Sequence[str], key: str, primary: str,
              **kw) -> dict:
    """primary (one test), S1 (per language) and S3 (each trained arm - zero-shot, macro)."""
    hyb, mono, zs = groups.get(primary), groups.get("mono"), groups.get(ZERO_SHOT)
    out = {"primary": None, "S1": [], "S3": []}
    if hyb and mono:
        out["primary"] = (_family([compare(hyb, mono, dataset, "mono", hr, key, **kw)],
                                  "primary") or [None])[0]
        out["S1"] = _family([compare(hyb, mono, dataset, "mono", [x], key, **kw) for x in hr],
                            "S1")
    if zs:
        out["S3"] = _family([compare(groups[c], zs, dataset, "mono", hr, key, **kw)
                             for c in ("mono", primary) if groups.get(c)], "S3")
    r = out["primary"]
    out["sequential"] = None if r is None else power_stats.sequential_decision(
        len(r["seeds"]), r["power_at_delta"], after=SEQUENTIAL_AFTER, most=SEQUENTIAL_MOST,
        target=SEQUENTIAL_POWER)
    return out


def direction_b(grid: Grid, high_resource: Sequence[str], key: str, primary: str,
                **kw) -> dict:
    """S2: hybrid - X-X-mono on direction B's benchmark, macro and per language (one family)."""
    groups = grid.groups()
    out = {"dataset": grid.dataset, "present": grid.present, "rows": [], "high_resource": [],
           "summary": {}}
    if not grid.finished:
        return out
    languages = grid.finished[0].metrics(grid.dataset)["languages"]
    hr = [x for x in high_resource if x in languages]
    out.update(high_resource=hr, summary=summarize(groups, grid.dataset, languages, hr,
                                                   SUMMARY_METRICS, None))
    hyb, mono = groups.get(primary), groups.get("mono")
    if hyb and mono:
        rows = [compare(hyb, mono, grid.dataset, "mono", hr, key, **kw)]
        rows += [compare(hyb, mono, grid.dataset, "mono", [x], key, **kw) for x in hr]
        out["rows"] = _family(rows, "S2")
    return out


def descriptive(groups: dict, dataset: str, hr: Sequence[str], unseen: Sequence[str], key: str,
                primary: str, **kw) -> dict:
    """Hybrid - X-X-mono outside every family (uncorrected): cross and multi `key` and rank
    distance macro over the high-resource languages; mono and cross per unseen language."""
    hyb, mono = groups.get(primary), groups.get("mono")
    out = {"rows": [], "unseen": []}
    if not hyb or not mono:
        return out
    for setting, metric in (("cross", key), ("multi", key), ("multi", RANK_DISTANCE)):
        r = compare(hyb, mono, dataset, setting, hr, metric, **kw)
        if r:
            out["rows"].append(_uncorrected(r, metric != RANK_DISTANCE))
    for x in unseen:
        for setting in ("mono", "cross"):
            r = compare(hyb, mono, dataset, setting, [x], key, **kw)
            if r:
                out["unseen"].append(_uncorrected(r))
    return out


# ----------------------------------------------------------------------------- dose-response


def dose_conditions(doses: Sequence[float]) -> dict[float, str]:
    return {float(d): ("cross" if d == 0 else "mono" if d == 1 else f"hybrid-a{d:g}")
            for d in sorted(doses)}


def dose_response(groups: dict, dataset: str, hr: Sequence[str], key: str,
                  doses: Sequence[float], seeds: Sequence[int], *, n_resamples: int,
                  seed: int = 0) -> dict:
    """The slope against alpha of each TREND_METRICS macro over `hr`, on the seeds of `seeds`
    with every dose finished; Holm over the slopes."""
    conds = dose_conditions(doses)
    by = {c: {r.seed: r for r in groups.get(c, [])} for c in conds.values()}
    full = [int(s) for s in seeds if all(s in by[c] for c in conds.values())]
    out = {"doses": list(conds), "conditions": list(conds.values()), "seeds": full,
           "planned_seeds": [int(s) for s in seeds], "rows": []}
    if len(full) < 2:
        return out
    for name, (setting, metric) in TREND_METRICS.items():
        metric = metric or key
        tabs = [by[c][s].tables(dataset, metric) for c in conds.values() for s in full]
        views = tables.setting_views(setting, hr, sorted(tabs[0]))
        cells = tables.aligned_cells(tabs, [], views)
        if cells is None:
            continue
        X = np.array(cells[0], np.float64).reshape(len(conds), len(full), -1)
        res = trend.trend_test(X, list(conds), clusters=cells[2],
                               strata=cells[3] if len(set(cells[3])) > 1 else None,
                               n_resamples=n_resamples, seed=seed)
        out["rows"].append(dict(res.as_dict(), metric=name, setting=setting, key=metric,
                                higher_is_better=metric != RANK_DISTANCE))
    for r, p in zip(out["rows"], paired_stats.holm([r["p"] for r in out["rows"]])):
        r["p_holm"], r["significant"] = float(p), bool(p < ALPHA)
    return out


# ----------------------------------------------------------------------------- exploratory arms


def arm_point(grid: Optional[Grid], axis: str, x, dataset: str, hr: Sequence[str], key: str,
              primary: str, seeds: Sequence[int], **kw) -> dict:
    """One point of an arm: the primary difference on `seeds` of `grid` (None: the grid is not
    there), and the macro of the grid's zero-shot model when it has one (the main grid's; the
    weakened start's own)."""
    point = {"axis": axis, "x": x, "grid": None if grid is None else grid.name}
    if grid is None or not grid.present:
        return dict(point, missing="workdir absent")
    groups = grid.groups(seeds)
    if not groups.get(primary) or not groups.get("mono"):
        return dict(point, missing="no seed with both runs finished")
    row = compare(groups[primary], groups["mono"], dataset, "mono", hr, key, **kw)
    if row is None:
        return dict(point, missing="no seed with both runs finished")
    zs = groups.get(ZERO_SHOT)
    row["zero_shot"] = (float(np.mean([language_value(zs[0].metrics(dataset), "mono", lang, key)
                                       for lang in hr])) if zs else None)
    return dict(point, **_uncorrected(row))


def arms(main: Grid, grids: dict, dataset: str, hr, key: str, primary: str,
         arm_seeds: Sequence[int], **kw) -> list[dict]:
    """Every arm's points in axis order: the budgets, the fractions, the start (the main grid's
    arm seeds are each axis's reference point)."""
    points = []
    for axis in ("budget", "fraction", "start"):
        xs = [(v, x) for v, (a, x) in ARMS.items() if a == axis] + [("", MAIN_POINT[axis])]
        if axis != "start":
            xs.sort(key=lambda t: t[1])
        for variant, x in xs:
            grid = main if variant == "" else grids.get(variant)
            points.append(arm_point(grid, axis, x, dataset, hr, key, primary, arm_seeds, **kw))
    return points


# ----------------------------------------------------------------------------- the whole edition


def parameters(config, specs: list, finished: list) -> dict:
    """The analysis's keywords from the main grid's config (editions.Edition.parameters)."""
    del finished  # the finished runs come to analyse() themselves
    e = plan.experiment_section(config)
    alpha = float(e.alpha)
    doses = {0.0, alpha, 1.0} | {float(a) for a in (e.get("sweep_alphas") or ())}
    dataset = plan.analysed_dataset(config)
    return dict(dataset=dataset, high_resource=[str(x) for x in e.high_resource],
                primary=f"hybrid-a{alpha:g}", k=int(config.eval.k), delta=float(e.delta),
                n_resamples=int(e.n_bootstrap), bootstrap_seed=int(e.bootstrap_seed),
                doses=sorted(doses), dose_seeds=[int(s) for s in e.get("sweep_seeds") or e.seeds],
                trained_languages=[str(x) for x in config.data.languages],
                planned=[s.name for s in specs], siblings=third_grids.siblings(e, dataset),
                pilot_tables=[str(x) for x in e.get("pilot_tables") or ()],
                registered_setting=str(e.get("registered_setting") or ""))


def analyse(runs: Sequence[Run], *, dataset: str, high_resource: Sequence[str], primary: str,
            k: int = 20, delta: float = 0.007, n_resamples: int = 10_000,
            bootstrap_seed: int = 0, doses: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
            dose_seeds: Sequence[int] = (), trained_languages: Sequence[str] = (),
            planned: Sequence[str] = (), siblings: Sequence[dict] = (),
            pilot_tables: Sequence[str] = (), registered_setting: str = "") -> dict:
    """Everything the third edition's report shows (the module docstring), as JSON-ready data."""
    key = f"map@{k}"
    kw = dict(delta=delta, n_resamples=n_resamples, seed=bootstrap_seed)
    main = third_grids.main_grid(runs, planned or [r.name for r in runs], dataset)
    grids = {s["name"]: third_grids.read(main.workdir, s, float(primary[len("hybrid-a"):]))
             for s in siblings}
    groups = main.groups()
    languages = list(main.finished[0].metrics(dataset)["languages"]) if main.finished else []
    hr = [x for x in high_resource if x in languages]
    unseen = [x for x in languages if x not in trained_languages]
    out = {"key": key, "delta": delta, "alpha": ALPHA, "n_resamples": n_resamples,
           "primary_condition": primary, "dataset": dataset, "languages": languages,
           "high_resource": hr, "unseen_languages": unseen,
           "runs": {c: [r.name for r in rs] for c, rs in groups.items()},
           "summary": summarize(groups, dataset, languages, hr, SUMMARY_METRICS, None),
           **endpoints(groups, dataset, hr, key, primary, **kw),
           "S2": direction_b(grids["B"], high_resource, key, primary, **kw)
           if "B" in grids else None,
           "descriptive": descriptive(groups, dataset, hr, unseen, key, primary, **kw),
           "dose": dose_response(groups, dataset, hr, key, doses, dose_seeds,
                                 n_resamples=n_resamples, seed=bootstrap_seed),
           "arms": arms(main, grids, dataset, hr, key, primary,
                        next((s["seeds"] for s in siblings if s["name"] in ARMS),
                             third_grids.ARM_SEEDS), **kw),
           "grids": [main.as_dict()] + [g.as_dict() for g in grids.values()],
           "pilot": dict(third_grids.read_pilot(main.workdir, pilot_tables),
                         registered=registered_setting)}
    return out
