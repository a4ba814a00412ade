"""The third edition's grids as the analysis reads them: the main grid's workdir W and its sibling
workdirs W-<variant> (direction B, the budgets, the data fractions, the weakened start), what
each plans and which of its runs have finished; and the recipe pilot's tables, which its
workdirs W-<variant> keep in report/ (pilot_table.write's .json twins).

A sibling's plan is the protocol's (docs/tradeoff3_protocol.md, sections 4 and 9): direction B
runs the zero-shot model and X-X-mono / hybrid on the main grid's seeds (experiment.seeds_b when
set), each exploratory arm X-X-mono / hybrid on seeds 0-2 (experiment.arm_seeds when set), the
weakened start with its own zero-shot model. A sibling workdir that does not exist is an absent
grid: every run of its plan is missing, nothing fails.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Optional, Sequence

from hybrid_jax.errors import InputError
from hybrid_jax.study import grid_checks
from hybrid_jax.study.runs import ZERO_SHOT, Run, run_info

ARM_SEEDS = (0, 1, 2)            # protocol section 9
B_DATASET = "mlqa-r"             # direction B's benchmark (protocol section 3)
# variant -> (what it varies, its value): budgets in steps, data fractions, the start.
ARMS = {"budget10": ("budget", 10), "budget80": ("budget", 80),
        "fraction25": ("fraction", 0.25), "fraction50": ("fraction", 0.5),
        "weak": ("start", "weakened")}
# The main grid's point on each arm's axis (its runs on the arm seeds).
MAIN_POINT = {"budget": 20, "fraction": 1.0, "start": "full"}


@dataclasses.dataclass
class Grid:
    """One grid's workdir, its planned runs (name -> Run) and the finished ones."""
    name: str                      # '' for the main grid, else the variant
    workdir: pathlib.Path
    dataset: str
    planned: dict
    finished: list

    @property
    def present(self) -> bool:
        return (self.workdir / "runs").is_dir()

    def groups(self, seeds: Optional[Sequence[int]] = None) -> dict[str, list[Run]]:
        """condition -> its finished runs (of `seeds` when given; the zero-shot run always)."""
        out: dict[str, list[Run]] = {}
        for r in self.finished:
            if seeds is None or r.seed is None or r.seed in seeds:
                out.setdefault(r.condition, []).append(r)
        return out

    def as_dict(self) -> dict:
        done = {r.name for r in self.finished}
        return {"name": self.name, "workdir": self.workdir.name, "present": self.present,
                "dataset": self.dataset, "planned": list(self.planned),
                "finished": [n for n in self.planned if n in done],
                "missing": [n for n in self.planned if n not in done],
                "runs": [run_info(r) for r in self.finished]}


def main_workdir(runs: Sequence[Run]) -> pathlib.Path:
    """W, from the finished runs' folders W/runs/<name>/ (the driver's layout)."""
    # Not resolved: a workdir reached through a link keeps its siblings beside the link.
    parents = {pathlib.Path(os.path.abspath(r.run_dir)).parent for r in runs}
    if len(parents) != 1 or next(iter(parents)).name != "runs":
        raise InputError(f"third edition: the runs must lie in one <workdir>/runs/ folder, got "
                         f"{sorted(str(p) for p in parents)}")
    return next(iter(parents)).parent


def planned_runs(seeds: Sequence[int], zero_shot: bool, alpha: float) -> list[Run]:
    """A sibling grid's runs in the driver's order, with their folders left to `read`."""
    out = [Run(ZERO_SHOT, ZERO_SHOT, None, None, pathlib.Path())] if zero_shot else []
    for s in seeds:
        out += [Run(f"mono-s{s}", "mono", int(s), 1.0, pathlib.Path()),
                Run(f"hybrid-a{alpha:g}-s{s}", f"hybrid-a{alpha:g}", int(s), float(alpha),
                    pathlib.Path())]
    return out


def siblings(experiment, dataset: str) -> list[dict]:
    """The sibling grids the protocol registers: name, dataset, seeds, zero_shot."""
    seeds_b = [int(s) for s in (experiment.get("seeds_b") or experiment.seeds)]
    arm_seeds = [int(s) for s in (experiment.get("arm_seeds") or ARM_SEEDS)]
    out = [dict(name="B", dataset=str(experiment.get("b_dataset") or B_DATASET),
                seeds=seeds_b, zero_shot=True)]
    out += [dict(name=v, dataset=dataset, seeds=arm_seeds, zero_shot=v == "weak") for v in ARMS]
    return out


def read(main: pathlib.Path, sibling: dict, alpha: float) -> Grid:
    """The sibling grid at W-<name>: its plan and the runs finished on its dataset."""
    workdir = main.with_name(f"{main.name}-{sibling['name']}")
    planned = {}
    for r in planned_runs(sibling["seeds"], sibling["zero_shot"], alpha):
        r.run_dir = workdir / "runs" / r.name
        planned[r.name] = r
    finished = [r for r in planned.values()
                if grid_checks.is_finished(r.run_dir, [sibling["dataset"]])]
    return Grid(sibling["name"], workdir, sibling["dataset"], planned, finished)


def main_grid(runs: Sequence[Run], planned: Sequence[str], dataset: str) -> Grid:
    """The main grid: the driver's finished runs and its plan's names."""
    workdir = main_workdir(runs)
    by_name = {r.name: r for r in runs}
    return Grid("", workdir, dataset, {n: by_name.get(n) for n in planned}, list(runs))


def read_pilot(main: pathlib.Path, tables: Sequence[str]) -> dict:
    """The pilot's entries (direction, setting, seed, runs, criteria) from each "<variant>:<file>"
    of `tables`, W-<variant>/report/<file>, in order; an entry already read (the same direction,
    setting and seed) is kept once. A table not there is listed under 'missing'; clear_rise is
    criterion (b)'s threshold, as the first table states it."""
    entries, seen, missing, clear_rise = [], set(), [], None
    for item in tables:
        variant, _, name = item.partition(":")
        path = main.with_name(f"{main.name}-{variant}") / "report" / name
        if not path.is_file():
            missing.append(f"{path.parent.parent.name}/report/{name}")
            continue
        try:
            table = json.loads(path.read_text())
            settings, rise = table["settings"], float(table["clear_rise"])
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"{path}: not a pilot table ({err!r})") from err
        clear_rise = rise if clear_rise is None else clear_rise
        for e in settings:
            key = (e["direction"], e["setting"], e["seed"])
            if key not in seen:
                seen.add(key)
                entries.append(e)
    return {"entries": entries, "missing": missing, "clear_rise": clear_rise}
