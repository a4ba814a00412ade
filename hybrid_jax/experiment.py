"""The trade-off experiment driver: the sampler x seed grid, the zero-shot row, and the comparison.

    python -m hybrid_jax.experiment --config configs/tradeoff.py[:alpha_sweep] --workdir W
        [--max_runs N] [--only RUN[,RUN...]] [--report_only] [--dry_run] [--publish docs/]
        [--allow_mixed_code] [--config.a.b=...]

Runs, in order (zero-shot first, then seed by seed so a partial grid has whole seed groups):
  W/runs/zero-shot/            the starting model evaluated (train.evaluate_checkpoint)
  W/runs/<condition>-s<seed>/  train.train_and_evaluate with data.sampling, data.alpha, data.seed
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

Resumable: a run is finished when W/runs/<name>/eval/<dataset>/metrics.json exists for every
eval dataset; finished runs are skipped (logged as `skip <name>: finished`), an unfinished one
resumes from its latest checkpoint (train_and_evaluate does that). A run whose config.json differs
from the one this invocation would use (another step budget, learning rate, ...) stops the driver
before anything runs: mixing budgets in one comparison would be silent nonsense.  So does a run
with results (finished, or a checkpoint) made by other code than the code about to run (with
--report_only, or nothing left to run: other code than the grid's other runs), unless
--allow_mixed_code.

Then the analysis (hybrid_jax/evaluation/tradeoff.py) over the finished runs writes
W/<experiment.report_dir>/<experiment.report_name> with its PNGs, tables and copies of the
metrics under W/<report_dir>/<report stem>/; `--publish DIR` copies both into DIR (e.g. docs/).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import time
from typing import Optional, Sequence

import ml_collections
from absl import flags

from hybrid_jax import cli, code_version, grid_checks
from hybrid_jax.errors import InputError
from hybrid_jax.models.run_checkpoint import saved_steps

SAMPLERS = ("mono", "cross", "hybrid")
ZERO_SHOT = grid_checks.ZERO_SHOT
FLAGS = flags.FLAGS
cli.define_config_flags("configs/tradeoff.py")
flags.DEFINE_integer("max_runs", 0, "Train/evaluate at most this many unfinished runs in this "
                     "invocation (0 = all), then write the report on the finished ones.")
flags.DEFINE_list("only", [], "Run only these planned runs (names as --dry_run prints them) "
                  "and write no report: one slice of a grid run in parallel, each slice in its own "
                  "workdir; move the finished runs/<name>/ into one workdir, then --report_only.")
flags.DEFINE_bool("report_only", False, "Run nothing: write the report on the finished runs.")
flags.DEFINE_bool("dry_run", False, "Print the plan (each run and whether it is finished, "
                  "half-done or to do) and stop.")
flags.DEFINE_string("publish", None, "Also copy the report, its PNGs and metrics into this "
                    "directory (e.g. docs/).")
flags.DEFINE_bool("allow_mixed_code", False, "Resume or report on runs made by other code "
                  "than the code about to run (or than each other); each run's "
                  "code_version.json still says which.")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    name: str
    sampler: str              # 'zero-shot' | 'mono' | 'cross' | 'hybrid'
    alpha: Optional[float]    # share of monolingual batches (mono 1, cross 0); None: zero-shot
    seed: Optional[int]
    sweep: bool = False       # an alpha-sweep-only run (experiment.sweep_alphas)

    @property
    def condition(self) -> str:
        if self.sampler == "hybrid":
            return f"hybrid-a{self.alpha:g}"
        return self.sampler


def _log(message: str) -> None:
    print(f"[experiment] {message}", flush=True)


def _exp(config):
    if "experiment" not in config:
        raise InputError("config: no 'experiment' section (use configs/tradeoff.py)")
    return config.experiment


def _eval_specs(config) -> list[dict]:
    from hybrid_jax import train

    specs = train.eval_datasets(config)
    if not specs:
        raise InputError("eval.datasets: empty; the experiment needs a held-out evaluation set")
    if not all(s.get("name") for s in specs):
        raise InputError("eval.datasets: every entry needs a 'name' (the run's eval/<name>/)")
    return specs


def eval_dir_name(spec: dict) -> str:
    """The folder under <run>/eval/ the evaluator writes for a dataset spec: its name."""
    return str(spec["name"])


def dataset_names(config) -> list[str]:
    """Evaluation folder names of every eval dataset (what makes a run finished)."""
    return [eval_dir_name(s) for s in _eval_specs(config)]


def sweep_dataset_names(config) -> list[str]:
    """The eval datasets of the sweep-only runs: experiment.sweep_datasets (all when empty)."""
    names = dataset_names(config)
    wanted = [str(n) for n in (_exp(config).get("sweep_datasets") or ())]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        raise InputError(f"experiment.sweep_datasets: {unknown} not in eval.datasets "
                         f"({', '.join(names)})")
    return [n for n in names if not wanted or n in wanted]


def run_datasets(config, specs) -> dict[str, list[str]]:
    """run name -> the eval folders that make it finished."""
    everything, sweep = dataset_names(config), sweep_dataset_names(config)
    return {s.name: sweep if s.sweep else everything for s in specs}


def analysed_dataset(config) -> str:
    """Evaluation folder of experiment.dataset (a spec name; '' = the first eval dataset)."""
    specs = _eval_specs(config)
    name = str(_exp(config).dataset or specs[0]["name"])
    for s in specs:
        if name in (s["name"], eval_dir_name(s)):
            return eval_dir_name(s)
    raise InputError(f"experiment.dataset: {name!r} is not one of eval.datasets "
                     f"({', '.join(s['name'] for s in specs)})")


def plan(config) -> list[RunSpec]:
    """The runs of the grid, in execution order, without duplicates (hybrid at alpha 1 is the
    mono run and at alpha 0 the cross run: the sampler draws identical batches)."""
    e = _exp(config)
    samplers = [str(s) for s in e.samplers]
    bad = [s for s in samplers if s not in SAMPLERS]
    if bad or not samplers:
        raise InputError(f"experiment.samplers: {bad or 'empty'}; choose from "
                         f"{', '.join(SAMPLERS)}")
    seeds = [int(s) for s in e.seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"experiment.seeds: need distinct seeds, got {list(e.seeds)}")
    alphas = [float(a) for a in (e.alphas or (e.alpha,))]
    if any(not 0.0 <= a <= 1.0 for a in alphas):
        raise InputError(f"experiment.alphas / alpha: must lie in [0, 1], got {alphas}")
    runs = [RunSpec(ZERO_SHOT, ZERO_SHOT, None, None)] if e.zero_shot else []
    for seed in seeds:
        for sampler in samplers:
            for a in (alphas if sampler == "hybrid" else [None]):
                if sampler == "mono" or a == 1.0:
                    spec = RunSpec(f"mono-s{seed}", "mono", 1.0, seed)
                elif sampler == "cross" or a == 0.0:
                    spec = RunSpec(f"cross-s{seed}", "cross", 0.0, seed)
                else:
                    spec = RunSpec(f"hybrid-a{a:g}-s{seed}", "hybrid", a, seed)
                if spec not in runs:
                    runs.append(spec)
    # Sweep-only alphas after the whole grid: a partial sweep never delays the main comparison.
    sweep_alphas = [float(a) for a in (e.get("sweep_alphas") or ())]
    if any(not 0.0 < a < 1.0 for a in sweep_alphas):
        raise InputError(f"experiment.sweep_alphas: must lie in (0, 1) (alphas 0 and 1 are the "
                         f"cross and mono runs), got {sweep_alphas}")
    for seed in [int(s) for s in (e.get("sweep_seeds") or e.seeds)]:
        for a in sweep_alphas:
            spec = RunSpec(f"hybrid-a{a:g}-s{seed}", "hybrid", a, seed, sweep=True)
            if all(r.name != spec.name for r in runs):
                runs.append(spec)
    return runs


def run_config(config, spec: RunSpec) -> ml_collections.ConfigDict:
    """The training config of one run: the experiment's config without its `experiment` section,
    with the sampler, alpha and seed set."""
    d = config.to_dict()
    d.pop("experiment", None)
    c = ml_collections.ConfigDict(d)
    if spec.sweep:
        keep = set(sweep_dataset_names(config))
        c.eval.datasets = tuple(d for d in _eval_specs(config) if eval_dir_name(d) in keep)
        named = tuple(c.eval.get("every_datasets") or ())
        c.eval.every_datasets = tuple(n for n in named if n in keep)
        if named and not c.eval.every_datasets:  # its curve datasets are all left out
            c.eval.every_steps = 0
    if spec.sampler != ZERO_SHOT:
        c.seed = spec.seed
        c.data.seed = spec.seed
        c.data.sampling = spec.sampler
        if spec.sampler == "hybrid":
            c.data.alpha = spec.alpha
    return c


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
    from hybrid_jax import train

    run_dir.mkdir(parents=True, exist_ok=True)
    started, status = time.time(), "failed"
    num_steps = None if spec.sampler == ZERO_SHOT else int(config.train.num_steps)
    code = code_version.record(run_dir, resumed=bool(saved_steps(run_dir)))
    try:
        if spec.sampler == ZERO_SHOT:
            train.save_config(config, str(run_dir))
            train.evaluate_checkpoint(config, run_dir)
            status = "finished"
        else:
            result = train.train_and_evaluate(config, run_dir)
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
    from hybrid_jax.evaluation import tradeoff

    e = _exp(config)
    finished = [s for s in specs
                if grid_checks.is_finished(workdir / "runs" / s.name, datasets[s.name])]
    if not finished:
        _log("no finished run yet: no report")
        return None
    out_dir = workdir / str(e.report_dir)
    if e.get("protocol"):  # the second edition: both benchmarks, seed-aware verdicts
        return _write_second_edition(config, workdir, specs, finished, out_dir, publish)
    records = [tradeoff.RunRecord(name=s.name, condition=s.condition, sampler=s.sampler,
                                  alpha=s.alpha, seed=s.seed, run_dir=workdir / "runs" / s.name)
               for s in finished]
    missing = [s.name for s in specs if s not in finished]
    path = tradeoff.write_report(records, dataset=analysed_dataset(config), out_dir=out_dir,
                                 report_name=str(e.report_name), k=int(config.eval.k),
                                 high_resource=[str(x) for x in e.high_resource],
                                 primary_alpha=float(e.alpha), n_bootstrap=int(e.n_bootstrap),
                                 bootstrap_seed=int(e.bootstrap_seed),
                                 resample_seeds=bool(e.resample_seeds), missing=missing,
                                 config=json.loads(config.to_json_best_effort()),
                                 model=str(config.model.spec))
    _log(f"report: {path}" + (f" ({len(missing)} run(s) not finished yet)" if missing else ""))
    if publish:
        dest = tradeoff.publish(out_dir, str(e.report_name), publish)
        _log(f"published to {dest}")
    return path


def _write_second_edition(config, workdir: pathlib.Path, specs: list, finished: list,
                          out_dir: pathlib.Path, publish: Optional[str]) -> pathlib.Path:
    from hybrid_jax.evaluation import tradeoff, tradeoff2

    e = _exp(config)
    runs = [tradeoff2.Run(s.name, s.condition, s.seed, s.alpha, workdir / "runs" / s.name)
            for s in finished]
    path = tradeoff2.write_report(
        runs, benchmarks=dataset_names(config), out_dir=out_dir, planned=len(specs),
        report_name=str(e.report_name), high_resource=[str(x) for x in e.high_resource],
        primary=f"hybrid-a{float(e.alpha):g}", k=int(config.eval.k), delta=float(e.delta),
        n_resamples=int(e.n_bootstrap), bootstrap_seed=int(e.bootstrap_seed),
        sweep_seeds=[int(s) for s in (e.get("sweep_seeds") or e.seeds)],
        presentation={k: e[k] for k in ("title", "see_also", "deviations", "machine",
                                        "cpu_cores") if e.get(k) is not None})
    _log(f"report: {path} ({len(finished)} of {len(specs)} runs finished)")
    if publish:
        _log(f"published to {tradeoff.publish(out_dir, str(e.report_name), publish)}")
    return path


def run_experiment(config, workdir, *, max_runs: int = 0, report_only: bool = False,
                   publish: Optional[str] = None, dry_run: bool = False,
                   allow_mixed_code: bool = False,
                   only: Sequence[str] = ()) -> Optional[pathlib.Path]:
    """Runs the unfinished runs of the grid (at most `max_runs`, 0 = all; with `only`, just
    those), then writes the report on every finished run (not with `only`). Returns the report's
    path (None when no run has finished or `only` was given)."""
    from hybrid_jax import config_checks

    workdir = pathlib.Path(config_checks.check_workdir(workdir))
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
        grid_checks.check_protocol(_exp(config))
    current = code_version.current() if todo and not report_only else None
    made = grid_checks.recorded_code_versions(workdir, specs, datasets)
    if not allow_mixed_code:
        grid_checks.check_code_versions(workdir, made, current)
    elif len({grid_checks.made_by(v) for v in [*made.values(), *([[current]] if current else [])]}) > 1:
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


@cli.program
def main(argv):
    del argv
    if FLAGS.config is None:
        raise InputError("--config is required (e.g. --config configs/tradeoff.py)")
    if not FLAGS.workdir:
        raise InputError("--workdir is required")
    if FLAGS.max_runs < 0:
        raise InputError(f"--max_runs: must be >= 0, got {FLAGS.max_runs}")
    run_experiment(FLAGS.config, FLAGS.workdir, max_runs=FLAGS.max_runs,
                   report_only=FLAGS.report_only, publish=FLAGS.publish, dry_run=FLAGS.dry_run,
                   allow_mixed_code=FLAGS.allow_mixed_code, only=FLAGS.only)


if __name__ == "__main__":
    cli.run(main)
