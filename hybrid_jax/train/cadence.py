"""One invocation's step loop, step by step: the step itself, then each cadence (log, checkpoint,
evaluation, dev selection).  loop.py drives it."""
from __future__ import annotations

import os
import time

import jax

from hybrid_jax.evaluation import entry as eval_entry
from hybrid_jax.train import memory_hooks
from hybrid_jax.train.progress import Pending, Progress
from hybrid_jax.train.run_setup import Run, current_bundle
from hybrid_jax.train.step import check_first_batch


def _due(step: int, every: int, end: int) -> bool:
    """A cadence (every N steps) falls on `step`; the last step has its own handling."""
    return bool(every) and step % every == 0 and step < end


class StepLoop:
    """The steps of one invocation and their cadences.  Anything that reads the state first
    checks every pending step for non-finite values, so a diverged model is never saved,
    evaluated or selected."""

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
            check_first_batch(batch, c)
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
        with memory_hooks.between_steps():
            if save:
                self.save(step)
            if evaluate:
                self.evaluate(step)
            if select:
                self.select(step)

    def finish(self, step: int) -> None:
        c = self.run.config
        with memory_hooks.between_steps():
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
        datasets, name = eval_entry.cadence_datasets(run.config), f"{run.workdir}@{step}"
        if datasets:
            # One embedding cache per run: the final evaluation of a selected step that was
            # also evaluated here re-reads its embeddings instead of encoding again.
            eval_entry.run_evaluation(
                current_bundle(run, name), run.config,
                os.path.join(run.workdir, "eval_steps", f"step_{step}"), step, name,
                self.writer, datasets=datasets, cache_dir=run.workdir)
        self.progress.pause(time.time() - t)

    def select(self, step: int) -> None:
        run = self.run
        self.pending.fetch_and_check()
        t = time.time()
        trainable = run.runner.unreplicate(run.state.params)
        self.selector.offer(step, current_bundle(run, trainable=trainable), trainable,
                            self.writer)
        self.progress.pause(time.time() - t)
