"""launch/: dry runs print the exact gcloud / sbatch / srun commands; bad settings are refused with
one `error:` line; the scripts pass shellcheck (when it is installed); multi-host detection."""
import os
import shlex
import shutil
import subprocess

import pytest

from conftest import REPO

LAUNCH = REPO / "launch"
SCRIPTS = ["tpu.sh", "slurm.sh", "slurm_gpu.sbatch"]
TPU = ["--project", "proj", "--zone", "us-central2-b", "--name", "hj-pod"]


def _run(script, *args, env=None):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("TPU_", "HJ_", "SLURM_"))}
    clean.update(env or {})
    return subprocess.run(["bash", str(LAUNCH / script), *args], cwd=REPO, env=clean,
                          capture_output=True, text=True, timeout=30)


def _commands(stdout):
    return [shlex.split(line) for line in stdout.splitlines() if line.strip()]


def test_tpu_create_and_delete():
    r = _run("tpu.sh", "create", *TPU, "--type", "v4-32", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert _commands(r.stdout) == [[
        "gcloud", "--project=proj", "compute", "tpus", "tpu-vm", "create", "hj-pod",
        "--zone=us-central2-b", "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base"]]
    r = _run("tpu.sh", "create", *TPU, "--type", "v4-32", "--spot", "--queued", "--dry-run")
    assert _commands(r.stdout) == [[
        "gcloud", "--project=proj", "compute", "tpus", "queued-resources", "create", "hj-pod",
        "--zone=us-central2-b", "--node-id=hj-pod", "--accelerator-type=v4-32",
        "--runtime-version=tpu-ubuntu2204-base", "--spot"]]
    r = _run("tpu.sh", "delete", *TPU, "--dry-run")
    assert _commands(r.stdout) == [["gcloud", "--project=proj", "compute", "tpus", "tpu-vm",
                                    "delete", "hj-pod", "--zone=us-central2-b", "--quiet"]]


def test_tpu_setup_run_logs_use_all_workers():
    env = {"TPU_PROJECT": "proj", "TPU_ZONE": "us-central2-b", "TPU_NAME": "hj-pod"}
    r = _run("tpu.sh", "setup", "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    tar, scp, ssh = _commands(r.stdout)
    assert tar[0] == "tar" and "--exclude=.git" in tar
    assert scp[:7] == ["gcloud", "--project=proj", "compute", "tpus", "tpu-vm", "scp",
                       "/tmp/hybrid_jax.tar.gz"] and "--worker=all" in scp
    assert "--worker=all" in ssh and "pip install -q -e ." in ssh[-1]
    r = _run("tpu.sh", "run", "--workdir", "gs://bucket/runs/xlmr", "--config",
             "configs/xlmr_base.py:hybrid", "--dry-run", "--", "--config.data.alpha=0.4", env=env)
    assert r.returncode == 0, r.stderr
    (ssh,) = _commands(r.stdout)
    assert ssh[:9] == ["gcloud", "--project=proj", "compute", "tpus", "tpu-vm", "ssh", "hj-pod",
                       "--zone=us-central2-b", "--worker=all"]
    remote = ssh[9]
    assert remote.startswith("--command=cd hybrid_jax && nohup python3 -m hybrid_jax.main ")
    main = shlex.split(remote.split("nohup ", 1)[1].split(" >", 1)[0])
    assert main == ["python3", "-m", "hybrid_jax.main", "--distributed",
                    "--config=configs/xlmr_base.py:hybrid", "--workdir=gs://bucket/runs/xlmr",
                    "--mode=train_and_evaluate", "--config.data.alpha=0.4"]
    r = _run("tpu.sh", "logs", "--follow", "--dry-run", env=env)
    assert "tail -n 50 -f $HOME/hybrid_jax.log" in r.stdout


@pytest.mark.parametrize("args,message", [
    ([], "a subcommand is required"),
    (["start", *TPU], "unknown subcommand 'start'"),
    (["create", "--zone", "z", "--name", "n"], "--project (or TPU_PROJECT) is required"),
    (["create", "--project", "p", "--name", "n"], "--zone (or TPU_ZONE) is required"),
    (["create", "--project", "p", "--zone", "z"], "--name (or TPU_NAME) is required"),
    (["create", *TPU, "--type", "v4"], "--type 'v4'"),
    (["create", "--project", "p", "--zone", "z", "--name", "Bad_Name"], "--name 'Bad_Name'"),
    (["run", *TPU], "--workdir (or TPU_WORKDIR) is required"),
    (["run", *TPU, "--workdir", "/local/dir"], "use a gs:// path"),
    (["run", *TPU, "--workdir", "gs://b/r", "--mode", "inspect"], "--mode 'inspect'"),
    (["create", *TPU, "--zonee", "z"], "unknown flag '--zonee'"),
    (["create", *TPU, "--project"], "--project needs a value"),
])
def test_tpu_validation(args, message):
    r = _run("tpu.sh", *args, *(["--dry-run"] if args else []))
    assert r.returncode == 2 and r.stdout == "", r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, r.stderr


def test_slurm_submit_dry_run_prints_sbatch_and_srun():
    r = _run("slurm.sh", "--workdir", "/shared/runs/x", "--nodes", "2", "--partition", "gpu",
             "--config", "configs/labse.py:hybrid", "--dry-run", "--", "--config.data.alpha=0.5")
    assert r.returncode == 0, r.stderr
    sbatch, srun = _commands(r.stdout)
    assert sbatch == ["sbatch", "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=8",
                      "--time=04:00:00", "--partition=gpu", str(LAUNCH / "slurm_gpu.sbatch"),
                      "--config", "configs/labse.py:hybrid", "--workdir", "/shared/runs/x",
                      "--mode", "train_and_evaluate", "--", "--config.data.alpha=0.5"]
    assert srun == ["srun", "--nodes=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                    "python3", "-m", "hybrid_jax.main", "--distributed",
                    "--config=configs/labse.py:hybrid", "--workdir=/shared/runs/x",
                    "--mode=train_and_evaluate", "--config.data.alpha=0.5"]


def test_sbatch_script_inside_allocation_and_directives():
    r = _run("slurm_gpu.sbatch", "--dry-run",
             env={"HJ_WORKDIR": "/shared/w", "SLURM_JOB_NUM_NODES": "4"})
    assert r.returncode == 0, r.stderr
    (srun,) = _commands(r.stdout)
    assert srun[:2] == ["srun", "--nodes=4"] and "--workdir=/shared/w" in srun
    text = (LAUNCH / "slurm_gpu.sbatch").read_text()
    for directive in ("#SBATCH --nodes=2", "#SBATCH --gpus-per-node=8",
                      "#SBATCH --ntasks-per-node=1", "#SBATCH --signal=TERM@120"):
        assert directive in text


@pytest.mark.parametrize("script,args,env,message", [
    ("slurm.sh", [], {}, "--workdir (or HJ_WORKDIR) is required"),
    ("slurm.sh", ["--workdir", "w", "--nodes", "0"], {}, "--nodes '0'"),
    ("slurm.sh", ["--workdir", "w", "--gpus-per-node", "x"], {}, "--gpus-per-node 'x'"),
    ("slurm.sh", ["--workdir", "w", "--time", "soon"], {}, "--time 'soon'"),
    ("slurm.sh", ["--workdir", "w", "--mode", "bogus"], {}, "--mode 'bogus'"),
    ("slurm_gpu.sbatch", [], {}, "--workdir (or HJ_WORKDIR) is required"),
    ("slurm_gpu.sbatch", ["--workdir", "w"], {}, "not inside a SLURM allocation"),
])
def test_slurm_validation(script, args, env, message):
    r = _run(script, *args, env=env)
    assert r.returncode == 2, r.stdout
    assert f"error: {message}" in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck():
    scripts = [*SCRIPTS, "common.sh"]
    r = subprocess.run(["shellcheck", "-s", "bash", "-x", "--source-path=SCRIPTDIR",
                        *(str(LAUNCH / s) for s in scripts)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_distributed_detection():
    from hybrid_jax import main
    detect = main.distributed_requested
    assert not detect({}, flag=False)
    assert detect({}, flag=True)
    assert detect({"HYBRID_JAX_DISTRIBUTED": "1"}, flag=False)
    assert detect({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2"}, flag=False)
    assert not detect({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "1"}, flag=False)
    assert not detect({"SLURM_NTASKS": "2"}, flag=False)  # the batch shell, not an srun step
    assert not detect({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "2", "HYBRID_JAX_DISTRIBUTED": "0"},
                      flag=False)
