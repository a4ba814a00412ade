"""The trade-off grid as a plan: which runs (zero-shot, sampler x seed, the alpha sweep), in which
order, each run's training config, and which evaluations make a run finished."""
from __future__ import annotations

import dataclasses
from typing import Optional

import ml_collections

from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import entry
from hybrid_jax.study.runs import ZERO_SHOT

SAMPLERS = ("mono", "cross", "hybrid")


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


def experiment_section(config):
    if "experiment" not in config:
        raise InputError("config: no 'experiment' section (use configs/tradeoff.py)")
    return config.experiment


def _eval_specs(config) -> list[dict]:
    from hybrid_jax.evaluation import entry as eval_entry

    specs = eval_entry.eval_datasets(config)
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
    wanted = [str(n) for n in (experiment_section(config).get("sweep_datasets") or ())]
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
    name = str(experiment_section(config).dataset or specs[0]["name"])
    for s in specs:
        if name in (s["name"], eval_dir_name(s)):
            return eval_dir_name(s)
    raise InputError(f"experiment.dataset: {name!r} is not one of eval.datasets "
                     f"({', '.join(s['name'] for s in specs)})")


def plan(config) -> list[RunSpec]:
    """The runs of the grid, in execution order, without duplicates (hybrid at alpha 1 is the
    mono run and at alpha 0 the cross run: the sampler draws identical batches)."""
    e = experiment_section(config)
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
    if any(not 0.0 <= a < 1.0 for a in sweep_alphas):
        raise InputError(f"experiment.sweep_alphas: must lie in [0, 1) (alpha 1 is the mono "
                         f"run), got {sweep_alphas}")
    for seed in [int(s) for s in (e.get("sweep_seeds") or e.seeds)]:
        for a in sweep_alphas:
            spec = (RunSpec(f"cross-s{seed}", "cross", 0.0, seed, sweep=True) if a == 0.0 else
                    RunSpec(f"hybrid-a{a:g}-s{seed}", "hybrid", a, seed, sweep=True))
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
