"""The stage runner: one deadline for the whole check, each stage a child process with its own
limit (killed at it), and summary.json and log.txt in the results folder kept current."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional

from benchmarks.accelerator_check.files import REPO, now_iso, write_json

OUT_FILES = {"summary": "summary.json", "log": "log.txt", "tests": "tests.xml",
             "bench": "bench.json", "bench_md": "bench.md", "grid": "grid-{}.tar.xz"}

# Seconds per stage; the grid takes what is left of the whole budget.
STAGE_BUDGETS = {"prepare": 90, "install": 60, "env": 60, "data": 30, "tests": 120,
                 "resume": 90, "bench": 150}
END_RESERVE_S = 15   # the closing summary after the last stage
GRID_MARGIN_S = 60   # the grid stops its runs this long before its limit (a run's checkpoint on
                     # SIGTERM, then packing the results)
MIN_STAGE_S = 10     # a stage with less time than this is not started
STOP_GRACE_S = 20    # after SIGTERM a child saves its checkpoint, then SIGKILL
# On an H200 (2026-12-04) a whole grid stage went to compiling: XLA autotuned Triton GEMM fusions
# ("Compiling module gemm_fusion_dot... took 2m42s") in 8 processes at once, and no run got past
# its first compiled programs in 460 s.  The grid, the tests and the resume check
# therefore compile plain cuBLAS GEMMs without autotuning; the bench keeps XLA's defaults.
FAST_COMPILE_XLA_FLAGS = "--xla_gpu_enable_triton_gemm=false --xla_gpu_autotune_level=0"
JAX_PLATFORMS = {"gpu": "cuda", "tpu": "tpu"}  # --backend -> the jax platform its children use


def stop_process_groups(procs: list, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the process group of every one of `procs` at once (training saves a checkpoint
    on it), one shared grace, then SIGKILL to what is left: the same few seconds however many."""
    for sig, grace in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        alive = [p for p in procs if p.poll() is None]
        for p in alive:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        until = time.time() + grace
        while any(p.poll() is None for p in alive) and time.time() < until:
            time.sleep(0.2)


class Runner:
    """Bookkeeping, child processes and the stage wrapper the stage classes build on."""

    def __init__(self, args, out: pathlib.Path, work: pathlib.Path):
        self.args, self.out, self.work = args, out, work
        self.dry = bool(args.cpu_dry_run)
        self.started = time.time()
        self.deadline = self.started + float(args.budget_s)
        self.log_path = out / OUT_FILES["log"]
        self.site = work / "site"
        self.bundle = pathlib.Path(args.bundle).resolve() if args.bundle else None
        self.stages: dict[str, dict] = {}
        self.lock = threading.RLock()  # the tests/resume thread and the grid both report
        self.facts: dict = {}
        self.summary = {"mode": "cpu-dry-run" if self.dry else args.backend, "started": now_iso(),
                        "budget_s": float(args.budget_s), "work": str(work),
                        "python": sys.executable, "stages": []}

    @property
    def data_dir(self) -> pathlib.Path:
        """Where the data stage unpacks the archive: inside the bundle, where configs/tradeoff2.py
        :gpu100 looks for it (device_bundle/data)."""
        return (self.bundle or self.work) / "data"

    def say(self, message: str) -> None:
        line = f"[accelerator_check {time.time() - self.started:6.1f}s] {message}"
        with self.lock:
            print(line, flush=True)
            with open(self.log_path, "a") as f:
                f.write(line + "\n")

    def save(self) -> None:
        with self.lock:
            self.summary["stages"] = list(self.stages.values())
            self.summary["elapsed_s"] = round(time.time() - self.started, 1)
            write_json(self.out / OUT_FILES["summary"], self.summary)

    def left(self) -> float:
        return self.deadline - time.time()

    def child_env(self, extra: Optional[dict] = None, fast_compile: bool = False) -> dict:
        """The environment of a stage's child; `fast_compile` for the stages that compile much
        and time nothing (FAST_COMPILE_XLA_FLAGS, on a GPU only)."""
        env = dict(os.environ)
        paths = [str(self.site)] if self.site.is_dir() and any(self.site.iterdir()) else []
        paths += [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
                   # the named platform only: no silent fall-back to the CPU
                   JAX_PLATFORMS="cpu" if self.dry else JAX_PLATFORMS[self.args.backend],
                   # Several processes share the accelerator (the grid's runs, the tests): each
                   # takes memory as it needs it instead of 75% of the device up front.
                   XLA_PYTHON_CLIENT_PREALLOCATE="false")
        if self.dry:
            # One simulated device, as on a one-chip host: the same tests and layouts.
            env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
        elif fast_compile and self.args.backend == "gpu":
            env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS", ""),
                                                      FAST_COMPILE_XLA_FLAGS]))
        env.update(extra or {})
        return env

    def child(self, cmd: list[str], timeout: float, env: Optional[dict] = None,
              capture: Optional[pathlib.Path] = None) -> tuple[int, bool]:
        """(status, timed out); output appended to log.txt (and also kept in `capture`).  At the
        limit the child's process group gets SIGTERM (training saves a checkpoint on it), then
        SIGKILL."""
        with open(self.log_path, "a") as log:
            log.write(f"$ {' '.join(cmd)}\n")
        with open(capture or self.log_path, "a" if capture is None else "w") as sink:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env or self.child_env(), stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=max(timeout, 1.0))
            except subprocess.TimeoutExpired:
                timed_out = True
                stop_process_groups([proc])
        if capture is not None:
            with open(self.log_path, "a") as log:
                log.write(capture.read_text(errors="replace"))
        return (proc.returncode if proc.returncode is not None else -9), timed_out

    def worker(self, name: str, args: dict, timeout: float,
               env: Optional[dict] = None) -> tuple[Optional[dict], int, bool]:
        """`workers.WORKERS[name](args)` in a child: (its result or None, status, timed out)."""
        result = self.work / f"{name}-{time.time_ns()}.json"
        spec = self.work / f"{name}-args-{time.time_ns()}.json"
        write_json(spec, dict(args, result=str(result)))
        rc, timed_out = self.child([sys.executable, "-m", "benchmarks.accelerator_check",
                                    "--worker", name, "--worker-args", str(spec)], timeout, env)
        return (json.loads(result.read_text()) if result.is_file() else None), rc, timed_out

    def tail_of_log(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stage(self, name: str, fn: Callable[[float], dict], needs: tuple = (),
              budget: Optional[float] = None) -> None:
        """Runs fn(limit_s) -> figures; a dict with 'status' overrides ok."""
        entry = {"stage": name, "status": "skipped", "seconds": 0.0, "figures": {}}
        with self.lock:
            self.stages[name] = entry
        blocked = [n for n in needs if self.stages.get(n, {}).get("status") not in ("ok",)]
        limit = min(budget if budget is not None else STAGE_BUDGETS[name],
                    self.left() - END_RESERVE_S)
        if name not in self.args.stages:
            entry["error"] = "not asked for (--stages)"
        elif blocked:
            entry["error"] = f"needs {', '.join(blocked)}, which did not succeed"
        elif limit < MIN_STAGE_S:
            entry["error"] = f"no time left ({self.left():.0f}s of the budget)"
        else:
            entry["budget_s"] = round(limit, 1)
            with open(self.log_path, "a") as f:
                f.write(f"\n==== {name} (limit {limit:.0f}s) ====\n")
            t = time.perf_counter()
            try:
                figures = fn(limit) or {}
                entry["status"] = figures.pop("status", "ok")
                if "error" in figures:
                    entry["error"] = figures.pop("error")
                entry["figures"] = figures
            except Exception as e:  # noqa: BLE001 - one stage's failure is reported, not fatal
                entry["status"], entry["error"] = "failed", f"{type(e).__name__}: {e}"
            entry["seconds"] = round(time.perf_counter() - t, 1)
        self.save()
        self.say(f"{name}: {entry['status']} ({entry['seconds']:.1f}s)"
                 + (f" - {entry['error']}" if entry.get("error") else ""))
        if entry["status"] in ("failed", "timeout"):
            with self.lock:
                print(self.tail_of_log(), flush=True)
