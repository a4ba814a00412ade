"""The recipe pilot's tables (markdown + json): per direction and setting, each run's dev mono /
cross / multi mAP@k at step 0 (the starting model) and at every scored step, its selected step,
and the entry criteria a recipe must meet before a grid is registered on it:
  (a) X-X-mono's dev mono never falls below the start's (worst and last change reported);
  (b) X-Y's dev cross and hybrid's dev multi end at least `clear_rise` above the start's.
The numbers come from each run's metrics.jsonl (select/mono, select/cross, select/multi)."""
from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Optional

from hybrid_jax.study.runs import read_curve

SETTINGS = ("mono", "cross", "multi")
LABELS = {"mono": "X-X-mono", "cross": "X-Y", "hybrid": "hybrid"}


def run_curve(run_dir: pathlib.Path) -> dict:
    """{'curve': [{step, mono, cross, multi}], 'best_step', 'logit_scale', 'wall_seconds'}."""
    rows = read_curve(run_dir)
    curve = [dict(step=s, **{k: float(r[f"select/{k}"]) for k in SETTINGS})
             for s, r in sorted(rows.items()) if "select/mono" in r]
    best = [r["select/best_step"] for _, r in sorted(rows.items()) if "select/best_step" in r]
    config = run_dir / "config.json"
    learned = config.is_file() and json.loads(config.read_text())["loss"]["learn_temperature"]
    scales = [r["logit_scale"] for _, r in sorted(rows.items())
              if learned and "logit_scale" in r]  # the temperature moved only when learned
    timing = run_dir / "timing.json"
    wall = json.loads(timing.read_text()).get("wall_seconds") if timing.is_file() else None
    return {"curve": curve, "best_step": int(best[-1]) if best else None,
            "logit_scale": float(scales[-1]) if scales else None, "wall_seconds": wall}


def _rise(run: Optional[dict], setting: str) -> Optional[dict]:
    """start, last, last - start, worst and best change over the trained steps of `setting`."""
    if not run or len(run["curve"]) < 2 or run["curve"][0]["step"] != 0:
        return None
    start = run["curve"][0][setting]
    changes = [r[setting] - start for r in run["curve"][1:]]
    return {"start": start, "last": run["curve"][-1][setting], "change": changes[-1],
            "worst": min(changes), "best": max(changes)}


def criteria(runs: dict, clear_rise: float) -> dict:
    """Entry criteria (a) and (b) of one setting from its runs (condition -> run_curve)."""
    mono, cross, multi = (_rise(runs.get("mono"), "mono"), _rise(runs.get("cross"), "cross"),
                          _rise(runs.get("hybrid"), "multi"))
    a = None if mono is None else mono["worst"] >= 0.0
    rises = [r["change"] for r in (cross, multi) if r is not None]
    b = None if multi is None else all(x >= clear_rise for x in rises)
    return {"a_mono_of_mono": mono, "b_cross_of_cross": cross, "b_multi_of_hybrid": multi,
            "a": a, "b": b, "b_without_cross": cross is None}


def collect(finished, runs_dir: pathlib.Path, clear_rise: float) -> list[dict]:
    """One entry per (direction, setting, seed) in plan order."""
    out: dict = {}
    for spec, direction, setting in finished:
        entry = out.setdefault((direction, setting, spec.seed),
                               {"direction": direction, "setting": setting, "seed": spec.seed,
                                "runs": {}})
        entry["runs"][spec.sampler] = dict(name=spec.name, **run_curve(runs_dir / spec.name))
    for entry in out.values():
        entry["criteria"] = criteria(entry["runs"], clear_rise)
    return list(out.values())


def _f(x, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _verdict(v) -> str:
    return "-" if v is None else ("**pass**" if v else "**fail**")


def criteria_table(entries: list[dict]) -> list[str]:
    """The entry criteria of each (direction, setting, seed), a markdown table's lines."""
    lines = ["| direction | setting | seed | X-X-mono: dev mono start -> last | worst change | "
             "(a) | X-Y: dev cross change | hybrid: dev multi change | (b) | selected steps |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        c, runs = e["criteria"], e["runs"]
        m = c["a_mono_of_mono"]
        mono = f"{_f(m['start'])} -> {_f(m['last'])}" if m else "-"
        cross = _f(c["b_cross_of_cross"]["change"], True) if c["b_cross_of_cross"] else "-"
        multi = _f(c["b_multi_of_hybrid"]["change"], True) if c["b_multi_of_hybrid"] else "-"
        steps = " / ".join(f"{LABELS[k]} {runs[k]['best_step']}" for k in LABELS if k in runs)
        lines.append(f"| {e['direction']} | {e['setting']} | {e['seed']} | {mono} | "
                     f"{_f(m['worst'], True) if m else '-'} | {_verdict(c['a'])} | {cross} | "
                     f"{multi} | {_verdict(c['b'])} | {steps} |")
    return lines


def _curve_table(e: dict) -> list[str]:
    lines = [f"### {e['direction']} / {e['setting']} / seed {e['seed']}", "",
             "| condition | step | dev mono | dev cross | dev multi | mono change | "
             "cross change | multi change |", "|---|---|---|---|---|---|---|---|"]
    for cond, run in e["runs"].items():
        start = run["curve"][0] if run["curve"] else None
        for r in run["curve"]:
            mark = " (selected)" if r["step"] == run["best_step"] else ""
            changes = [_f(r[k] - start[k], True) if start and start["step"] == 0 else "-"
                       for k in SETTINGS]
            lines.append(f"| {LABELS[cond]} | {r['step']}{mark} | {_f(r['mono'])} | "
                         f"{_f(r['cross'])} | {_f(r['multi'])} | {' | '.join(changes)} |")
        if run.get("logit_scale") is not None:
            lines.append(f"| {LABELS[cond]} | 1 / temperature at the last step: "
                         f"{run['logit_scale']:.1f} | | | | | | |")
    return lines + [""]


def markdown(entries: list[dict], clear_rise: float, planned: int, finished: int) -> str:
    head = [
        "# Recipe pilot (dev data only)", "",
        f"{finished} of {planned} planned runs finished. Dev mAP@20 on the held-out dev "
        "articles of each direction's training benchmark (macro over language pairs), scored "
        "on the starting model (step 0) and along training; no test question was scored.", "",
        "Entry criteria: (a) X-X-mono's dev mono mAP@20 never falls below the start's (worst "
        f"change over the scored steps >= 0); (b) X-Y's dev cross and hybrid's dev multi end at "
        f"least {clear_rise:g} above the start's (changes at the last step; judged on hybrid "
        "alone where no X-Y run of the setting has finished).", "", "## Entry criteria", ""]
    body = ["", "## Dev curves", ""]
    for e in entries:
        body += _curve_table(e)
    return "\n".join(head + criteria_table(entries) + body)


def write(finished, runs_dir: pathlib.Path, out_dir: pathlib.Path, report_name: str, *,
          clear_rise: float, planned: int) -> pathlib.Path:
    """Writes out_dir/report_name and its .json twin (each replaced whole); returns the first."""
    entries = collect(finished, runs_dir, clear_rise)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / report_name
    payload = {"planned": planned, "finished": len(finished), "clear_rise": clear_rise,
               "settings": entries}
    for target, text in ((path.with_suffix(".json"), json.dumps(payload, indent=1)),
                         (path, markdown(entries, clear_rise, planned, len(finished)) + "\n")):
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
    return path
