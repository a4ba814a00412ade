"""Evaluating a run's model with the run's config: `--mode evaluate` (`evaluate_checkpoint`) and
the hook the training loop calls at its cadence and at the end (`run_evaluation`).

Both evaluate `config.eval.datasets` with hybrid_jax.evaluation.run.evaluate; every process
evaluates (they stay in step; local devices only) and process 0 writes the reports.
"""
from __future__ import annotations

import os
import time
from typing import Optional

import jax

from hybrid_jax.errors import InputError
from hybrid_jax.models import run_checkpoint
from hybrid_jax.models.from_config import load_model


def _log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


def eval_datasets(config) -> list:
    return [d.to_dict() if hasattr(d, "to_dict") else d for d in (config.eval.datasets or [])]


def cadence_datasets(config) -> list:
    """The datasets evaluated every eval.every_steps: those named in eval.every_datasets (all of
    eval.datasets when empty)."""
    names = [str(n) for n in (config.eval.get("every_datasets") or ())]  # config checks: known
    return [d for d in eval_datasets(config) if not names or str(d.get("name")) in names]


def run_evaluation(bundle, config, eval_dir: str, step: int, name: str, writer=None,
                   datasets: Optional[list] = None, cache_dir: Optional[str] = None) -> dict:
    """`bundle` on `datasets` (default config.eval.datasets); reports go to
    `eval_dir`/eval/<dataset>/, the embedding cache to `cache_dir` (default `eval_dir`) and the
    headline scalars to `writer` (metrics.jsonl, as eval/<dataset scalar>) when given; `name`
    (the model's, e.g. <workdir>@<step>) goes to the log line."""
    datasets = eval_datasets(config) if datasets is None else datasets
    if not datasets:
        return {}
    from hybrid_jax.data.splits import FoldRule
    from hybrid_jax.evaluation import run as eval_run  # lazily: only runs that evaluate need it

    t = time.time()
    results = eval_run.evaluate(bundle, datasets, eval_dir, config.eval,
                                write=jax.process_index() == 0,
                                folds=FoldRule.from_config(config.data), cache_dir=cache_dir)
    scalars = results.get("scalars", {})
    if writer is not None and scalars:
        writer.write(step, {f"eval/{k}": v for k, v in scalars.items()
                            if isinstance(v, (int, float))})
    _log(f"evaluation of {name} at step {step} ({time.time() - t:.1f}s): "
         + ", ".join(f"{k} {v:.4f}" for k, v in list(scalars.items())[:8]
                     if isinstance(v, (int, float))))
    return results


def evaluate_checkpoint(config, workdir) -> dict:
    """--mode evaluate: the dev-selected step of workdir (with train.select), else its latest
    checkpoint, else the pretrained model.  A checkpoint loads through its 'ckpt:' spec, on the
    architecture and towers it was saved with (whatever this config's model.tied says).
    `workdir`: checked by the caller (hybrid_jax.config.check_workdir)."""
    workdir = os.path.abspath(os.fspath(workdir))
    if not eval_datasets(config):
        raise InputError("eval.datasets: empty; name the datasets to evaluate on")
    steps_saved = run_checkpoint.saved_steps(workdir)
    best = run_checkpoint.best_step(workdir) if config.train.select != "none" else None
    if best is not None:
        step, name = best, f"{workdir}@{best}"
        pretrained = load_model(config, f"ckpt:{workdir}@best")
        _log(f"evaluating the dev-selected step {best} of {workdir}")
    elif steps_saved:
        step = steps_saved[-1]
        name = f"{workdir}@{step}"
        pretrained = load_model(config, f"ckpt:{name}")
        _log(f"evaluating {run_checkpoint.CHECKPOINT_DIR}/{step} of {workdir}")
    else:
        step, name = 0, config.model.spec
        pretrained = load_model(config)
        _log(f"no checkpoint in {workdir}: evaluating the pretrained model {config.model.spec}")
    bundle = pretrained.bundle(tied=not pretrained.towers)
    bundle.name = name
    return run_evaluation(bundle, config, workdir, step, name)
