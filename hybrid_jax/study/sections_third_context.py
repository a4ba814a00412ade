"""The third edition's sections that set its grids in context, each a pure function of the
report's `Page`: the recipe the pilot chose on dev data (from the pilot's committed tables), our
per-language differences beside the paper's published ones (paper.py, labelled as theirs), the
runs and compute of each grid, the planned runs not finished, the deviations from the protocol."""
from __future__ import annotations

from hybrid_jax.study import pilot_table
from hybrid_jax.study.markdown import Page, duration, table
from hybrid_jax.study.paper import published_deltas

PILOT_DOC = "tradeoff_pilot.md"


def grid_name(name: str) -> str:
    return "main" if not name else name


def _registered_seeds(entries: list[dict], setting: str) -> str:
    """How the registered setting met the entry criteria over its seeds, in words."""
    mine = [e for e in entries if e["setting"] == setting]
    if not mine:
        return f"The pilot's tables have no run of `{setting}`."
    seeds = ", ".join(str(e["seed"]) for e in mine)
    a = sum(bool(e["criteria"]["a"]) for e in mine)
    b = sum(bool(e["criteria"]["b"]) for e in mine)
    return (f"Over its {len(mine)} seeds ({seeds}), `{setting}` met (a) on {a} and (b) on {b}.")


def pilot_section(p: Page) -> list[str]:
    pilot = p.analysis.get("pilot") or {}
    entries, missing = pilot.get("entries") or [], pilot.get("missing") or []
    L = ["## The recipe: the pilot on dev data", ""]
    if not entries:
        return L + [f"The pilot's tables are not beside this grid ({', '.join(missing)}); "
                    f"[{PILOT_DOC}]({PILOT_DOC}) describes the pilot.", ""]
    L += [f"The recipe was chosen before registration on dev data only: no test question was "
          f"scored. Each setting changes one factor of a base recipe; dev mAP@20 is the macro on "
          f"the training benchmark's held-out units, scored on the starting model (step 0) and "
          f"along training. Entry criteria: (a) X-X-mono's dev mono mAP@20 never falls below "
          f"the start's; (b) X-Y's dev cross and hybrid's dev multi end at least "
          f"{pilot['clear_rise']:g} above the start's. The settings, the rule that picked one "
          f"and its seed replication: [{PILOT_DOC}]({PILOT_DOC}).", ""]
    L += pilot_table.criteria_table(entries) + [""]
    if pilot.get("registered"):
        L += [f"Registered: **`{pilot['registered']}`**. "
              + _registered_seeds(entries, pilot["registered"]), ""]
    if missing:
        L += [f"Not beside this grid: {', '.join(missing)}.", ""]
    return L


def _paper_rows(dataset: str, rows: list[dict]) -> list[str]:
    theirs = published_deltas(dataset)
    ours = {r["scope"]: r for r in rows}
    if theirs is None or not ours:
        return []
    langs = list(next(iter(theirs.values())))
    body = [[f"paper: {m}"] + [f"{v[x]:+.3f}" for x in langs] for m, v in theirs.items()]
    body.append(["ours"] + [f"{ours[x]['diff']:+.3f} [{ours[x]['ci_low']:+.3f}, "
                            f"{ours[x]['ci_high']:+.3f}]" if x in ours else "-" for x in langs])
    return [f"{dataset}:", "", table(["source"] + langs, body), ""]


def paper_section(p: Page) -> list[str]:
    a, s2 = p.analysis, p.analysis["S2"] or {}
    body = _paper_rows(a["dataset"], a["S1"]) + _paper_rows(s2.get("dataset", ""),
                                                             s2.get("rows") or [])
    if not body:
        return []
    return ["## Beside the paper (theirs: XLM-R and LaBSE; ours: multilingual-e5-small)", "",
            "Hybrid - X-X-mono, monolingual mAP per high-resource language. Theirs as published "
            "(their models, training data and batch 100; no intervals, no seeds); ours: mAP@20 "
            "with the paired 95% intervals of S1 and S2, zero-shot on each benchmark. This is "
            "not a replication: the model, the data and the budget differ.", ""] + body


def runs_section(p: Page) -> list[str]:
    """Per grid: finished of planned, summed wall time; then the main grid's runs."""
    a, cores = p.analysis, p.presentation.get("cpu_cores") or 0
    body = []
    for g in a["grids"]:
        wall = sum(r["wall_seconds"] or 0 for r in g["runs"])
        body.append([grid_name(g["name"]), g["workdir"] if g["present"] else "absent",
                     g["dataset"], f"{len(g['finished'])} of {len(g['planned'])}",
                     f"{wall / 3600:.2f} h"] + ([f"{wall * cores / 3600:.1f}"] if cores else [])
                    + ["; ".join(sorted({r["code"] for r in g["runs"]})) or "-"])
    runs = [[r["name"], r["seed"] if r["seed"] is not None else "-",
             duration(r["wall_seconds"]), r["sessions"], r["code"]] for r in p.runs]
    machine = p.presentation.get("machine", "2 CPU cores")
    note = p.presentation.get("compute_note")
    return ["## Runs finished", "",
            f"Each grid's workdir is the main workdir with its name appended; wall times are "
            f"summed over runs, one at a time on {machine}"
            + (f"; CPU-hours are wall hours x {cores} cores" if cores else "")
            + "; code: what made the finished runs (the driver checks that within a grid, not "
              "across grids)." + (f" {note}" if note else ""), "",
            table(["grid", "workdir", "benchmark", "runs finished", "wall time"]
                  + (["CPU-hours"] if cores else []) + ["code"], body),
            "",
            "Main grid:", "", table(["run", "seed", "wall time", "sessions", "code"], runs), ""]


def cuts_section(p: Page) -> list[str]:
    """Every planned run not finished, grid by grid."""
    L = ["## Cuts: planned runs not finished", ""]
    for g in p.analysis["grids"]:
        if g["missing"]:
            why = "" if g["present"] else " (workdir absent)"
            L.append(f"- {grid_name(g['name'])}{why}: {', '.join(g['missing'])}")
    return L + (["None: every planned run finished."] if len(L) == 2 else []) + [""]


def deviations_section(p: Page) -> list[str]:
    deviations = p.presentation.get("deviations") or ()
    return (["## Deviations from the protocol", ""] + [f"- {d}" for d in deviations]
            + ([] if deviations else ["None."]) + [""])
