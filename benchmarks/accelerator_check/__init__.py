"""The accelerator acceptance check (`python -m benchmarks.accelerator_check`; command.py
describes the stages and why it is built as it is).

Modules: command (options, main), check (the stages in order), runner (deadline, child
processes, summary.json), setup_stages, measure_stages and grid_stage (the stages themselves),
run_settings (the bench's and the grid's configs), device_tests (which tests run), bundle (what
`--prepare` builds for a host without network, and which wheels to install), figures (reading
results, packing the grid's), workers (the code of the child processes that import jax), files
(shared helpers).  At load time every module imports the standard library only.
"""
from benchmarks.accelerator_check.bundle import (DATA_ARCHIVE, MANIFEST, MODEL_DIR,
                                                 plan_install, prepare, version_tuple,
                                                 wheel_name_version, write_data_archive)
from benchmarks.accelerator_check.check import Check
from benchmarks.accelerator_check.command import DRY_RUN_GRID, main, parse_args
from benchmarks.accelerator_check.device_tests import (DRY_RUN_TESTS, ONE_DEVICE_TESTS,
                                                       SHARDED_TESTS, select_tests)
from benchmarks.accelerator_check.figures import (finished_runs, grid_figures, pack_grid,
                                                  parse_plan)
from benchmarks.accelerator_check.run_settings import flag_value
from benchmarks.accelerator_check.runner import FAST_COMPILE_XLA_FLAGS, OUT_FILES

__all__ = ["DATA_ARCHIVE", "DRY_RUN_GRID", "DRY_RUN_TESTS", "FAST_COMPILE_XLA_FLAGS", "MANIFEST",
           "MODEL_DIR", "ONE_DEVICE_TESTS", "OUT_FILES", "SHARDED_TESTS", "Check",
           "finished_runs", "flag_value", "grid_figures", "main", "pack_grid", "parse_args",
           "parse_plan", "plan_install", "prepare", "select_tests", "version_tuple",
           "wheel_name_version", "write_data_archive"]
