"""The seed-replicated pilot's power analysis: from the per-query dev scores of X-X-mono and hybrid
runs that share seeds (train.select_per_query), the variance components of the primary endpoint
(hybrid minus X-X-mono, mono mAP@k, macro over the high-resource languages) and the seed pairs a
grid needs for the registered power on the test benchmark's clusters.

experiment.pilot.power (configs/tradeoff3.py:pilot-seeds):
  direction, setting  the runs analysed (<direction>-<setting>-{mono,hybrid-a<alpha>}-s<seed>)
  languages           the high-resource languages the dev fold has (the macro's strata)
  metric              the per-query column (e.g. 'map@20')
  effect, margin      the difference the two-sided test must find; TOST's margin
  power, alpha        the target power and the tests' level
  test_clusters       question clusters of the test benchmark the grid is evaluated on
  confidence          one-sided confidence of the seed variance's upper limit (a few pilot
                      seeds estimate it poorly: statistics/power.py, with_seed_var_upper)

Each run contributes the table of its selected step (select/step_<best>/per_query.npz): the
grid compares selected steps too.  The pilot's clusters are the dev fold's questions, whose
per-cluster variance stands in for the test benchmark's (power.Pilot.se scales it by
n_clusters / test_clusters).
"""
from __future__ import annotations

import json
import math
import pathlib

from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import per_query
from hybrid_jax.evaluation.statistics import power as power_lib
from hybrid_jax.evaluation.statistics import tables
from hybrid_jax.study.pilot_table import run_curve


def selected_table(run_dir: pathlib.Path, metric: str) -> dict:
    """tables.per_question_scores of the run's selected step."""
    best = run_curve(run_dir)["best_step"]
    path = run_dir / "select" / f"step_{best}" / "per_query.npz"
    if best is None or not path.is_file():
        raise InputError(f"{run_dir}: no per-query dev scores of the selected step ({path}); "
                         f"the run needs train.select_per_query=True")
    return tables.per_question_scores(per_query.load(path), metric)


def seed_pairs(finished, runs_dir: pathlib.Path, direction: str, setting: str) -> list[tuple]:
    """(seed, hybrid run dir, X-X-mono run dir) for every seed with both runs finished."""
    by = {}
    for spec, d, st in finished:
        if (d, st) == (direction, setting) and spec.sampler in ("mono", "hybrid"):
            by.setdefault(spec.seed, {})[spec.sampler] = runs_dir / spec.name
    return [(s, r["hybrid"], r["mono"]) for s, r in sorted(by.items()) if len(r) == 2]


def analyse(finished, runs_dir: pathlib.Path, cfg) -> dict:
    """The variance components and the power plan (json-ready), or {'seeds': n} alone when
    fewer than two seed pairs have finished."""
    pairs = seed_pairs(finished, runs_dir, str(cfg.direction), str(cfg.setting))
    out = {"direction": str(cfg.direction), "setting": str(cfg.setting),
           "seeds": [s for s, _, _ in pairs], "languages": list(cfg.languages),
           "metric": str(cfg.metric)}
    if len(pairs) < power_lib.MIN_SEEDS:
        return out
    hybrid = [selected_table(h, cfg.metric) for _, h, _ in pairs]
    mono = [selected_table(m, cfg.metric) for _, _, m in pairs]
    views = [f"mono/{x}" for x in cfg.languages]
    cells = tables.aligned_arrays(hybrid, mono, views)
    if cells is None:
        raise InputError(f"experiment.pilot.power: no {cfg.metric} scores of {views} shared by "
                         f"the runs of {cfg.setting}")
    A, B, clusters, cell_views = cells
    pilot = power_lib.Pilot.from_runs(A, B, clusters=clusters, strata=cell_views)
    upper = pilot.with_seed_var_upper(float(cfg.confidence))
    plan_kw = dict(effect=float(cfg.effect), margin=float(cfg.margin), power=float(cfg.power),
                   alpha=float(cfg.alpha), n_clusters=int(cfg.test_clusters))
    per_seed = (A - B).mean(axis=1)  # unstratified, for the reader's eye only
    out.update(difference=float(A.mean() - B.mean()), questions=int(A.shape[1]),
               per_seed_mean_difference=[float(x) for x in per_seed],
               test_clusters=int(cfg.test_clusters),
               point=power_lib.power_plan(pilot, **plan_kw),
               upper=power_lib.power_plan(upper, **plan_kw), confidence=float(cfg.confidence))
    return out


def _seeds(x) -> str:
    return "more than seeds can give" if math.isinf(x) else str(int(x))


def markdown(result: dict) -> str:
    head = [f"# Power analysis from the pilot ({result['direction']} / {result['setting']})", ""]
    if "point" not in result:
        return "\n".join(head + [f"Seed pairs finished: {result['seeds']}; the analysis needs "
                                 f"at least {power_lib.MIN_SEEDS}.", ""])
    point, upper = result["point"], result["upper"]
    p = point["pilot"]
    lines = head + [
        f"Hybrid minus X-X-mono, dev mono {result['metric']}, macro over "
        f"{', '.join(result['languages'])}; seed pairs {result['seeds']} at their selected "
        f"steps; {result['questions']} question cells in {p['n_clusters']} clusters. Observed "
        f"difference {result['difference']:+.4f} (per seed, unstratified: "
        f"{', '.join(f'{x:+.4f}' for x in result['per_seed_mean_difference'])}).", "",
        f"Variance components: one seed pair's difference sigma2_seed = "
        f"{p['seed_var_per_seed']:.3g} (upper {result['confidence']:.0%} limit "
        f"{upper['pilot']['seed_var_per_seed']:.3g}); the seed x question interaction i = "
        f"{p['interaction_var']:.3g} (how much one seed pair's question term exceeds all "
        f"pairs'; sigma2_seed is pure seed variance + i, and where it falls below i the pure "
        f"part is taken as 0); questions {p['question_var']:.3g} at {p['n_clusters']} "
        f"clusters.", "",
        f"Scaled to {result['test_clusters']} test clusters, for a true difference of "
        f"{point['effect']} (two-sided level {point['alpha']}) and TOST at "
        f"+-{point['margin']}, target power {point['target_power']:.0%}: seed pairs needed "
        f"{_seeds(point['seeds_needed'])} (TOST {_seeds(point['seeds_needed_tost'])}) on the "
        f"point estimate, {_seeds(upper['seeds_needed'])} (TOST "
        f"{_seeds(upper['seeds_needed_tost'])}) on the upper limit.", "",
        "| seed pairs | SE (point) | power (point) | TOST power (point) | SE (upper) | "
        "power (upper) | TOST power (upper) | MDE (upper) |", "|---|---|---|---|---|---|---|---|"]
    for r, u in zip(point["rows"], upper["rows"]):
        lines.append(f"| {r['seeds']} | {r['se']:.4f} | {r['power']:.2f} | "
                     f"{r['power_tost']:.2f} | {u['se']:.4f} | {u['power']:.2f} | "
                     f"{u['power_tost']:.2f} | {u['mde']:.4f} |")
    return "\n".join(lines + [""])


def write(result: dict, path: pathlib.Path) -> pathlib.Path:
    """path (markdown) and its .json twin."""
    def clean(x):
        if isinstance(x, float) and math.isinf(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x
    path.with_suffix(".json").write_text(json.dumps(clean(result), indent=1))
    path.write_text(markdown(result))
    return path
