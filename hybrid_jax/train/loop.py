"""The training loop: pretrained weights -> contrastive fine-tuning -> checkpoints and evaluation.

`train_and_evaluate(config, workdir)` is the whole run, top to bottom: check the config, set up
(or resume, run_setup.py), train to the step budget with the cadences of cadence.py, then evaluate
the final (or dev-selected) model.  Everything the run writes lives under `workdir`:
config.json, code_version.json, metrics.jsonl, tensorboard/, checkpoints/, frozen_params/,
best/, eval_steps/, eval/.
"""
from __future__ import annotations

import gc
from typing import Optional

import jax

from hybrid_jax import code_version
from hybrid_jax import config as schema
from hybrid_jax.evaluation import entry as eval_entry
from hybrid_jax.models import run_checkpoint
from hybrid_jax.train import compilation_cache, memory_hooks, run_setup
from hybrid_jax.train.cadence import StepLoop
from hybrid_jax.train.guards import PreemptionFlag
from hybrid_jax.train.metrics_writer import MetricsWriter
from hybrid_jax.train.progress import log
from hybrid_jax.train.run_setup import Run, current_bundle


def train_and_evaluate(config, workdir, *, evaluate: bool = True,
                       stop_at: Optional[int] = None) -> dict:
    """The whole run: set up (or resume), train to the step budget, evaluate at the cadence and
    at the end (when `evaluate` and config.eval.datasets is set).  Returns final metrics.
    `stop_at` ends this invocation early (a checkpoint is saved) without changing the schedule."""
    workdir = schema.check_workdir(workdir)
    schema.validate_config(config)
    compilation_cache.enable(config)
    run = run_setup.setup(config, workdir)  # a failure here leaves the workdir as it was
    if jax.process_index() == 0:
        run_setup.save_config(config, workdir)
        code_version.record(workdir, resumed=run.start_step > 0)
    writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
    try:
        every = int(config.eval.every_steps) if evaluate else 0
        metrics = train(run, writer, evaluate_every=every, stop_at=stop_at)
        step = int(jax.device_get(run.runner.unreplicate(run.state.step)))
        if evaluate and step >= int(config.train.num_steps) and eval_entry.eval_datasets(config):
            bundle = _final_model(run, step)
            _release_training(run)
            results = eval_entry.run_evaluation(bundle, config, workdir, step,
                                                f"{workdir}@{step}", writer)
            if results:
                metrics = dict(metrics, eval=results)
        return metrics
    finally:
        writer.close()
        run.checkpointer.close()


def train(run: Run, writer: MetricsWriter, *, evaluate_every: int = 0,
          stop_at: Optional[int] = None) -> dict:
    """Steps from run.start_step to config.train.num_steps (or `stop_at`): logs, checkpoints,
    evaluates and selects at their cadences, saves the final state.  Returns the last logged
    metrics."""
    c = run.config
    num_steps = int(c.train.num_steps)
    end = num_steps if stop_at is None else min(int(stop_at), num_steps)
    step = run.start_step
    if step >= end:
        log(f"step {step}: nothing to train (train.num_steps = {num_steps})")
        return {}
    log(f"training steps {step}..{end} of {num_steps} on {run.runner.num_devices} "
        f"{jax.devices()[0].platform} device(s) ({c.parallelism}), global batch "
        f"{int(c.data.global_batch_size)}")
    loop, preempted = StepLoop(run, writer, evaluate_every, end), False
    if step == 0 and run.selector and bool(c.train.get("select_at_start", False)):
        loop.select(0)  # the starting model is a candidate (train.select_at_start)
    with PreemptionFlag() as preemption, memory_hooks.step_loop():  # same-shaped steps
        try:
            while step < end:
                step = loop.step(step)
                if preemption.should_stop(step) and step < end:
                    preempted = True
                    break
                loop.cadences(step)
            if preempted:
                loop.save(step, force=True)
            else:
                loop.finish(step)
        finally:
            run.checkpointer.wait()
    if preempted:
        reason = f"signal {preemption.signum}" if preemption.signum else "preemption notice"
        log(f"preempted ({reason}): saved {run_checkpoint.CHECKPOINT_DIR}/"
            f"{step} in {run.workdir}; rerun the same command to continue")
        return dict(loop.last, preempted_at=step)
    return loop.last


def _final_model(run: Run, step: int):
    """What the final evaluation scores: the dev-selected step when selection is on, else the
    last step's params."""
    best = run_checkpoint.best_step(run.workdir) if run.config.train.select != "none" else None
    if best is None:
        return current_bundle(run, f"{run.workdir}@{step}")
    log(f"final evaluation on the dev-selected step {best} (of {step})")
    # The selected step's trained part on the run's own frozen part (a LoRA run writes no
    # frozen_params/: its frozen part is the base model, which the run holds).
    params = run_setup.model_params(
        run, run_checkpoint.restore_trainable(run.workdir, run_checkpoint.BEST))
    bundle = run.pretrained.bundle(tied=bool(run.config.model.tied), params=params)
    bundle.name = f"{run.workdir}@{best}"
    return bundle


def _release_training(run: Run) -> None:
    """The final evaluation needs only its bundle: the training state, the frozen copies, the
    data iterator and the dev scorer go first, so that their memory is free while it encodes."""
    run.state = run.frozen = run.frozen_host = run.iterator = run.selector = None
    gc.collect()
