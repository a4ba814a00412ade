"""The training loop: pretrained weights -> contrastive fine-tuning -> checkpoints and evaluation.

`train_and_evaluate(config, workdir)` is the whole run.  Resume order: the latest checkpoint in
`workdir`, else the pretrained weights named by `config.model.spec`.  Everything the run writes
lives under `workdir`: config.json, metrics.jsonl, tensorboard/, checkpoints/, frozen_params/,
eval/.  Config checks live in config_checks.py, the stop conditions (divergence, preemption) in
guards.py.
"""
from __future__ import annotations

import dataclasses
import gc
import os
import time
from typing import Any, Optional

import jax
import numpy as np

from hybrid_jax import (checkpointing, code_version, config_checks, host_memory, losses,
                        metrics_writer, optim, selection, steps)
from hybrid_jax.errors import InputError
from hybrid_jax.guards import PreemptionFlag
from hybrid_jax.progress import Pending, Progress, log
from hybrid_jax.models import run_checkpoint


# ----------------------------------------------------------------------------- model and data


def load_model(config, spec: Optional[str] = None):
    """The pretrained model named by `spec` (default config.model.spec) with the run's overrides."""
    from hybrid_jax.models.pretrained import load_pretrained

    overrides: dict[str, Any] = {"compute_dtype": config.model.compute_dtype,
                                 "remat": str(config.model.get("remat", "none"))}
    if float(config.model.dropout) >= 0:
        overrides.update(hidden_dropout=float(config.model.dropout),
                         attention_dropout=float(config.model.dropout))
    return load_pretrained(spec or config.model.spec, **overrides)


def make_train_iterator(config, pretrained, workdir: str):
    """The run's batches; mined hard negatives are mined with the starting model (or
    data.mining_model) once and cached in the workdir."""
    num_steps = int(config.train.num_steps)
    if config.data.synthetic:
        from hybrid_jax.data.synthetic import SyntheticIterator
        return SyntheticIterator(config.data, pretrained.config.vocab_size, seed=config.data.seed,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
    from hybrid_jax.data import pipeline

    return pipeline.make_train_iterator(
        config.data, pretrained.tokenizer, pretrained.prefixes.get("query", ""),
        pretrained.prefixes.get("passage", ""), num_steps=num_steps,
        process_index=jax.process_index(), process_count=jax.process_count(),
        mining_model=pretrained, workdir=workdir)


# ----------------------------------------------------------------------------- run pieces


def save_config(config, workdir: str) -> None:
    """workdir/config.json; a different earlier config is kept as config.<n>.json."""
    path = os.path.join(workdir, "config.json")
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if old == text:
            return
        n = 1
        while os.path.exists(os.path.join(workdir, f"config.{n}.json")):
            n += 1
        os.replace(path, os.path.join(workdir, f"config.{n}.json"))
    with open(path, "w") as f:
        f.write(text)


@dataclasses.dataclass
class Run:
    """Everything a training run holds between steps."""
    config: Any
    workdir: str
    pretrained: Any
    runner: steps.Runner
    state: Any                # in the runner's layout
    frozen: Any               # in the runner's layout
    frozen_host: Any
    checkpointer: checkpointing.Checkpointer
    iterator: Any
    start_step: int
    selector: Optional[selection.Selector] = None  # dev selection (train.select)


def setup(config, workdir: str, pretrained=None) -> Run:
    devices = config_checks.devices(config)
    if pretrained is None:
        t = time.time()
        pretrained = load_model(config)
        log(f"model {config.model.spec}: {pretrained.config.num_layers} layers, hidden "
             f"{pretrained.config.hidden_size} ({time.time() - t:.1f}s to load)")
    from hybrid_jax.models.dual_encoder import DualEncoder

    tied = bool(config.model.tied)
    module = DualEncoder(pretrained.config, tied=tied)
    tx, schedule = optim.make_optimizer(config.optim, int(config.train.num_steps))
    full = {"model": pretrained.dual_params(tied), "loss": losses.init_loss_params(config.loss)}
    full = jax.tree.map(np.asarray, full)
    trainable, frozen = optim.split_params(full, optim.frozen_predicate(config.optim))
    host_state = steps.create_state(trainable, tx)

    iterator = make_train_iterator(config, pretrained, workdir)  # bad data stops before any write
    selector = (selection.Selector(config, pretrained, workdir)
                if config.train.select != "none" else None)
    checkpointer = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                              async_save=bool(config.train.async_checkpointing))
    start_step = 0
    latest = checkpointer.latest_step()
    if latest is not None:
        host_state, data_state = checkpointer.restore(latest, host_state)
        if data_state is not None:
            iterator.set_state(data_state)
        start_step = int(host_state.step)
        log(f"resuming from {checkpointer.directory}/{latest}")
    else:  # every process: an orbax save is collective (process 0 writes the numpy arrays)
        checkpointing.save_frozen(workdir, frozen)

    runner = steps.make_runner(config.parallelism, module, tx, schedule, config.loss,
                               devices=devices, seed=int(config.seed),
                               prng_impl=config.train.prng_impl,
                               grad_accum_steps=int(config.optim.grad_accum_steps),
                               cpu_ynnpack_dots=bool(config.train.get("cpu_ynnpack_dots", True)))
    state = runner.replicate(host_state)
    del host_state
    # Loading and dequantising the weights, tokenizing and mining leave freed memory resident:
    # handed back here (demo: 1.88 GB resident after set-up -> 1.35-1.46 GB; the first step's
    # peak did not move measurably, the compiler and the step reuse such memory anyway).
    gc.collect()
    host_memory.return_free_memory()
    # The run's weights now live in `state` and `frozen`: it keeps the model without its host copy.
    return Run(config, workdir, pretrained.without_weights(), runner, state,
               runner.place_read_only(frozen), frozen, checkpointer, iterator, start_step, selector)


def model_params(run: Run, trainable=None):
    """Current dual-encoder params (trained + frozen) as one tree; `trainable`: the run's
    trainable params already taken out of the runner's layout."""
    if trainable is None:
        trainable = run.runner.unreplicate(run.state.params)
    trainable = jax.device_get(trainable)
    # On device once, so evaluation's jitted encoder does not re-send the table every batch.
    return jax.device_put(optim.merge_params(trainable, run.frozen_host)["model"])


def current_bundle(run: Run, name: Optional[str] = None, trainable=None):
    """The run's current params as an encoding bundle (named `name` when given)."""
    bundle = run.pretrained.bundle(tied=bool(run.config.model.tied),
                                   params=model_params(run, trainable))
    if name is not None:
        bundle.name = name
    return bundle


def eval_datasets(config) -> list:
    return [d.to_dict() if hasattr(d, "to_dict") else d for d in (config.eval.datasets or [])]


def cadence_datasets(config) -> list:
    """The datasets evaluated every eval.every_steps: those named in eval.every_datasets (all of
    eval.datasets when empty)."""
    names = [str(n) for n in (config.eval.get("every_datasets") or ())]  # config_checks: known
    return [d for d in eval_datasets(config) if not names or str(d.get("name")) in names]


def run_evaluation(run_or_bundle, config, eval_dir: str, step: int, name: str,
                   writer: Optional[metrics_writer.MetricsWriter] = None,
                   datasets: Optional[list] = None, cache_dir: Optional[str] = None) -> dict:
    """Evaluation hook: hybrid_jax.evaluation.run.evaluate on `datasets` (default
    config.eval.datasets); reports go to `eval_dir`/eval/<dataset>/, the embedding cache to
    `cache_dir` (default `eval_dir`) and headline scalars to metrics.jsonl (as eval/<name>)."""
    datasets = eval_datasets(config) if datasets is None else datasets
    if not datasets:
        return {}
    from hybrid_jax.data.splits import FoldRule
    from hybrid_jax.evaluation import run as eval_run  # lazily: only runs that evaluate need it

    bundle = run_or_bundle
    if isinstance(run_or_bundle, Run):
        bundle = current_bundle(run_or_bundle, name)
    t = time.time()
    # Every process evaluates (they stay in step; local devices only), process 0 writes.
    results = eval_run.evaluate(bundle, datasets, eval_dir, config.eval,
                                write=jax.process_index() == 0,
                                folds=FoldRule.from_config(config.data), cache_dir=cache_dir)
    scalars = results.get("scalars", {})
    if writer is not None and scalars:
        writer.write(step, {f"eval/{k}": v for k, v in scalars.items()
                            if isinstance(v, (int, float))})
    log(f"evaluation at step {step} ({time.time() - t:.1f}s): "
         + ", ".join(f"{k} {v:.4f}" for k, v in list(scalars.items())[:8]
                     if isinstance(v, (int, float))))
    return results


def _due(step: int, every: int, end: int) -> bool:
    """A cadence (every N steps) falls on `step`; the last step has its own handling."""
    return bool(every) and step % every == 0 and step < end


class _Loop:
    """One invocation's step loop: the step itself, then each cadence (log, checkpoint,
    evaluation, dev selection).  Anything that reads the state first checks every pending step
    for non-finite values, so a diverged model is never saved, evaluated or selected."""

    def __init__(self, run: Run, writer, evaluate_every: int, end: int):
        c = run.config
        self.run, self.writer, self.end = run, writer, end
        self.evaluate_every = evaluate_every
        self.pending = Pending(run, run.start_step + 1)
        self.progress = Progress(int(c.train.num_steps), end, int(c.data.global_batch_size))
        self.last_saved = run.checkpointer.latest_step()
        self.selector = run.selector
        self.last: dict = {}

    def step(self, step: int) -> int:
        run, c = self.run, self.run.config
        batch = next(run.iterator)
        if step == run.start_step:
            config_checks.check_first_batch(batch, c)
        run.state, metrics = run.runner(run.state, run.frozen, run.runner.shard_batch(batch))
        step += 1
        self.progress.steps += 1
        self.pending.add(metrics, batch.get("example_id"))
        if step == run.start_step + 1:
            jax.block_until_ready(metrics)
            self.progress.first_step_done(step)
        if step % int(c.train.log_every) == 0 or step == self.end:
            self.last = self.progress.log(step, self.pending.take_checked(), self.writer)
        return step

    def cadences(self, step: int) -> None:
        c = self.run.config
        save = _due(step, int(c.train.checkpoint_every), self.end)
        evaluate = _due(step, self.evaluate_every, self.end)
        select = bool(self.selector) and _due(step, int(c.train.select_every), self.end)
        if not (save or evaluate or select):
            return
        with host_memory.between_steps():
            if save:
                self.save(step)
            if evaluate:
                self.evaluate(step)
            if select:
                self.select(step)

    def finish(self, step: int) -> None:
        c = self.run.config
        with host_memory.between_steps():
            if self.selector:  # the last step is a candidate too
                self.select(step)
            self.save(step, force=True)
            # The end of the schedule is a point of the evaluation curve too (eval_steps/): the
            # final evaluation may score a dev-selected earlier step instead.
            if (self.evaluate_every and step == int(c.train.num_steps)
                    and step % self.evaluate_every == 0):
                self.evaluate(step)

    def save(self, at: int, force: bool = False) -> None:
        self.pending.fetch_and_check()
        if self.last_saved != at:
            run = self.run
            run.checkpointer.save(at, run.runner.unreplicate(run.state), run.iterator.get_state(),
                                  force=force)
            self.last_saved = at

    def evaluate(self, step: int) -> None:
        run = self.run
        self.pending.fetch_and_check()
        run.checkpointer.wait()
        t = time.time()
        # One embedding cache per run: the final evaluation of a selected step that was also
        # evaluated here re-reads its embeddings instead of encoding again.
        run_evaluation(run, run.config, os.path.join(run.workdir, "eval_steps", f"step_{step}"),
                       step, f"{run.workdir}@{step}", self.writer,
                       datasets=cadence_datasets(run.config), cache_dir=run.workdir)
        self.progress.pause(time.time() - t)

    def select(self, step: int) -> None:
        run = self.run
        self.pending.fetch_and_check()
        t = time.time()
        trainable = run.runner.unreplicate(run.state.params)
        self.selector.offer(step, current_bundle(run, trainable=trainable), trainable,
                            self.writer)
        self.progress.pause(time.time() - t)


def train(run: Run, writer: metrics_writer.MetricsWriter, *, evaluate_every: int = 0,
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
    loop, preempted = _Loop(run, writer, evaluate_every, end), False
    # Same-shaped steps: each step's freed temporaries stay mapped for the next (host_memory).
    with PreemptionFlag() as preemption, host_memory.reuse_freed_memory():
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


def enable_compilation_cache(config) -> None:
    """Persistent XLA compilation cache (config.train.compilation_cache_dir; '' disables): a
    restarted or repeated run skips most of the step's compile time."""
    directory = str(config.train.get("compilation_cache_dir", "") or "")
    if not directory or jax.config.jax_compilation_cache_dir:
        return
    directory = os.path.expanduser(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return  # a cache is an optimisation: never fail a run for it
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def train_and_evaluate(config, workdir, *, evaluate: bool = True,
                       stop_at: Optional[int] = None) -> dict:
    """The whole run: set up (or resume), train to the step budget, evaluate at the cadence and
    at the end (when `evaluate` and config.eval.datasets is set).  Returns final metrics.
    `stop_at` ends this invocation early (a checkpoint is saved) without changing the schedule."""
    workdir = config_checks.check_workdir(workdir)
    config_checks.validate_config(config)
    enable_compilation_cache(config)
    run = setup(config, workdir)  # model, data, resume: a failure here leaves the workdir as it was
    if jax.process_index() == 0:
        save_config(config, workdir)
        code_version.record(workdir, resumed=run.start_step > 0)
    writer = metrics_writer.MetricsWriter(workdir, enabled=jax.process_index() == 0)
    try:
        every = int(config.eval.every_steps) if evaluate else 0
        metrics = train(run, writer, evaluate_every=every, stop_at=stop_at)
        step = int(jax.device_get(run.runner.unreplicate(run.state.step)))
        if evaluate and step >= int(config.train.num_steps) and eval_datasets(config):
            bundle = _final_model(run, step)
            _release_training(run)
            results = run_evaluation(bundle, config, workdir, step, f"{workdir}@{step}", writer)
            if results:
                metrics = dict(metrics, eval=results)
        return metrics
    finally:
        writer.close()
        run.checkpointer.close()


def _final_model(run: Run, step: int):
    """What the final evaluation scores: the dev-selected step when selection is on, else the
    last step's params."""
    best = run_checkpoint.best_step(run.workdir) if run.config.train.select != "none" else None
    if best is None:
        return current_bundle(run, f"{run.workdir}@{step}")
    log(f"final evaluation on the dev-selected step {best} (of {step})")
    params, _ = run_checkpoint.restore_params(run.workdir, run_checkpoint.BEST)
    bundle = run.pretrained.bundle(tied=bool(run.config.model.tied),
                                   params=jax.device_put(params))
    bundle.name = f"{run.workdir}@{best}"
    return bundle


def _release_training(run: Run) -> None:
    """The final evaluation needs only its bundle: the training state, the frozen copies, the
    data iterator and the dev scorer go first, so that their memory is free while it encodes."""
    run.state = run.frozen = run.frozen_host = run.iterator = run.selector = None
    gc.collect()


def evaluate_checkpoint(config, workdir) -> dict:
    """--mode evaluate: the latest checkpoint of workdir, or the pretrained model if none.  A
    checkpoint loads through its 'ckpt:' spec, on the architecture and towers it was saved with
    (whatever this config's model.tied says)."""
    workdir = config_checks.check_workdir(workdir)
    if not eval_datasets(config):
        raise InputError("eval.datasets: empty; name the datasets to evaluate on")
    steps_saved = run_checkpoint.saved_steps(workdir)
    best = run_checkpoint.best_step(workdir) if config.train.select != "none" else None
    if best is not None:
        step, name = best, f"{workdir}@{best}"
        pretrained = load_model(config, f"ckpt:{workdir}@best")
        log(f"evaluating the dev-selected step {best} of {workdir}")
    elif steps_saved:
        step = steps_saved[-1]
        name = f"{workdir}@{step}"
        pretrained = load_model(config, f"ckpt:{name}")
        log(f"evaluating {run_checkpoint.CHECKPOINT_DIR}/{step} of {workdir}")
    else:
        step, name = 0, config.model.spec
        pretrained = load_model(config)
        log(f"no checkpoint in {workdir}: evaluating the pretrained model {config.model.spec}")
    bundle = pretrained.bundle(tied=not pretrained.towers)
    bundle.name = name
    return run_evaluation(bundle, config, workdir, step, name)
