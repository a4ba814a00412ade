"""The accelerator acceptance check (benchmarks/accelerator_check/): its CPU dry run end to end,
and the pieces that decide what runs on the host (test selection, wheel installs, the
accelerator-mode configs, budgets, the grid's slots and archive)."""
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from configs import demo_cpu, tradeoff2
from benchmarks import accelerator_check as dc
from benchmarks.accelerator_check import bundle as dc_bundle, device_tests
from hybrid_jax import cli
from hybrid_jax import config as schema
from hybrid_jax.study import grid_checks
from hybrid_jax.study.plan import plan, run_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _child_env():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the check sets each stage's own
    env.pop("JAX_PLATFORMS", None)
    return env


@pytest.fixture(scope="module")
def dry_run(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("accelerator_check")
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "benchmarks.accelerator_check", "--cpu-dry-run",
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
    # tests and resume run beside the grid, in a thread: their place in the list varies
    order = [s["stage"] for s in summary["stages"]]
    assert order[:4] == ["prepare", "install", "env", "data"] and order[-1] == "bench"
    assert sorted(order[4:7]) == ["grid", "resume", "tests"]
    assert order.index("tests") < order.index("resume")
    # Only the wheel install is skipped: the dry run's bundle carries none.
    assert {s["stage"]: s["status"] for s in summary["stages"]} == {
        "prepare": "ok", "install": "skipped", "env": "ok", "data": "ok", "tests": "ok",
        "resume": "ok", "bench": "ok", "grid": "ok"}
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["summary.json", "log.txt", "tests.xml", "bench.json", "bench.md",
                            "grid-1.tar.xz"])
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


def test_dry_run_grid_results(dry_run, tmp_path):
    out, summary, _ = dry_run
    grid = _stage(summary, "grid")["figures"]
    assert grid["planned"] == ["zero-shot", "mono-s0", "cross-s0", "hybrid-a0.5-s0",
                               "hybrid-a0.25-s0"]
    assert grid["asked"] == grid["runs_started"] == grid["finished"] == list(dc.DRY_RUN_GRID)
    assert grid["slots"] == 2 and grid["not_started"] == [] and grid["failed"] == []
    assert set(grid["process_seconds"]) == set(dc.DRY_RUN_GRID)
    for name in grid["finished"]:
        run = grid["runs"][name]
        for dataset in ("xquad-r-test", "mlqa-r"):
            assert 0 < run[dataset]["mono"] <= 1 and run[dataset]["rank_distance"] > 0
    assert grid["runs"]["mono-s0"]["num_steps"] == 4
    assert grid["archive"]["left_out"] == [] and len(grid["archive"]["parts"]) == 1
    with tarfile.open(out / "grid-1.tar.xz") as tar:
        names = set(tar.getnames())
        tar.extractall(tmp_path, filter="data")
    for name in grid["finished"]:
        for dataset in ("xquad-r-test", "mlqa-r"):
            assert f"grid/runs/{name}/eval/{dataset}/per_query.npz" in names
    assert not any("/checkpoints/" in n for n in names)
    # The report is made from the packed results, with the grid's own config.
    variant, overrides = _dry_check(tmp_path, out.parent / "work" / "bundle").grid_settings()
    flags = [f"--config.{k}={dc.flag_value(v)}" for k, v in overrides.items()]
    r = subprocess.run([sys.executable, "-m", "hybrid_jax.study",
                        f"--config=configs/tradeoff2.py:{variant}",
                        f"--workdir={tmp_path / 'grid'}", "--report_only", *flags],
                       cwd=REPO, env=_child_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "(2 of 5 runs finished)" in r.stdout + r.stderr
    report_name = tradeoff2.get_config(variant).experiment.report_name
    assert (tmp_path / "grid" / "report" / report_name).read_text().startswith("#")


def _dry_check(tmp_path, bundle):
    """A dry-run Check over the bundle the dry run made (its settings; nothing runs)."""
    args = dc.parse_args(["--cpu-dry-run", "--out", str(tmp_path / "o"), "--work",
                          str(tmp_path / "w")])
    check = dc.Check(args, tmp_path / "o", tmp_path / "w")
    check.bundle = bundle
    return check


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
    assert skipped == {"tensorboardx": "2.6.2 installed (the bundle has 2.6.5)"}
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


def _accelerator_check(tmp_path, *extra):
    """An accelerator-mode Check over a bundle whose pack is a stand-in file (nothing is run)."""
    bundle = tmp_path / "bundle"
    (bundle / dc.MODEL_DIR).mkdir(parents=True)
    (bundle / dc.MODEL_DIR / "model.e5s1").write_bytes(b"")
    args = dc.parse_args(["--out", str(tmp_path / "out"), "--bundle", str(bundle), *extra])
    return dc.Check(args, tmp_path / "out", tmp_path / "work"), bundle


def test_accelerator_mode_grid_and_bench_configs_pass_the_checks(tmp_path):
    check, bundle = _accelerator_check(tmp_path)
    variant, overrides = check.grid_settings()
    assert (variant, overrides) == ("gpu100", {})  # the report is rebuilt from the name alone
    config = tradeoff2.get_config(variant)
    specs = plan(config)
    assert len(specs) == 22 and [s.name for s in specs][:4] == [
        "zero-shot", "mono-s0", "cross-s0", "hybrid-a0.5-s0"]
    for s in specs:
        schema.validate_config(run_config(config, s), num_devices=1)
    d = config.data
    assert (d.global_batch_size, config.optim.grad_accum_steps, d.query_max_length,
            d.passage_max_length, d.hard_negatives) == (100, 1, 40, 120, 1)
    # The CPU grid's recipe in everything but the batch and its accumulation.
    cpu = tradeoff2.get_config("")
    cpu_keys, gpu_keys = grid_checks._flat(cpu.to_dict()), grid_checks._flat(config.to_dict())
    differ = {k for k in set(cpu_keys) | set(gpu_keys) if cpu_keys.get(k) != gpu_keys.get(k)}
    recipe = {k for k in differ if not k.startswith("experiment.")}
    assert recipe == {"data.global_batch_size", "optim.grad_accum_steps", "model.spec",
                      "data.dataset_dir", "eval.datasets"}
    # the experiment block differs only in what its report says around the figures
    assert differ - recipe == {f"experiment.{k}" for k in (
        "report_name", "title", "see_also", "machine", "cpu_cores", "deviations")}
    # Where the variant looks is where the check puts the pack and the data (repo-relative).
    default = dc.Check(dc.parse_args(["--out", str(tmp_path / "o"), "--bundle",
                                      str(REPO / dc_bundle.DEFAULT_BUNDLE)]), tmp_path / "o",
                       tmp_path)
    assert REPO / config.model.spec.split(":", 1)[1] == default.bundle / dc.MODEL_DIR
    assert [REPO / s["path"] for s in config.eval.datasets] == [
        default.data_dir / "xquad-r", default.data_dir / "mlqa-r"]
    assert REPO / d.dataset_dir == default.data_dir / "xquad-r"

    config_file, overrides, extra = check.bench_settings()
    assert config_file == "configs/demo_cpu.py" and extra == ["--rounds=50"]
    bench = demo_cpu.get_config()
    _apply(bench, overrides)
    schema.validate_config(bench, num_devices=1)
    assert bench.model.compute_dtype == "bfloat16" and bench.data.global_batch_size == 100
    # The driver's command line itself, as the GPU will run it: it parses and plans the grid.
    r = subprocess.run(check.experiment_command(tmp_path / "grid", "--dry_run"), cwd=REPO,
                       env=_child_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert dc.parse_plan(r.stdout + r.stderr) == [s.name for s in specs]
    # the command-line form of a dataset list parses back to the same specs
    as_flag = dc.flag_value(overrides["eval.datasets"])
    assert [dict(s) for s in cli.parse_tuple(as_flag)] == overrides["eval.datasets"]


def test_accelerator_mode_needs_the_pack(tmp_path):
    check, bundle = _accelerator_check(tmp_path)
    (bundle / dc.MODEL_DIR / "model.e5s1").unlink()
    with pytest.raises(FileNotFoundError, match="make offline-bundle"):
        check.model_spec()


def test_a_failed_stage_does_not_stop_independent_ones(tmp_path):
    check, _ = _accelerator_check(tmp_path, "--budget-s", "120")
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
    check, _ = _accelerator_check(tmp_path)
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


def test_prepare_checks_the_data_and_the_size_limit(shared_data, tmp_path):
    a = dc.write_data_archive(shared_data, tmp_path / "a" / dc.DATA_ARCHIVE, ["en"])
    b = dc.write_data_archive(shared_data, tmp_path / "b" / dc.DATA_ARCHIVE, ["en"])
    assert a["sha256"] == b["sha256"] and a["files"] >= 2  # same data, same archive
    with tarfile.open(tmp_path / "a" / dc.DATA_ARCHIVE) as tar:
        assert {"xquad-r/en.json", "mlqa-r/en.json"} <= set(tar.getnames())
    with pytest.raises(SystemExit, match="over the 0 MiB of --max-bundle-mib"):
        dc.prepare(tmp_path / "bundle", shared_data, languages=["en"], model=False,
                   wheels_required=False, max_bytes=10_000, log=lambda m: None)
    assert not json.loads((tmp_path / "bundle" / dc.MANIFEST).read_text())["fits"]


# A stand-in for the driver: `--dry_run` prints the plan; `--only=NAME` sleeps as long as NAME
# says (slow: a minute) and writes the finished run's timing.json, logging when it ran.
_FAKE_DRIVER = """
import json, pathlib, signal, sys, time
args = dict(a[2:].split("=", 1) for a in sys.argv[1:] if "=" in a)
plan = sys.argv[1].split(",")
if "--dry_run" in sys.argv:
    print("\\n".join(f"[experiment] {n}: to do" for n in plan))
    sys.exit(0)
name = args["only"]
if name.startswith("bad"):
    sys.exit(1)
oom_once = pathlib.Path(args["workdir"]) / "oom-once"
if name.startswith("oom") and not oom_once.exists():  # out of device memory the first time
    oom_once.write_text("")
    print("jax.errors.JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory")
    sys.exit(1)
start = time.time()
if name.startswith("slow"):  # deaf to SIGTERM: only SIGKILL ends it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(60 if name.startswith("slow") else float(name.split("-")[1]))
run = pathlib.Path(args["workdir"]) / "runs" / name
run.mkdir(parents=True)
(run / "timing.json").write_text(json.dumps({"finished": True, "wall_seconds": 1.0,
                                             "sessions": [{"status": "finished"}]}))
with open(sys.argv[2], "a") as f:
    f.write(f"{name} {start} {time.time()}\\n")
"""


def _fake_grid(tmp_path, monkeypatch, plan, slots):
    from benchmarks.accelerator_check import grid_stage
    monkeypatch.setattr(grid_stage, "GRID_MARGIN_S", 0)
    monkeypatch.setattr(grid_stage, "STOP_GRACE_S", 2)
    check, _ = _accelerator_check(tmp_path, "--grid-slots", str(slots))
    (tmp_path / "out").mkdir()
    check.work.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(_FAKE_DRIVER)
    spans = tmp_path / "spans.txt"
    monkeypatch.setattr(check, "experiment_command", lambda workdir, *flags: [
        sys.executable, str(script), ",".join(plan), str(spans), f"--workdir={workdir}", *flags])
    return check, spans


def test_grid_runs_in_parallel_slots_and_stops_at_its_limit(tmp_path, monkeypatch):
    plan = ["a-0.5", "b-0.5", "c-0.5", "slow", "slow-2", "d-0.5"]
    check, spans = _fake_grid(tmp_path, monkeypatch, plan, slots=3)
    t = time.time()
    figures = check.do_grid(8.0)
    # the two runs deaf to SIGTERM are stopped together: one grace (2 s), not one each
    assert time.time() - t < 8.0 + 2 + 3.5
    assert figures["runs_started"] == plan and figures["not_started"] == []
    assert figures["finished"] == ["a-0.5", "b-0.5", "c-0.5", "d-0.5"]
    assert figures["not_finished"] == ["slow", "slow-2"] and figures["status"] == "timeout"
    # never more than three at once: at each start, count the runs already going
    rows = [line.split() for line in spans.read_text().splitlines()]
    times = [(float(s), float(e)) for _, s, e in rows]
    assert len(times) == 4
    assert max(sum(s0 <= s < e0 for s0, e0 in times) for s, _ in times) <= 3
    # the finished runs were moved into one workdir, and packed into the archive
    assert sorted(p.name for p in (check.work / "grid" / "runs").iterdir()) == sorted(
        figures["finished"])
    with tarfile.open(tmp_path / "out" / "grid-1.tar.xz") as tar:
        assert "grid/runs/d-0.5/timing.json" in tar.getnames()


def test_compile_heavy_stages_skip_gemm_autotuning_on_a_gpu_only(tmp_path):
    check, _ = _accelerator_check(tmp_path)
    assert dc.FAST_COMPILE_XLA_FLAGS in check.child_env(fast_compile=True)["XLA_FLAGS"]
    assert dc.FAST_COMPILE_XLA_FLAGS not in check.child_env().get("XLA_FLAGS", "")
    assert check.child_env()["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert check.child_env()["JAX_PLATFORMS"] == "cuda"  # no silent fall-back to the CPU
    dry = dc.Check(dc.parse_args(["--cpu-dry-run", "--out", str(tmp_path / "o")]),
                   tmp_path / "o", tmp_path / "w")
    assert dry.child_env(fast_compile=True)["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=1")
    tpu = dc.Check(dc.parse_args(["--backend", "tpu", "--out", str(tmp_path / "t")]),
                   tmp_path / "t", tmp_path / "w")
    tpu_env = tpu.child_env(fast_compile=True)
    assert tpu_env["JAX_PLATFORMS"] == "tpu"
    assert dc.FAST_COMPILE_XLA_FLAGS not in tpu_env.get("XLA_FLAGS", "")


def test_grid_starts_no_run_its_longest_says_would_not_end_in_time(tmp_path, monkeypatch):
    check, _ = _fake_grid(tmp_path, monkeypatch, ["m-2", "n-2"], slots=1)
    figures = check.do_grid(3.5)
    assert figures["finished"] == ["m-2"] and figures["not_started"] == ["n-2"]
    with pytest.raises(SystemExit):  # a name outside the plan is refused up front
        dc.parse_args(["--out", str(tmp_path), "--grid-slots", "0"])


def test_grid_stops_starting_runs_when_a_slot_full_all_failed(tmp_path, monkeypatch):
    check, _ = _fake_grid(tmp_path, monkeypatch, ["bad-1", "bad-2", "a-0.5"], slots=2)
    figures = check.do_grid(30.0)
    assert figures["stopped_after_failures"] and figures["runs_started"] == ["bad-1", "bad-2"]
    assert figures["not_started"] == ["a-0.5"] and figures["status"] == "failed"


def test_grid_queues_a_run_out_of_device_memory_again_with_fewer_slots(tmp_path, monkeypatch):
    plan = ["a-1.5", "oom-0.2", "b-1.5", "c-0.2"]
    check, spans = _fake_grid(tmp_path, monkeypatch, plan, slots=3)
    figures = check.do_grid(30.0)
    assert figures["out_of_memory_retried"] == ["oom-0.2"]
    assert figures["slots_after_out_of_memory"] == 2  # the two runs still going when it died
    assert sorted(figures["finished"]) == sorted(plan) and figures["not_started"] == []
    assert figures["runs_started"] == ["a-1.5", "oom-0.2", "b-1.5", "oom-0.2", "c-0.2"]
    assert not figures.get("stopped_after_failures")


def test_pack_grid_splits_into_parts_small_files_first(tmp_path, monkeypatch):
    from benchmarks.accelerator_check import figures as dc_figures
    work = tmp_path / "grid"
    rng = np.random.default_rng(0)
    for run in ("r1", "r2"):
        (work / "runs" / run / "eval" / "x").mkdir(parents=True)
        (work / "runs" / run / "eval_steps" / "step_5" / "eval" / "x").mkdir(parents=True)
        (work / "runs" / run / "config.json").write_text("{}")
        (work / "runs" / run / "checkpoints").mkdir()
        (work / "runs" / run / "checkpoints" / "state.json").write_text("{}")
        for folder in ("eval/x", "eval_steps/step_5/eval/x"):
            np.savez(work / "runs" / run / folder / "per_query.npz",
                     v=rng.random(40_000))  # 320 kB that xz cannot shrink much
    monkeypatch.setattr(dc_figures, "RAW_PER_PART_BYTE", 10 ** 4)  # raw size never decides
    out = tmp_path / "out"
    out.mkdir()
    packed = dc.pack_grid(work, out, "g-{}.tar.xz", part_bytes=400_000, max_parts=2)
    assert [p["name"] for p in packed["parts"]] == ["g-1.tar.xz", "g-2.tar.xz"]
    assert all(p["bytes"] <= 400_000 for p in packed["parts"])
    with tarfile.open(out / "g-1.tar.xz") as tar:
        first = tar.getnames()
    # the configs first, then final per-query files; the budget curve's are what is left out
    assert first[:2] == ["grid/runs/r1/config.json", "grid/runs/r2/config.json"]
    assert not any("checkpoints" in n for n in first)
    assert packed["left_out"] and all("/eval_steps/" in p for p in packed["left_out"])
