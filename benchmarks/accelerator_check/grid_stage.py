"""The grid stage: the second-edition trade-off grid (configs/tradeoff2.py) run as parallel
slices, one run per child process, as many at once as `--grid-slots`.

One small model leaves most of an accelerator idle, so the runs share it: each run is
`python -m hybrid_jax.study --only <run>` in its own workdir (no two processes write one
folder), launched in the plan's order (zero-shot, then seed by seed, then the alpha sweep), so a
grid cut short by the time limit has whole early seeds.  A run is not started when the longest
finished run says it would not end before the stage's limit; one still running there gets SIGTERM
(training saves a checkpoint) and counts as not finished.  A run that dies of device memory
(`RESOURCE_EXHAUSTED`) is queued again, once, and the slots shrink to the runs still going: on an
H200, ten batch-100 runs at once asked for more than its 112 GB.  The finished runs are then moved
into one workdir, `<work>/grid/runs/`, and packed into the results folder (`grid-<n>.tar.xz`,
without checkpoints): the report is made from those files with `python -m hybrid_jax.study
--config configs/tradeoff2.py:gpu100 --workdir W --report_only`, on any machine, so the
accelerator's time goes to the runs."""
from __future__ import annotations

import shutil
import subprocess
import time

from benchmarks.accelerator_check.files import REPO
from benchmarks.accelerator_check.figures import finished_runs, grid_figures, pack_grid, parse_plan
from benchmarks.accelerator_check.run_settings import RunSettings
from benchmarks.accelerator_check import runner
from benchmarks.accelerator_check.runner import GRID_MARGIN_S, OUT_FILES

POLL_S = 1.0
STOP_GRACE_S = runner.STOP_GRACE_S
LOG_TAIL_LINES = 40  # of each run's own log, copied into log.txt
OUT_OF_MEMORY = "RESOURCE_EXHAUSTED"  # jax's error when the device's memory is used up


class GridStage(RunSettings):
    """`do_grid(limit_s) -> figures`."""

    def do_grid(self, limit: float) -> dict:
        end = time.time() + limit - GRID_MARGIN_S
        plan_text = self.work / "grid-plan.txt"
        rc, timed_out = self.child(self.experiment_command(self.work / "grid", "--dry_run"),
                                   min(120.0, limit), capture=plan_text)
        planned = parse_plan(plan_text.read_text(errors="replace"))
        wanted = self.args.grid_runs or planned
        figures: dict = {"planned": planned, "asked": wanted,
                         "slots": int(self.args.grid_slots), "runs_started": []}
        unknown = sorted(set(wanted) - set(planned))
        if rc != 0 or not planned or unknown:
            figures.update(status="timeout" if timed_out else "failed",
                           error=f"experiment --dry_run: status {rc}"
                                 + (f"; --grid-runs not in the plan: {unknown}" if unknown else ""))
            return figures
        self._run_pool([n for n in planned if n in wanted], end, figures)
        return self._grid_results(figures, wanted)

    def _slice_dir(self, name: str):
        return self.work / "slices" / name

    def _launch(self, name: str) -> dict:
        workdir = self._slice_dir(name)
        workdir.mkdir(parents=True, exist_ok=True)
        log = open(workdir / "run.log", "w")
        cmd = self.experiment_command(workdir, f"--only={name}")
        with open(self.log_path, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
        # float32 matmuls in float32, as on the CPU grid (a GPU's default is TF32); one XLA cache
        # for every run, so only the first compiles.
        env = self.child_env({"JAX_COMPILATION_CACHE_DIR": str(self.work / "xla_cache"),
                              "JAX_DEFAULT_MATMUL_PRECISION": "highest"},
                             fast_compile=True)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        return {"name": name, "proc": proc, "log": log, "started": time.time()}

    def _run_pool(self, queue: list[str], end: float, figures: dict) -> None:
        """Runs `queue` in order, `grid_slots` at a time, until `end`."""
        running: list[dict] = []
        seconds: dict[str, float] = {}   # of the finished runs
        queue, launching = list(queue), True
        slots = int(self.args.grid_slots)
        retried: list[str] = []
        while (queue and launching) or running:
            for job in [j for j in running if j["proc"].poll() is not None]:
                running.remove(job)
                if self._finish(job, seconds, figures) and job["name"] not in retried:
                    retried.append(job["name"])
                    queue.insert(0, job["name"])
                    slots = max(1, len(running))
                    figures.update(out_of_memory_retried=retried, slots_after_out_of_memory=slots)
                    self.say(f"grid: {job['name']} ran out of device memory: queued again, "
                             f"{slots} runs at once from now on")
            ended = [n for n in figures.get("process_seconds", {}) if n not in retried]
            if launching and not seconds and len(ended) >= slots:
                # a slot-full of runs ended and none finished: the rest would fail alike
                self.say(f"grid: the first {len(ended)} runs all failed; starting no more")
                figures["stopped_after_failures"] = True
                launching = False
            longest = 1.1 * max(seconds.values()) if seconds else 0.0
            while launching and queue and len(running) < slots and time.time() + longest < end:
                running.append(self._launch(queue.pop(0)))
                figures["runs_started"].append(running[-1]["name"])
                self.say(f"grid: started {running[-1]['name']} ({len(running)} running, "
                         f"{len(queue)} queued)")
            if not running:  # nothing going, and the next run would not end in time
                break
            if time.time() >= end:
                self.say(f"grid: stopping {', '.join(j['name'] for j in running)} at the "
                         f"stage's limit")
                runner.stop_process_groups([j["proc"] for j in running], STOP_GRACE_S)
                for job in running:
                    self._finish(job, seconds, figures)
                break
            time.sleep(POLL_S)
        figures["not_started"] = queue

    def _finish(self, job: dict, seconds: dict, figures: dict) -> bool:
        """Records an ended run; True when it died of device memory."""
        name, took = job["name"], time.time() - job["started"]
        job["log"].close()
        log = (self._slice_dir(name) / "run.log").read_text(errors="replace").splitlines()
        with open(self.log_path, "a") as f:
            f.write(f"---- {name}: status {job['proc'].returncode}, {took:.0f}s; "
                    f"last {LOG_TAIL_LINES} lines ----\n" + "\n".join(log[-LOG_TAIL_LINES:])
                    + "\n")
        done = finished_runs(self._slice_dir(name))
        if name in done:
            seconds[name] = took
            dest = self.work / "grid" / "runs" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(dest, ignore_errors=True)
            shutil.move(str(self._slice_dir(name) / "runs" / name), str(dest))
        figures.setdefault("process_seconds", {})[name] = round(took, 1)
        self.say(f"grid: {name} {'finished' if name in done else 'NOT finished'} "
                 f"(status {job['proc'].returncode}, {took:.0f}s)")
        return name not in done and any(OUT_OF_MEMORY in line for line in log[-LOG_TAIL_LINES:])

    def _grid_results(self, figures: dict, wanted: list[str]) -> dict:
        """The runs' figures and the archive parts into the results folder; the status."""
        workdir = self.work / "grid"
        figures.update(grid_figures(workdir, wanted))
        parts = pack_grid(workdir, self.out, OUT_FILES["grid"],
                          part_bytes=int(self.args.archive_part_mib * 2 ** 20),
                          max_parts=self.args.archive_parts or None)
        figures["archive"] = parts
        if not figures["finished"]:
            figures.update(status="failed", error="no run of the grid finished")
        elif parts["left_out"]:
            figures.update(status="failed",
                           error=f"{len(parts['left_out'])} result files did not fit "
                                 f"--archive-parts")
        elif figures["not_finished"]:
            figures.update(status="timeout",
                           error=f"{len(figures['not_finished'])} of {len(wanted)} runs not "
                                 f"finished in the time left")
        return figures
