"""The check as a whole: the stages in order, what each needs from the ones before, and the
closing summary."""
from __future__ import annotations

import json
import threading

from benchmarks.accelerator_check.bundle import MANIFEST
from benchmarks.accelerator_check.grid_stage import GridStage
from benchmarks.accelerator_check.measure_stages import MeasureStages
from benchmarks.accelerator_check.runner import END_RESERVE_S
from benchmarks.accelerator_check.setup_stages import SetupStages


class Check(SetupStages, MeasureStages, GridStage):
    """Runs the stages as child processes against one deadline and keeps summary.json current.
    The tests and the resume check run beside the grid (they check numbers, not speed, and the
    grid's runs leave the accelerator mostly idle); the bench times it alone, after the grid, if
    time is left (in a CPU dry run, which times nothing, it follows the resume check instead)."""

    def run(self) -> int:
        self.say(f"{self.summary['mode']}: budget {self.args.budget_s:.0f}s, work {self.work}")
        if self.dry and self.bundle is None:
            self.stage("prepare", self.do_prepare)
        elif self.bundle is None or not self.bundle.is_dir():
            raise SystemExit(f"error: bundle {self.bundle}: no such folder (make offline-bundle "
                             f"on a connected machine, then copy it to this host)")
        if self.bundle is not None and (self.bundle / MANIFEST).is_file():
            m = json.loads((self.bundle / MANIFEST).read_text())
            self.summary["bundle"] = {k: m.get(k) for k in ("created", "commit", "dirty",
                                                            "bundle_bytes")}
        have_bundle = ("prepare",) if self.dry and "prepare" in self.stages else ()
        self.stage("install", self.do_install, needs=have_bundle)
        self.stage("env", self.do_env)
        # Where jax does not see the accelerator, its figures would be the CPU's: stop.
        on_device = ("env",) if self.facts.get("wrong_backend") else ()
        self.stage("data", self.do_data, needs=have_bundle)
        beside = threading.Thread(target=self._beside_grid, args=(on_device,), daemon=True)
        beside.start()
        self.stage("grid", self.do_grid, needs=on_device + ("data",),
                   budget=max(self.left() - END_RESERVE_S, 0))
        beside.join(timeout=max(self.left(), 1.0))
        if not self.dry:
            self.stage("bench", self.do_bench, needs=on_device + ("data",))
        failed = [s["stage"] for s in self.stages.values() if s["status"] in ("failed", "timeout")]
        self.summary["failed_stages"] = failed
        self.save()
        self.say("summary: " + ", ".join(f"{s['stage']} {s['status']}"
                                         for s in self.stages.values()))
        self.say(f"results in {self.out}: " + ", ".join(sorted(
            p.name for p in self.out.iterdir() if p.is_file())))
        return 1 if failed else 0

    def _beside_grid(self, on_device: tuple) -> None:
        self.stage("tests", self.do_tests, needs=on_device)
        self.stage("resume", self.do_resume, needs=on_device)
        if self.dry:  # a CPU dry run times nothing: its bench need not wait for the grid's end
            self.stage("bench", self.do_bench, needs=on_device + ("data",))
