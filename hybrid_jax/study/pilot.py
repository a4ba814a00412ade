"""The recipe pilot: short dev-only runs that vary one recipe factor at a time from a base, to
check that a recipe keeps the starting model before a grid is registered on it.

    python -m hybrid_jax.study --config configs/tradeoff3.py:pilot --workdir W
        [--max_runs N] [--only RUN[,RUN...]] [--report_only] [--dry_run] [--publish docs/]

experiment.pilot (configs/tradeoff3.py):
  directions   direction names, keys of `direction_data` (each: data.dataset_dir, languages,
               split_sizes: where the run trains and which held-out units are its dev fold)
  settings     "<name>: <key>=<value>; ..." config overrides of the base, one factor each
  runs         "<setting>:<condition>[@<seed>]" in execution order (mono | cross | hybrid); a
               run with its own seed is named <direction>-<setting>-<condition>-s<seed>
  languages    () = each direction's; else the languages of every run (tiny variant)
  seed, alpha  the seed of runs without one; hybrid's share of mono batches
               (data.mono_schedule as configured)
  clear_rise   the rise over the start that entry criterion (b) asks for
  keep_weights False: a finished run's checkpoints and weights are deleted (metrics stay)
  power        optional: the power analysis of seed-paired runs (pilot_power.py), written
               beside the tables as tradeoff_pilot_power.md / .json

Runs W/runs/<direction>-<setting>-<condition>/ (ordinary training workdirs; nothing is evaluated
on test data: eval.datasets is empty, so the dev scores of train.select='map' with
train.select_at_start, logged per step to metrics.jsonl, are the pilot's data).  The bookkeeping
is the study driver's: a run is finished when its timing.json says so and is then skipped; an
unfinished one resumes from its checkpoint; a changed config or other code stops the pilot
before anything runs.  Then pilot_table.py writes the tables (markdown + json) over the
finished runs.
"""
from __future__ import annotations

import ast
import json
import pathlib
import shutil
from typing import Optional, Sequence

import ml_collections

from hybrid_jax import code_version, config as config_schema
from hybrid_jax.errors import InputError
from hybrid_jax.study import grid_checks, pilot_power, pilot_table
from hybrid_jax.study.driver import execute
from hybrid_jax.study.plan import RunSpec, experiment_section

CONDITIONS = ("mono", "cross", "hybrid")
HEAVY = ("checkpoints", "frozen_params")  # what keep_weights=False deletes (plus best/*/params)


def _log(message: str) -> None:
    print(f"[pilot] {message}", flush=True)


def parse_setting(text: str) -> tuple[str, dict]:
    """'<name>: key=value; key=value' -> (name, {key: value}); values are Python literals."""
    name, sep, rest = str(text).partition(":")
    name = name.strip()
    if not sep or not name:
        raise InputError(f"experiment.pilot.settings: {text!r}: expected '<name>: key=value; ...'")
    overrides = {}
    for part in filter(None, (p.strip() for p in rest.split(";"))):
        key, eq, value = part.partition("=")
        try:
            overrides[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as e:
            raise InputError(f"experiment.pilot.settings: {name}: {part!r} is not key=<Python "
                             f"literal> ({e})") from e
        if not eq:
            raise InputError(f"experiment.pilot.settings: {name}: {part!r} has no '='")
    return name, overrides


def parse_run(entry: str, settings: dict) -> tuple[str, str, Optional[int]]:
    """'<setting>:<condition>[@<seed>]' -> (setting, condition, seed or None = pilot.seed)."""
    text, at, seed = str(entry).partition("@")
    setting, _, condition = text.partition(":")
    if setting not in settings or condition not in CONDITIONS or (at and not seed.isdigit()):
        raise InputError(f"experiment.pilot.runs: {entry!r}: need '<setting>:<condition>' or "
                         f"'<setting>:<condition>@<seed>' with a setting of "
                         f"experiment.pilot.settings ({', '.join(settings)}) and a condition of "
                         f"{CONDITIONS}")
    return setting, condition, int(seed) if at else None


def _pilot_section(config):
    p = experiment_section(config).get("pilot")
    if p is None:
        raise InputError("experiment.pilot: missing (use configs/tradeoff3.py:pilot)")
    return p


def plan(config) -> list[tuple[RunSpec, str, str]]:
    """(run spec, direction, setting) of every pilot run, in execution order."""
    p = _pilot_section(config)
    settings = dict(parse_setting(s) for s in p.settings)
    unknown_dirs = sorted(set(p.directions) - set(p.direction_data))
    if unknown_dirs or not p.directions:
        raise InputError(f"experiment.pilot.directions: {unknown_dirs or 'empty'}; known: "
                         f"{', '.join(p.direction_data)}")
    out = []
    for direction in p.directions:
        for entry in p.runs:
            setting, condition, seed = parse_run(entry, settings)
            alpha = {"mono": 1.0, "cross": 0.0}.get(condition, float(p.alpha))
            label = "hybrid-a" + f"{alpha:g}" if condition == "hybrid" else condition
            name = f"{direction}-{setting}-{label}" + ("" if seed is None else f"-s{seed}")
            out.append((RunSpec(name, condition, alpha, int(p.seed if seed is None else seed)),
                        direction, setting))
    names = [s.name for s, _, _ in out]
    if len(set(names)) != len(names):
        raise InputError(f"experiment.pilot.runs: a run is listed twice ({names})")
    return out


def _set(c, key: str, value, where: str) -> None:
    *path, leaf = key.split(".")
    node = c
    for part in path:
        if part not in node:
            raise InputError(f"{where}: unknown config key {key!r}")
        node = node[part]
    if leaf not in node:
        raise InputError(f"{where}: unknown config key {key!r}")
    node[leaf] = value


def apply_overrides(c, overrides: dict, where: str) -> None:
    """A setting's {dotted key: value} on config `c` (an unknown key is an error)."""
    for key, value in overrides.items():
        _set(c, key, value, where)


def run_config(config, spec: RunSpec, direction: str, setting: str):
    """One pilot run's training config: the base without `experiment`, the direction's data,
    the setting's overrides, the condition and seed; no evaluation dataset (dev only)."""
    p = _pilot_section(config)
    d = config.to_dict()
    d.pop("experiment", None)
    c = ml_collections.ConfigDict(d)
    data = p.direction_data[direction]
    c.data.dataset_dir = str(data.dataset_dir)
    c.data.languages = tuple(p.languages or data.languages)
    c.data.split_sizes = tuple(data.split_sizes)
    c.eval.datasets = ()
    c.eval.every_datasets = ()
    _, overrides = next(parse_setting(s) for s in p.settings
                        if parse_setting(s)[0] == setting)
    apply_overrides(c, overrides, f"experiment.pilot.settings: {setting}")
    c.seed = c.data.seed = spec.seed
    c.data.sampling = spec.sampler
    if spec.sampler == "hybrid":
        c.data.alpha = spec.alpha
    if str(c.train.select) != "map" or not c.train.get("select_at_start", False):
        raise InputError("experiment.pilot: needs train.select='map' and "
                         "train.select_at_start=True (the dev scores are the pilot's data)")
    return c


def is_finished(run_dir: pathlib.Path) -> bool:
    path = run_dir / "timing.json"
    return path.is_file() and bool(json.loads(path.read_text()).get("finished"))


def _drop_weights(run_dir: pathlib.Path) -> None:
    """The pilot reads metrics.jsonl only: a finished run's weights need not take the disk."""
    for name in HEAVY:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for params in (run_dir / "best").glob("*/params"):
        shutil.rmtree(params, ignore_errors=True)


def _check_code(workdir: pathlib.Path, specs, current, allow_mixed_code: bool) -> None:
    made = {s.name: v for s in specs
            if (v := code_version.recorded(workdir / "runs" / s.name))}
    if allow_mixed_code:
        return
    grid_checks.check_code_versions(workdir, made, current)


def run_pilot(config, workdir, *, max_runs: int = 0, report_only: bool = False,
              publish: Optional[str] = None, dry_run: bool = False,
              allow_mixed_code: bool = False, only: Sequence[str] = ()):
    """Runs the unfinished pilot runs (at most `max_runs`; with `only`, just those), then writes
    the tables over the finished ones (not with `only`).  Returns the markdown's path."""
    workdir = pathlib.Path(config_schema.check_workdir(workdir))
    runs = plan(config)
    specs = [s for s, _, _ in runs]
    unknown = sorted(set(only) - {s.name for s in specs})
    if unknown:
        raise InputError(f"--only: {unknown} not in the pilot ({', '.join(s.name for s in specs)})")
    configs = {s.name: run_config(config, s, d, st) for s, d, st in runs}
    grid_checks.check_configs(workdir, specs, configs)
    todo = [s for s in specs if not is_finished(workdir / "runs" / s.name)]
    current = code_version.current() if todo and not report_only else None
    _check_code(workdir, specs, current, allow_mixed_code)
    if dry_run:
        for s in specs:
            run_dir = workdir / "runs" / s.name
            state = "finished" if is_finished(run_dir) else grid_checks.run_state(run_dir, ["-"])
            _log(f"{s.name}: {state}")
        return None
    _log(f"{len(specs)} runs planned, {len(specs) - len(todo)} finished, {len(todo)} to do")
    if only:
        todo = [s for s in todo if s.name in only]
    todo = [] if report_only else (todo[:max_runs] if max_runs > 0 else todo)
    keep = bool(_pilot_section(config).get("keep_weights", False))
    for i, s in enumerate(todo, 1):
        run_dir = workdir / "runs" / s.name
        _log(f"run {i}/{len(todo)}: {s.name}")
        timing = execute(s, configs[s.name], run_dir)
        status = timing["sessions"][-1]["status"]
        if status != "finished":
            _log(f"{s.name}: {status}; stopping (rerun the same command to resume)")
            return None
        if not keep:
            _drop_weights(run_dir)
        _log(f"{s.name}: done in {timing['sessions'][-1]['seconds']:.1f}s")
    if only:
        return None
    return _write_tables(config, workdir, runs, publish)


def _write_tables(config, workdir: pathlib.Path, runs, publish: Optional[str]):
    finished = [(s, d, st) for s, d, st in runs if is_finished(workdir / "runs" / s.name)]
    if not finished:
        _log("no finished run yet: no tables")
        return None
    e = experiment_section(config)
    out_dir = workdir / str(e.report_dir)
    path = pilot_table.write(finished, workdir / "runs", out_dir, str(e.report_name),
                             clear_rise=float(_pilot_section(config).clear_rise),
                             planned=len(runs))
    _log(f"tables: {path} ({len(finished)} of {len(runs)} runs finished)")
    power_cfg = _pilot_section(config).get("power")
    written = [path, path.with_suffix(".json")]
    if power_cfg is not None:
        power_path = pilot_power.write(pilot_power.analyse(finished, workdir / "runs", power_cfg),
                                       out_dir / "tradeoff_pilot_power.md")
        written += [power_path, power_path.with_suffix(".json")]
        _log(f"power analysis: {power_path}")
    if publish:
        dest = pathlib.Path(publish)
        dest.mkdir(parents=True, exist_ok=True)
        for f in written:
            shutil.copy(f, dest / f.name)
        _log(f"published to {dest / path.name}")
    return path
