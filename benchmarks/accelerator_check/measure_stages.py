"""The stages that measure: the device tests, checkpoint resume and the bench (the grid has its
own module, grid_stage.py)."""
from __future__ import annotations

import sys
import time

from benchmarks.accelerator_check.device_tests import select_tests
from benchmarks.accelerator_check.figures import bench_figures, junit_counts
from benchmarks.accelerator_check.run_settings import RunSettings, flag_value
from benchmarks.accelerator_check.runner import MIN_STAGE_S, OUT_FILES


class MeasureStages(RunSettings):
    """tests, resume and bench: each `do_<stage>(limit_s) -> figures`."""

    def do_tests(self, limit: float) -> dict:
        n = int(self.facts.get("devices", 1))
        nodes, left_out = select_tests(n, self.dry)
        xml_path = self.out / OUT_FILES["tests"]
        env = self.child_env({"JAX_DEFAULT_MATMUL_PRECISION": "highest"}, fast_compile=True)
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
        result, rc, timed_out = self.worker("resume", args, limit,
                                            self.child_env(fast_compile=True))
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
                base = self.child_env(fast_compile=True)
                env = dict(base, XLA_FLAGS=" ".join(filter(None, [base.get("XLA_FLAGS"), flags])))
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
        cmd = [sys.executable, "-m", "benchmarks", "--sections", "peak,step",
               f"--config={config}", f"--out={out_json}",
               f"--markdown={self.out / OUT_FILES['bench_md']}", "--nopeer", *extra]
        cmd += [f"--config.{k}={flag_value(v)}" for k, v in overrides.items()]
        rc, timed_out = self.child(cmd, limit)
        figures = bench_figures(out_json) if out_json.is_file() else {}
        if timed_out or rc != 0 or "step_s" not in figures:
            figures.update(status="timeout" if timed_out else "failed",
                           error=f"bench: status {rc}")
        return figures
