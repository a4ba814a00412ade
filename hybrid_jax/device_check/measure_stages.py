"""The stages that measure: the device tests, checkpoint resume, the bench and the grid."""
from __future__ import annotations

import os
import shutil
import sys
import time

from hybrid_jax.device_check.device_tests import select_tests
from hybrid_jax.device_check.figures import (bench_figures, finished_runs, grid_figures,
                                             junit_counts, pack_grid, parse_plan)
from hybrid_jax.device_check.run_settings import RunSettings, flag_value
from hybrid_jax.device_check.runner import GRID_MARGIN_S, MIN_STAGE_S, OUT_FILES


class MeasureStages(RunSettings):
    """tests, resume, bench and grid: each `do_<stage>(limit_s) -> figures`."""

    def do_tests(self, limit: float) -> dict:
        n = int(self.facts.get("devices", 1))
        nodes, left_out = select_tests(n, self.dry)
        xml_path = self.out / OUT_FILES["tests"]
        env = self.child_env({"JAX_DEFAULT_MATMUL_PRECISION": "highest"})
        rc, timed_out = self.child([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                    "-o", "addopts=", f"--junitxml={xml_path}", *nodes],
                                   limit, env)
        figures = {"devices": n, "selected": len(nodes),
                   "left_out_for_devices": len(left_out), "pytest_status": rc}
        if xml_path.is_file():
            figures.update(junit_counts(xml_path))
        if timed_out:
            figures.update(status="timeout", error="pytest ran past its limit")
        elif rc != 0 or figures.get("failed", 0) or figures.get("errors", 0):
            figures.update(status="failed", error=f"pytest: status {rc}, "
                                                  f"{figures.get('failed', '?')} failed")
        return figures

    def do_resume(self, limit: float) -> dict:
        variants = [{"dtype": "bfloat16", "parallelism": "shard_map"}]
        if not self.dry:  # the dry run's budget holds one; the CPU suite tests resume already
            variants.insert(0, {"dtype": "float32", "parallelism": "pmap"})
        args = {"work": str(self.work / "resume"), "cache": str(self.work / "xla_cache"),
                "steps": 4 if self.dry else 8, "variants": variants}
        t = time.time()
        result, rc, timed_out = self.worker("resume", args, limit)
        if result is None:
            return {"status": "timeout" if timed_out else "failed",
                    "error": f"resume worker: status {rc}"}
        figures = {"default": result["variants"]}
        bad = [v for v in result["variants"] if not v["identical"]]
        if bad and not self.dry:
            # Scatter-adds (the embedding gradient) use atomics on GPUs, whose order varies from
            # run to run; XLA can make them deterministic at some speed cost.
            left = limit - (time.time() - t)
            if left > MIN_STAGE_S:
                flags = "--xla_gpu_deterministic_ops=true"
                env = self.child_env({"XLA_FLAGS": " ".join(filter(None, [
                    os.environ.get("XLA_FLAGS", ""), flags]))})
                again, _, _ = self.worker("resume", dict(args, variants=[
                    {k: v[k] for k in ("dtype", "parallelism")} for v in bad],
                    work=str(self.work / "resume-deterministic")), left, env)
                if again:
                    figures["deterministic_ops"] = again["variants"]
        if bad:
            figures.update(status="failed", error="resumed params differ from uninterrupted: "
                           + ", ".join(f"{v['dtype']}/{v['parallelism']} max |diff| "
                                       f"{v['max_abs_diff']:.2e}" for v in bad))
        return figures

    def do_bench(self, limit: float) -> dict:
        config, overrides, extra = self.bench_settings()
        out_json = self.out / OUT_FILES["bench"]
        cmd = [sys.executable, "-m", "hybrid_jax.bench", "--sections", "peak,step",
               f"--config={config}", f"--out={out_json}",
               f"--markdown={self.out / OUT_FILES['bench_md']}", "--nopeer", *extra]
        cmd += [f"--config.{k}={flag_value(v)}" for k, v in overrides.items()]
        rc, timed_out = self.child(cmd, limit)
        figures = bench_figures(out_json) if out_json.is_file() else {}
        if timed_out or rc != 0 or "step_s" not in figures:
            figures.update(status="timeout" if timed_out else "failed",
                           error=f"bench: status {rc}")
        return figures

    def do_grid(self, limit: float) -> dict:
        """The experiment driver (it skips finished runs) in phases: the plan (`--dry_run`, which
        also checks the config before any model loads); zero-shot and the first trained run,
        whose times size the rest; as many more runs as fit, in plan order; each invocation ends
        with the report on every finished run."""
        end = time.time() + limit
        plan_text = self.work / "grid-plan.txt"
        rc, timed_out = self.child(self.experiment_command("--dry_run"), min(120, limit),
                                   capture=plan_text)
        planned = parse_plan(plan_text.read_text(errors="replace"))
        figures: dict = {"planned": planned, "invocations": []}
        if rc != 0 or not planned:
            figures.update(status="timeout" if timed_out else "failed",
                           error=f"experiment --dry_run: status {rc}")
            return figures
        workdir = self.work / "grid"
        ok = self._grid_runs(figures, planned, end)
        if not ok and finished_runs(workdir) and end - time.time() - GRID_MARGIN_S > MIN_STAGE_S:
            # the last invocation stopped before its report
            self._grid_invoke(figures, end, "--report_only")
        return self._grid_results(figures, planned)

    def _grid_invoke(self, figures: dict, end: float, *flags: str) -> bool:
        """One driver invocation until GRID_MARGIN_S before `end`, recorded in figures."""
        t = time.time()
        rc, timed_out = self.child(self.experiment_command(*flags),
                                   end - time.time() - GRID_MARGIN_S)
        figures["invocations"].append({"flags": list(flags), "status": rc,
                                       "timed_out": timed_out,
                                       "seconds": round(time.time() - t, 1)})
        return rc == 0 and not timed_out

    def _grid_runs(self, figures: dict, planned: list[str], end: float) -> bool:
        """Zero-shot and the first trained run, then as many of the rest as their times say fit;
        whether the last invocation succeeded."""
        ok = self._grid_invoke(figures, end, "--max_runs=2")
        done = finished_runs(self.work / "grid")
        trained = [s for name, s in done.items() if name != "zero-shot"]
        todo = [n for n in planned if n not in done]
        if ok and trained and todo:
            # The first invocation's start-up and report, then each run as long as the longest.
            overhead = max(figures["invocations"][0]["seconds"] - sum(done.values()), 0.0)
            per_run = 1.1 * max(trained)
            fit = int((end - time.time() - GRID_MARGIN_S - overhead) // per_run)
            figures["estimate"] = {"overhead_s": round(overhead, 1),
                                   "per_run_s": round(per_run, 1), "runs_that_fit": fit}
            if fit >= 1:
                ok = self._grid_invoke(figures, end, f"--max_runs={min(fit, len(todo))}")
        return ok

    def _grid_results(self, figures: dict, planned: list[str]) -> dict:
        """The runs' figures, the latest report and the results archive into $OUT; the status."""
        workdir = self.work / "grid"
        figures.update(grid_figures(workdir, planned))
        reports = sorted((workdir / "report").glob("*.md"), key=lambda p: p.stat().st_mtime)
        if reports:
            shutil.copyfile(reports[-1], self.out / OUT_FILES["report"])
        figures["report"] = bool(reports)
        figures["archive"] = pack_grid(workdir, self.out / OUT_FILES["grid"])
        last = figures["invocations"][-1]
        if not figures["finished"]:
            figures.update(status="failed", error="no run of the grid finished")
        elif last["timed_out"]:
            figures.update(status="timeout", error="the driver ran past the grid's limit")
        elif last["status"] != 0:
            figures.update(status="failed", error=f"experiment: status {last['status']}")
        return figures
