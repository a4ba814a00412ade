"""The command line: config overrides, one-line errors, an end-to-end tiny run."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

CACHE = "/tmp/hybrid_jax_test_xla_cache"


def _main(*args, timeout=300):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "hybrid_jax.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("extra,message", [
    (["--config.train.no_such_key=3"], "error: config: no such key train.no_such_key"),
    (["--config.data.alpha=1.5"], "error: data.alpha: must lie in [0, 1], got 1.5"),
    (["--config.data.global_batch_size=7"], "error: data.global_batch_size: 7 is not divisible"),
    (["--config=configs/tiny.py:nonsense"], "unknown variant 'nonsense'"),
    (["--mode=bogus"], "error: flag --mode"),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, extra, message):
    r = _main("--config=configs/tiny.py", f"--workdir={tmp_path / 'run'}", *extra)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_run_end_to_end(tmp_path):
    workdir = tmp_path / "run"
    r = _main("--config=configs/tiny.py", f"--workdir={workdir}", "--mode=train",
              "--config.train.num_steps=4", "--config.optim.learning_rate=1e-4",
              f"--config.train.compilation_cache_dir={CACHE}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "step 4/4" in r.stdout and "ETA" in r.stdout
    config = json.loads((workdir / "config.json").read_text())
    assert config["optim"]["learning_rate"] == 1e-4
    assert (workdir / "checkpoints" / "4").is_dir()
    rows = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in rows] == [2, 4]
