"""What the step loop reports and when it syncs with the devices: step timing and the progress
line (`Progress`), and the device metrics held back until something reads them (`Pending`)."""
from __future__ import annotations

import time

import jax
import numpy as np

from hybrid_jax.train.guards import check_finite


def fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


class Progress:
    """Step timing (the first step, which compiles, is reported apart) and the log line."""

    def __init__(self, num_steps: int, end: int, global_batch: int):
        self.num_steps, self.end, self.global_batch = num_steps, end, global_batch
        self.t0, self.steps = time.time(), 0

    def first_step_done(self, step: int) -> None:
        log(f"step {step}: compiled and ran the first step in {time.time() - self.t0:.1f}s")
        self.t0, self.steps = time.time(), 0

    def pause(self, seconds: float) -> None:  # evaluation time is not training time
        self.t0 += seconds

    def log(self, step: int, fetched: list, writer) -> dict:
        now = time.time()
        rate = self.steps / (now - self.t0) if self.steps else 0.0
        last = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
        last.update(lr=fetched[-1]["lr"], param_norm=fetched[-1]["param_norm"])
        if rate:
            last.update(steps_per_sec=rate, examples_per_sec=rate * self.global_batch)
        writer.write(step, last)
        eta = (self.end - step) / rate if rate else float("nan")
        log(f"step {step}/{self.num_steps} | loss {last['loss']:.4f} acc {last['accuracy']:.3f}"
             f" | lr {last['lr']:.2e} grad {last['grad_norm']:.3f}"
             + (f" | {rate:.2f} steps/s {rate * self.global_batch:.1f} ex/s | ETA "
                f"{fmt_time(eta)}" if rate else ""))
        self.t0, self.steps = now, 0
        return last


class Pending:
    """Device metrics not yet on the host.  They are fetched (and checked for non-finite values)
    at the log interval and before anything reads the state (a save, an evaluation): no extra
    per-step host sync."""

    def __init__(self, run, first_step: int):
        self.run, self.first = run, first_step   # update count of the first pending step
        self.metrics, self.example_ids, self.checked = [], [], []

    def add(self, metrics, example_ids) -> None:
        self.metrics.append(metrics)
        self.example_ids.append(example_ids)

    def fetch_and_check(self) -> None:
        fetched = [self.run.runner.metrics_to_host(m) for m in self.metrics]
        check_finite(fetched, self.first, self.example_ids, self.run.workdir,
                     self.run.checkpointer.latest_step())
        self.checked.extend(fetched)
        self.first += len(self.metrics)
        self.metrics, self.example_ids = [], []

    def take_checked(self) -> list:
        self.fetch_and_check()
        out, self.checked = self.checked, []
        return out
