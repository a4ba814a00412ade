"""Faults: preemption (SIGTERM), kill -9, a diverging loss, and bad input given to the CLI.

Every run uses configs/tiny.py on 2 devices with the shared persistent compile cache.  The
preemption test runs the real CLI in subprocesses (signals need a process); the other CLI cases
call `hybrid_jax.main` in-process (absl flags re-parsed per case) so the ~10 s tokenizer build of
'random:tiny' is paid once, not per case.
"""
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import tiny
from conftest import REPO
from hybrid_jax.train import checkpoints, guards, loop, run_setup
from hybrid_jax.models import run_checkpoint

CACHE = "/tmp/hybrid_jax_test_xla_cache"


def _overrides(d: dict) -> list:
    return [f"--config.{k}={v}" for k, v in d.items()]


def _config(d: dict):
    c = tiny.get_config()
    for key, value in d.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = type(node[leaf])(value) if not isinstance(node[leaf], bool) else value
    return c


BASE = {"num_devices": 2, "train.compilation_cache_dir": CACHE}


def _hashes(root: pathlib.Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_same_params(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


# ----------------------------------------------------------------------------- preemption, kill -9


def _popen(workdir, settings: dict):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    args = [sys.executable, "-m", "hybrid_jax.main", "--config=configs/tiny.py",
            f"--workdir={workdir}", "--mode=train", *_overrides(settings)]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _logged_step(workdir) -> int:
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [x for x in path.read_text().splitlines() if x.strip()]
    try:
        return json.loads(lines[-1])["step"] if lines else 0
    except json.JSONDecodeError:  # a line being written
        return json.loads(lines[-2])["step"] if len(lines) > 1 else 0


def _wait_for_step(proc, workdir, at_least: int, timeout: float = 120.0) -> int:
    t = time.time()
    while time.time() - t < timeout:
        step = _logged_step(workdir)
        if step >= at_least:
            return step
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run ended before step {at_least}:\n{out[-2000:]}\n{err[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no step {at_least} within {timeout}s")


def _latest(workdir):
    ckpt = checkpoints.Checkpointer(workdir, read_only=True)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


def test_sigterm_and_kill9_resume_bit_identical(tmp_path):
    """SIGTERM: the step finishes, a checkpoint at the step reached is saved, exit 0.  kill -9:
    at most the steps since the last checkpoint are lost and that checkpoint is intact.  Resuming
    after both reaches parameters bit-identical to an uninterrupted run."""
    settings = dict(BASE, **{"train.num_steps": 120, "train.log_every": 5,
                             "train.checkpoint_every": 10, "optim.learning_rate": 1e-3})
    t0 = time.time()
    workdir = tmp_path / "run"

    # 1. SIGTERM mid-run
    proc = _popen(workdir, settings)
    _wait_for_step(proc, workdir, 10)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    assert "received signal 15" in err and "preempted" in out, out[-2000:]
    stopped = _latest(workdir)
    assert 10 <= stopped < 120
    print(f"SIGTERM: stopped at step {stopped} ({time.time() - t0:.0f}s)")
    assert f"saved checkpoints/{stopped} in" in out  # the checkpoint is at the step reached

    # 2. resume, then kill -9 mid-run
    proc = _popen(workdir, settings)
    logged = _wait_for_step(proc, workdir, stopped + 30)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    logged = max(logged, _logged_step(workdir))
    latest = _latest(workdir)
    assert latest is not None and stopped < latest <= logged
    lost = logged - latest  # steps done (at least logged) but not in a checkpoint
    print(f"kill -9: last logged step {logged}, latest checkpoint {latest}, lost >= {lost} "
          f"({time.time() - t0:.0f}s)")
    params, _ = run_checkpoint.restore_params(workdir, latest)  # intact, finite
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))

    # 3. resume to the end == one uninterrupted run (in-process: same 2-device program)
    proc = _popen(workdir, settings)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    assert f"resuming from {workdir}/checkpoints/{latest}" in out
    assert _latest(workdir) == 120
    print(f"resumed to the end ({time.time() - t0:.0f}s)")
    straight = dict(settings, **{"train.checkpoint_every": 0})  # cadence does not change params
    loop.train_and_evaluate(_config(straight), tmp_path / "straight", evaluate=False)
    print(f"uninterrupted reference ({time.time() - t0:.0f}s)")
    _assert_same_params(run_checkpoint.restore_params(tmp_path / "straight")[0],
                        run_checkpoint.restore_params(workdir)[0])


# ----------------------------------------------------------------------------- non-finite loss


def nan_params_before_update(monkeypatch, update: int) -> None:
    """run_setup.setup's runner turns the params NaN just before its `update`-th step (1-based)."""
    real_setup = run_setup.setup

    def setup_with_fault(*args, **kwargs):
        run = real_setup(*args, **kwargs)
        step_fn, calls = run.runner.step_fn, [0]

        def faulty(state, frozen, batch):
            calls[0] += 1
            if calls[0] == update:
                state = state.replace(params=jax.tree.map(lambda x: x * np.nan, state.params))
            return step_fn(state, frozen, batch)

        run.runner.step_fn = faulty
        return run

    monkeypatch.setattr(run_setup, "setup", setup_with_fault)


def test_nan_stops_with_step_and_example_ids_and_keeps_last_good_checkpoint(tmp_path,
                                                                           monkeypatch):
    """Parameters turned NaN before update 7: the check (at the log interval / before a save,
    on metrics already fetched there) names step 7 and its batch's example ids; the step-8
    checkpoint is not written, checkpoint 4 stays and is finite."""
    nan_params_before_update(monkeypatch, 7)
    config = _config(dict(BASE, **{"train.num_steps": 12, "train.log_every": 3,
                                   "train.checkpoint_every": 4}))
    with pytest.raises(guards.TrainingDiverged) as e:
        loop.train_and_evaluate(config, tmp_path, evaluate=False)
    msg = str(e.value)
    # SyntheticIterator: batch n (1-based) holds example ids 8(n-1) .. 8n-1
    assert "training diverged at step 7 (loss=nan" in msg, msg
    assert "example ids [48, 49, 50, 51, 52, 53, 54, 55]" in msg, msg
    assert "the last good checkpoint is checkpoints/4" in msg, msg
    assert _latest(tmp_path) == 4
    params, _ = run_checkpoint.restore_params(tmp_path)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6]  # nothing non-finite was logged


# ----------------------------------------------------------------------------- bad input, CLI


@pytest.fixture
def cli(capsys, monkeypatch):
    """Runs hybrid_jax.main in-process: -> (exit status, stdout, stderr)."""
    from absl import flags
    from hybrid_jax import main as main_lib

    def reset():
        flags.FLAGS.unparse_flags()
        for name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, name)  # override flags are defined again on every parse

    def run(*args):
        reset()
        capsys.readouterr()
        argv = ["hybrid_jax.main", *args]
        monkeypatch.setattr(sys, "argv", argv)  # config_flags finds --config.* overrides there
        status = 0
        try:
            main_lib.parse_flags(argv)
            main_lib.main(["hybrid_jax.main"])
        except SystemExit as e:
            status = e.code
        out, err = capsys.readouterr()
        return status, out, err

    yield run
    reset()


def _one_error_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 8-step tiny run (checkpoints 4 and 8) to copy from."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    loop.train_and_evaluate(_config(BASE), workdir, evaluate=False)
    return workdir


def _copy_run(trained, tmp_path) -> pathlib.Path:
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    return workdir


TRAIN_ARGS = ("--config=configs/tiny.py", "--mode=train", *_overrides(BASE))


def test_wrong_config_values(cli, tmp_path):
    for extra, expected in [("--config.train.num_steps=0", "error: train.num_steps: must be >= 1"),
                            ("--config.loss.temperature=-1", "error: loss.temperature: must be > 0"),
                            ("--config.optim.schedule=bogus", "optim.schedule"),
                            ("--config.trian.num_steps=3", "no such key")]:
        status, _, err = cli(*TRAIN_ARGS, f"--workdir={tmp_path / 'w'}", extra)
        assert status == 2 and expected in _one_error_line(err), (extra, err)
    assert not (tmp_path / "w" / "checkpoints").exists()


@pytest.mark.parametrize("url,mode", [("gs://my-bucket/runs/x", "train"),
                                      ("gs://my-bucket/runs/x", "evaluate"),
                                      ("s3://my-bucket/x", "train_and_evaluate")])
def test_url_workdir_is_refused(cli, tmp_path, monkeypatch, url, mode):
    """The workdir is written with plain file I/O: a bucket URL would become a local 'gs:'
    directory.  One error line naming it and the way out (mount the bucket, pass the mount path)."""
    monkeypatch.chdir(tmp_path)  # where a relative 'gs:' directory would appear
    status, _, err = cli(f"--config={REPO / 'configs' / 'tiny.py'}", f"--mode={mode}",
                         f"--workdir={url}", *_overrides(BASE))
    line = _one_error_line(err)
    assert status == 2 and f"workdir {url}: a URL" in line, line
    assert "gcsfuse" in line and "pass the mount path" in line and "launch/tpu.sh" in line, line
    if url.startswith("gs://"):
        assert "(here --workdir /gcs/my-bucket/runs/x)" in line, line
    assert list(tmp_path.iterdir()) == []  # no 'gs:' / 's3:' directory


def test_malformed_data_file(cli, tmp_path):
    """An XQuAD-R-layout folder whose file is cut mid-JSON, and a JSON Lines pairs file with a
    broken line: one error line naming the file (and line)."""
    folder = tmp_path / "xquad-r"
    folder.mkdir()
    good = {"version": "1.1", "data": [{"title": "t", "paragraphs": []}]}
    (folder / "en.json").write_text(json.dumps(good)[:30])
    pairs = tmp_path / "pairs.jsonl"
    record = {"id": "q1", "query": {"en": "a", "de": "b"}, "passage": {"en": "c", "de": "d"}}
    pairs.write_text(json.dumps(record) + "\n" + json.dumps(dict(record, id="q2"))[:-9] + "\n")
    for fmt, where, expected in [("lareqa", folder, "en.json"),
                                 ("pairs_jsonl", pairs, "pairs.jsonl:2: malformed JSON")]:
        status, _, err = cli(*TRAIN_ARGS, f"--workdir={tmp_path / 'w'}",
                             "--config.data.synthetic=False", f"--config.data.format={fmt}",
                             f"--config.data.dataset_dir={where}")
        line = _one_error_line(err)
        assert status == 2 and expected in line, line
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_missing_checkpoint_spec(cli, tmp_path):
    # demo_cpu.py names evaluation datasets (tiny.py has none, which is refused first)
    status, _, err = cli("--config=configs/demo_cpu.py", "--mode=evaluate",
                         f"--workdir={tmp_path / 'w'}", "--config.model.spec=ckpt:/nonexistent")
    line = _one_error_line(err)
    assert status == 2 and "/nonexistent" in line, line


@pytest.mark.parametrize("mode", ["train", "spec"])
def test_corrupt_checkpoint_is_reported_and_left_untouched(cli, trained, tmp_path, mode):
    workdir = _copy_run(trained, tmp_path)
    step_dir = workdir / "checkpoints" / "8" / "params"
    victim = max((p for p in step_dir.rglob("*") if p.is_file() and p.stat().st_size > 0),
                 key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    before = _hashes(workdir)
    if mode == "train":  # resume
        status, _, err = cli(*TRAIN_ARGS, f"--workdir={workdir}", "--config.train.num_steps=12")
    else:  # another run starting from it
        status, _, err = cli(*TRAIN_ARGS, f"--workdir={tmp_path / 'next'}",
                             f"--config.model.spec=ckpt:{workdir}")
    line = _one_error_line(err)
    assert status == 2 and "checkpoints/8: cannot be read" in line, line
    assert "left untouched" in line
    after = _hashes(workdir)
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed and set(after) == set(before) | ({"config.json"} & set(after)), changed


def _mount_tmpfs(directory: pathlib.Path, options: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


def _umount(directory: pathlib.Path) -> None:
    subprocess.run(["umount", str(directory)], capture_output=True)


def test_unwritable_workdir(cli, trained, tmp_path):
    """A read-only file system (root ignores permission bits, so chmod would not do)."""
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "size=8m")
    try:
        shutil.copytree(trained / "checkpoints", mnt / "run" / "checkpoints")
        shutil.copy(trained / "config.json", mnt / "run" / "config.json")
        before = _hashes(mnt / "run")
        r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot remount read-only: {r.stderr.strip()}")
        status, _, err = cli(*TRAIN_ARGS, f"--workdir={mnt / 'run'}", "--config.train.num_steps=12")
        line = _one_error_line(err)
        assert status == 2 and "not writable" in line and str(mnt / "run") in line, line
        assert _hashes(mnt / "run") == before
    finally:
        _umount(mnt)


def test_full_disk(cli, trained, tmp_path):
    """A 2 MB tmpfs holding a finished run: resuming for more steps fills it.  One error line,
    exit status 1, the checkpoints that were there are intact."""
    mnt = tmp_path / "full"
    _mount_tmpfs(mnt, "size=2m")
    try:
        workdir = mnt / "run"
        shutil.copytree(trained / "checkpoints", workdir / "checkpoints")
        shutil.copy(trained / "config.json", workdir / "config.json")
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        os.truncate(filler, max(filler.stat().st_size - 96 * 1024, 0))  # room for a little
        before = _hashes(workdir)
        status, _, err = cli(*TRAIN_ARGS, f"--workdir={workdir}", "--config.train.num_steps=16")
        line = _one_error_line(err)
        assert status in (1, 2), err
        assert "space" in line.lower() or "not writable" in line, line
        after = _hashes(workdir)
        assert {k: after.get(k) for k in before if k.startswith("checkpoints/")} == \
            {k: v for k, v in before.items() if k.startswith("checkpoints/")}
    finally:
        _umount(mnt)
