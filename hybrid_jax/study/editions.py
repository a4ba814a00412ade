"""What differs between the study's editions, as data: each `Edition` names its analysis, the
sections of its page, its figures, the data files beside the report, and how it reads its
parameters from the experiment config. report.py renders any of them the same way.

  first   configs/tradeoff.py: one benchmark, seeds pooled per query, one bootstrap level, Holm
          over the high-resource tests (pooled.py).
  second  configs/tradeoff2.py: the registered protocol (docs/tradeoff_protocol.md): several
          benchmarks, two-level seed-and-question bootstrap, TOST, Holm within each family
          (seeded.py).
  third   configs/tradeoff3.py: docs/tradeoff3_protocol.md: seed-paired comparisons, the power
          reached, the alpha dose-response and the exploratory arms read from the sibling
          workdirs W-<variant> (third.py).
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
from typing import Any, Callable

from hybrid_jax.errors import InputError
from hybrid_jax.study import (figures_pooled, figures_seeded, figures_third, plan, pooled,
                              sections_pooled, sections_seeded, sections_third, seeded, third)
from hybrid_jax.study.markdown import Page

# Experiment fields a report's words may come from (what it says around the figures).
PRESENTATION_KEYS = ("title", "see_also", "deviations", "machine", "cpu_cores", "compute_note")


@dataclasses.dataclass(frozen=True)
class Edition:
    name: str
    analyse: Callable[..., Any]                 # (runs, **parameters) -> the analysis
    sections: tuple                             # (Page) -> markdown lines, top to bottom
    draw: Callable[[Any, pathlib.Path], dict]   # (analysis, folder) -> figure files
    write_data: Callable[[Page, pathlib.Path], None]
    parameters: Callable[[Any, list, list], dict]  # (config, planned, finished) -> analyse kw


def _pooled_data(page: Page, folder: pathlib.Path) -> None:
    """metrics/<run>.json (copies of the raw metrics), comparisons.json, summary.json and
    config.json."""
    a = page.analysis
    (folder / "metrics").mkdir()
    for r in a.runs:
        shutil.copy(r.folder(a.dataset) / "metrics.json", folder / "metrics" / f"{r.name}.json")
    (folder / "comparisons.json").write_text(json.dumps(
        {"answer": a.answer, "alpha_sweep": a.sweep}, indent=1))
    (folder / "summary.json").write_text(json.dumps(
        {c: {s: {x: dict(zip(("mean", "std", "n_seeds"), v)) for x, v in row.items()}
             for s, row in d.items()} for c, d in a.summary.items()}, indent=1,
        default=lambda v: None))
    if a.config is not None:
        (folder / "config.json").write_text(json.dumps(a.config, indent=1, sort_keys=True))


def _seeded_data(page: Page, folder: pathlib.Path) -> None:
    """analysis.json: the whole analysis and the finished runs."""
    (folder / "analysis.json").write_text(json.dumps(
        {"analysis": page.analysis, "runs": page.runs}, indent=1))


def _pooled_parameters(config, specs: list, finished: list) -> dict:
    e = plan.experiment_section(config)
    return dict(dataset=plan.analysed_dataset(config), k=int(config.eval.k),
                high_resource=[str(x) for x in e.high_resource], primary_alpha=float(e.alpha),
                n_bootstrap=int(e.n_bootstrap), bootstrap_seed=int(e.bootstrap_seed),
                resample_seeds=bool(e.resample_seeds),
                missing=[s.name for s in specs if s not in finished],
                config=json.loads(config.to_json_best_effort()), model=str(config.model.spec))


def _seeded_parameters(config, specs: list, finished: list) -> dict:
    del specs, finished  # the page counts the planned runs itself
    e = plan.experiment_section(config)
    return dict(benchmarks=plan.dataset_names(config),
                high_resource=[str(x) for x in e.high_resource],
                primary=f"hybrid-a{float(e.alpha):g}", k=int(config.eval.k),
                delta=float(e.delta), n_resamples=int(e.n_bootstrap),
                bootstrap_seed=int(e.bootstrap_seed),
                sweep_seeds=[int(s) for s in (e.get("sweep_seeds") or e.seeds)])


EDITIONS = {
    "first": Edition("first", pooled.analyse, sections_pooled.SECTIONS, figures_pooled.draw,
                     _pooled_data, _pooled_parameters),
    "second": Edition("second", seeded.analyse, sections_seeded.SECTIONS, figures_seeded.draw,
                      _seeded_data, _seeded_parameters),
    "third": Edition("third", third.analyse, sections_third.SECTIONS, figures_third.draw,
                     _seeded_data, third.parameters),
}


def named(name: str) -> Edition:
    if name not in EDITIONS:
        raise InputError(f"experiment.edition: {name!r}; choose from {', '.join(EDITIONS)}")
    return EDITIONS[name]


def presentation(experiment) -> dict:
    """The report's words from the experiment config (the fields it sets)."""
    return {k: experiment[k] for k in PRESENTATION_KEYS if experiment.get(k) is not None}
