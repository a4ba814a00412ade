"""The trade-off study's driver: the sampler x seed grid, the zero-shot row, and the report.

    python -m hybrid_jax.study --config configs/tradeoff.py[:alpha_sweep] --workdir W
        [--max_runs N] [--only RUN[,RUN...]] [--report_only] [--dry_run] [--publish docs/]
        [--allow_mixed_code] [--config.a.b=...]

Runs, in order (zero-shot first, then seed by seed so a partial grid has whole seed groups):
  W/runs/zero-shot/            the starting model evaluated (evaluation.entry.evaluate_checkpoint)
  W/runs/<condition>-s<seed>/  loop.train_and_evaluate with data.sampling, data.alpha, data.seed
                               and seed set; conditions: mono, cross, hybrid-a<alpha>
Optional experiment fields (configs/tradeoff2.py): `sweep_alphas` / `sweep_seeds` add hybrid runs
for the alpha sweep after the whole grid, evaluated only on `sweep_datasets` (their run configs
carry that eval.datasets); `protocol` / `protocol_sha256` pin a pre-registered protocol file:
nothing trains while the file hashes otherwise.
Each run's workdir is an ordinary training workdir (config.json, metrics.jsonl, checkpoints/,
eval/<dataset>/) plus timing.json (wall time, status and code version of every invocation that
worked on it: finished, preempted, failed, interrupted) and code_version.json (the distinct code
versions that made it, see hybrid_jax/code_version.py: git commit and dirty state, or the package
version). A preempted run (SIGTERM: train saves a checkpoint and returns) or a failing one (e.g.
guards.TrainingDiverged) stops the driver; rerunning resumes.

Every run of a grid reads its training data from one corpus cache, W/corpora (prepared once,
corpus_cache.shared_cache), unless data.store_cache or $HYBRID_JAX_CORPUS_CACHE names another.
Resumable: a run is finished when W/runs/<name>/eval/<dataset>/metrics.json exists for every
eval dataset; finished runs are skipped (logged as `skip <name>: finished`), an unfinished one
resumes from its latest checkpoint (train_and_evaluate does that). A run whose config.json differs
from the one this invocation would use (another step budget, learning rate, ...) stops the driver
before anything runs: mixing budgets in one comparison would be silent nonsense.  So does a run
with results (finished, or a checkpoint) made by other code than the code about to run (with
--report_only, or nothing left to run: other code than the grid's other runs), unless
--allow_mixed_code.

Then the report (report.py, for the edition experiment.edition names: editions.py) over the
finished runs writes W/<experiment.report_dir>/<experiment.report_name> with its figures and data
files under W/<report_dir>/<report stem>/; `--publish DIR` copies both into DIR (e.g. docs/).
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import time
from typing import Optional, Sequence

from hybrid_jax import code_version, config as config_schema
from hybrid_jax.data import corpus_cache
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import entry
from hybrid_jax.models.run_checkpoint import saved_steps
from hybrid_jax.study import editions, grid_checks, report
from hybrid_jax.study.plan import (ZERO_SHOT, RunSpec, analysed_dataset, experiment_section, plan,
                                   run_config, run_datasets)
from hybrid_jax.study.runs import Run
from hybrid_jax.train import loop, run_setup


def _log(message: str) -> None:
    print(f"[experiment] {message}", flush=True)


def _write_json(path: pathlib.Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def record_timing(run_dir: pathlib.Path, spec: RunSpec, started: float, status: str,
                  num_steps: Optional[int], code: Optional[dict] = None) -> dict:
    """Appends this invocation (with its code version, default: this process's) to
    run_dir/timing.json; wall_seconds sums every invocation."""
    path = run_dir / "timing.json"
    timing = json.loads(path.read_text()) if path.is_file() else {"run": spec.name,
                                                                   "sessions": []}
    seconds = time.time() - started
    code = code_version.identity(code or code_version.current())
    timing["sessions"].append({
        "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "seconds": round(seconds, 2), "status": status,
        "code_version": dict(code, label=code_version.label(code))})
    timing.update(wall_seconds=round(sum(s["seconds"] for s in timing["sessions"]), 2),
                  finished=status == "finished", num_steps=num_steps,
                  what="evaluate" if spec.sampler == ZERO_SHOT else "train_and_evaluate")
    _write_json(path, timing)
    return timing


def execute(spec: RunSpec, config, run_dir: pathlib.Path) -> dict:
    from hybrid_jax.evaluation import entry as eval_entry
    from hybrid_jax.train import loop, run_setup

    run_dir.mkdir(parents=True, exist_ok=True)
    started, status = time.time(), "failed"
    num_steps = None if spec.sampler == ZERO_SHOT else int(config.train.num_steps)
    code = code_version.record(run_dir, resumed=bool(saved_steps(run_dir)))
    # run_dir is <grid workdir>/runs/<name>: every run of a grid reads one prepared corpus
    shared = corpus_cache.shared_cache(run_dir.parent.parent / "corpora")
    try:
        with shared:
            if spec.sampler == ZERO_SHOT:
                run_setup.save_config(config, str(run_dir))
                eval_entry.evaluate_checkpoint(config, run_dir)
                status = "finished"
            else:
                result = loop.train_and_evaluate(config, run_dir)
                # SIGTERM (preemption): train saved a checkpoint and returned before evaluating.
                preempted = isinstance(result, dict) and "preempted_at" in result
                status = "preempted" if preempted else "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        timing = record_timing(run_dir, spec, started, status, num_steps, code)
    return timing


def _run_all(todo: list, configs: dict, workdir: pathlib.Path, num_steps: int) -> bool:
    """Runs `todo` in order; False when a run was preempted (the driver stops there)."""
    for i, s in enumerate(todo, 1):
        run_dir = workdir / "runs" / s.name
        _log(f"run {i}/{len(todo)}: {s.name} ("
             + ("zero-shot evaluation" if s.sampler == ZERO_SHOT else
                f"sampling={s.sampler}, alpha={s.alpha:g}, seed={s.seed}, {num_steps} steps")
             + ")")
        timing = execute(s, configs[s.name], run_dir)
        if timing["sessions"][-1]["status"] == "preempted":
            _log(f"{s.name}: preempted, checkpoint saved; stopping (rerun the same command to "
                 f"resume)")
            return False
        _log(f"{s.name}: done in {timing['sessions'][-1]['seconds']:.1f}s "
             f"(all sessions {timing['wall_seconds']:.1f}s)")
    return True


def _write_report(config, workdir: pathlib.Path, specs: list, datasets: dict,
                  publish: Optional[str]) -> Optional[pathlib.Path]:
    """The report on every finished run (None when none has finished)."""
    e = experiment_section(config)
    finished = [s for s in specs
                if grid_checks.is_finished(workdir / "runs" / s.name, datasets[s.name])]
    if not finished:
        _log("no finished run yet: no report")
        return None
    edition = editions.named(str(e.get("edition") or "first"))
    runs = [Run(s.name, s.condition, s.seed, s.alpha, workdir / "runs" / s.name)
            for s in finished]
    out_dir = workdir / str(e.report_dir)
    path = report.write_report(edition, runs, out_dir=out_dir, report_name=str(e.report_name),
                               planned=len(specs),
                               parameters=edition.parameters(config, specs, finished),
                               presentation=editions.presentation(e))
    _log(f"report: {path} ({len(finished)} of {len(specs)} runs finished)")
    if publish:
        _log(f"published to {report.publish(out_dir, str(e.report_name), publish)}")
    return path


def run_experiment(config, workdir, *, max_runs: int = 0, report_only: bool = False,
                   publish: Optional[str] = None, dry_run: bool = False,
                   allow_mixed_code: bool = False,
                   only: Sequence[str] = ()) -> Optional[pathlib.Path]:
    """Runs the unfinished runs of the grid (at most `max_runs`, 0 = all; with `only`, just
    those), then writes the report on every finished run (not with `only`). Returns the report's
    path (None when no run has finished or `only` was given)."""
    workdir = pathlib.Path(config_schema.check_workdir(workdir))
    analysed_dataset(config)  # a wrong experiment.dataset stops before anything runs
    specs = plan(config)
    unknown = sorted(set(only) - {s.name for s in specs})
    if unknown:
        raise InputError(f"--only: {unknown} not in the plan "
                         f"({', '.join(s.name for s in specs)})")
    datasets = run_datasets(config, specs)
    configs = {s.name: run_config(config, s) for s in specs}
    grid_checks.check_configs(workdir, specs, configs)
    todo = [s for s in specs
            if not grid_checks.is_finished(workdir / "runs" / s.name, datasets[s.name])]
    if todo and not report_only and not dry_run:
        grid_checks.check_protocol(experiment_section(config))
    current = code_version.current() if todo and not report_only else None
    made = grid_checks.recorded_code_versions(workdir, specs, datasets)
    if not allow_mixed_code:
        grid_checks.check_code_versions(workdir, made, current)
    elif len({grid_checks.made_by(v)
              for v in [*made.values(), *([[current]] if current else [])]}) > 1:
        _log("--allow_mixed_code: these runs are made by different code; each run's "
             "code_version.json says which")
    if dry_run:
        for s in specs:
            state = grid_checks.run_state(workdir / "runs" / s.name, datasets[s.name])
            code = f" ({grid_checks.made_by(made[s.name])})" if state != "to do" else ""
            _log(f"{s.name}: {state}{code}")
        return None
    _log(f"{len(specs)} runs planned, {len(specs) - len(todo)} finished, {len(todo)} to do"
         + (" (--report_only: running none)" if report_only and todo else ""))
    for s in specs:
        if s not in todo:
            _log(f"skip {s.name}: finished (runs/{s.name}/eval/{datasets[s.name][0]}/"
                 f"metrics.json)")
    if only:
        _log(f"--only: running {', '.join(s.name for s in todo if s.name in only) or 'none'}; "
             f"no report")
        todo = [s for s in todo if s.name in only]
    todo = [] if report_only else (todo[:max_runs] if max_runs > 0 else todo)
    if not _run_all(todo, configs, workdir, int(config.train.num_steps)) or only:
        return None
    return _write_report(config, workdir, specs, datasets, publish)
