"""launch/: dry runs print the exact gcloud / sbatch / srun commands; bad settings are refused with
one `error:` line; the bucket mount helper (with stand-in commands); the scripts pass shellcheck
(when it is installed); multi-host detection."""
import os
import shlex
import shutil
import subprocess

import pytest

from conftest import REPO

LAUNCH = REPO / "launch"
SCRIPTS = ["tpu.sh", "gcs_mount.sh", "slurm.sh", "slurm_gpu.sbatch", "accelerator_check.sh",
           "offline_wheels.sh", "tradeoff3.sh"]
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


SSH_ALL = ["gcloud", "--project=proj", "compute", "tpus", "tpu-vm", "ssh", "hj-pod",
           "--zone=us-central2-b", "--worker=all"]


def test_tpu_setup_run_logs_use_all_workers():
    env = {"TPU_PROJECT": "proj", "TPU_ZONE": "us-central2-b", "TPU_NAME": "hj-pod",
           "TPU_WORKDIR": "gs://my-bucket/runs/xlmr"}
    r = _run("tpu.sh", "setup", "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    tar, scp, install, mount = _commands(r.stdout)
    assert tar[0] == "tar" and "--exclude=.git" in tar
    assert scp[:7] == ["gcloud", "--project=proj", "compute", "tpus", "tpu-vm", "scp",
                       "/tmp/hybrid_jax.tar.gz"] and "--worker=all" in scp
    assert install[:9] == SSH_ALL and "pip install -q -e ." in install[-1]
    # gcsfuse installed if missing, the workdir's bucket mounted at /gcs/<bucket> on every worker
    assert mount == [*SSH_ALL, "--command=cd hybrid_jax && bash launch/gcs_mount.sh --install "
                               "my-bucket /gcs/my-bucket"]
    # the gs:// workdir reaches the program as its mount path; the mount comes first (a rebooted
    # worker lost it) and a failed one stops that worker before the run starts
    r = _run("tpu.sh", "run", "--workdir", "gs://bucket/runs/xlmr/", "--config",
             "configs/xlmr_base.py:hybrid", "--dry-run", "--", "--config.data.alpha=0.4", env=env)
    assert r.returncode == 0, r.stderr
    (ssh,) = _commands(r.stdout)
    assert ssh[:9] == SSH_ALL
    remote = ssh[9]
    assert remote.startswith("--command=cd hybrid_jax && bash launch/gcs_mount.sh bucket "
                             "/gcs/bucket || exit 1; nohup python3 -m hybrid_jax.main ")
    assert remote.endswith(" > $HOME/hybrid_jax.log 2>&1 &")
    main = shlex.split(remote.split("nohup ", 1)[1].split(" >", 1)[0])
    assert main == ["python3", "-m", "hybrid_jax.main", "--distributed",
                    "--config=configs/xlmr_base.py:hybrid", "--workdir=/gcs/bucket/runs/xlmr",
                    "--mode=train_and_evaluate", "--config.data.alpha=0.4"]
    r = _run("tpu.sh", "run", "--workdir", "gs://bucket", "--dry-run", env=env)
    assert "--workdir=/gcs/bucket --mode=" in r.stdout, r.stdout
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
    (["run", *TPU], "--workdir (or TPU_WORKDIR) is required for run"),
    (["setup", *TPU], "--workdir (or TPU_WORKDIR) is required for setup"),
    (["run", *TPU, "--workdir", "/local/dir"], "use a gs:// path"),
    (["setup", *TPU, "--workdir", "/gcs/b/r"], "use a gs:// path"),
    (["run", *TPU, "--workdir", "gs://My_Bucket/r"], "'My_Bucket' is not a bucket name"),
    (["run", *TPU, "--workdir", "gs:///r"], "'' is not a bucket name"),
    (["run", *TPU, "--workdir", "gs://b/r"], "'b' is not a bucket name"),  # 3 to 222 characters
    (["run", *TPU, "--workdir", "gs://bkt/r/../../x"], "'..' would leave the mounted bucket"),
    (["run", *TPU, "--workdir", "gs://bkt/r", "--mode", "inspect"], "--mode 'inspect'"),
    (["create", *TPU, "--zonee", "z"], "unknown flag '--zonee'"),
    (["create", *TPU, "--project"], "--project needs a value"),
])
def test_tpu_validation(args, message):
    r = _run("tpu.sh", *args, *(["--dry-run"] if args else []))
    assert r.returncode == 2 and r.stdout == "", r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, r.stderr


def test_tpu_help_is_the_header():
    r = _run("tpu.sh", "--help")
    assert r.returncode == 0 and r.stdout.startswith("Cloud TPU VMs for hybrid_jax")
    assert r.stdout.rstrip().endswith("--dry-run (print the gcloud commands, run nothing)")


# -- launch/gcs_mount.sh, with stand-ins for the commands it runs ------------------------------

STUB = """#!/bin/bash
echo "$(basename "$0") $*" >> "$STUB_LOG"
[[ "$(basename "$0")" == sudo && "$1" == tee ]] && cat > /dev/null
[[ "$(basename "$0")" == mountpoint ]] && exit "${STUB_MOUNTED:-1}"
exit 0
"""


def _mount(tmp_path, *args, mounted: bool, gcsfuse: bool):
    """Runs gcs_mount.sh with sudo, curl, mountpoint, fusermount (and gcsfuse) replaced by
    stand-ins that log their arguments -> (result, logged command lines)."""
    if shutil.which("gcsfuse") and not gcsfuse:
        pytest.skip("gcsfuse is installed here: cannot test installing it")
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for name in ["sudo", "curl", "mountpoint", "fusermount"] + (["gcsfuse"] if gcsfuse else []):
        (stubs / name).write_text(STUB)
        (stubs / name).chmod(0o755)
    log = tmp_path / "log"
    log.write_text("")
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "STUB_LOG": str(log),
           "STUB_MOUNTED": "0" if mounted else "1"}
    r = subprocess.run(["bash", str(LAUNCH / "gcs_mount.sh"), *args], env=env,
                       capture_output=True, text=True, timeout=30)
    return r, log.read_text().splitlines()


def test_gcs_mount_mounts_once(tmp_path):
    mnt = str(tmp_path / "gcs" / "bkt")
    r, calls = _mount(tmp_path, "--install", "bkt", mnt, mounted=False, gcsfuse=True)
    assert r.returncode == 0, r.stderr
    uid_gid = f"{os.getuid()}:{os.getgid()}"
    assert calls == [f"mountpoint -q {mnt}", f"mountpoint -q {mnt}", f"sudo mkdir -p {mnt}",
                     f"sudo chown {uid_gid} {mnt}",
                     f"gcsfuse --implicit-dirs --rename-dir-limit=100000 bkt {mnt}"]
    os.makedirs(mnt)
    r, calls = _mount(tmp_path, "--install", "bkt", mnt, mounted=True, gcsfuse=True)
    assert r.returncode == 0 and "already mounted" in r.stdout, r.stderr
    assert calls == [f"mountpoint -q {mnt}"]  # a live mount is left alone, nothing installed
    # in the mount table but not listable: a dead gcsfuse, unmounted and mounted again
    r, calls = _mount(tmp_path, "bkt", str(tmp_path / "gone"), mounted=True, gcsfuse=True)
    assert r.returncode == 0, r.stderr
    assert f"fusermount -u {tmp_path / 'gone'}" in calls and calls[-1].startswith("gcsfuse ")


def test_gcs_mount_installs_gcsfuse_when_missing(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r, calls = _mount(tmp_path, "--install", "bkt", str(mnt), mounted=True, gcsfuse=False)
    assert r.returncode == 0, r.stderr
    assert sorted(calls[:2]) == [  # the two sides of one pipe: either may log first
        "curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg",
        "sudo tee /usr/share/keyrings/cloud.google.asc"]
    assert calls[2:] == ["sudo tee /etc/apt/sources.list.d/gcsfuse.list",
                         "sudo apt-get update -q", "sudo apt-get install -y -q gcsfuse",
                         f"mountpoint -q {mnt}"]
    # without --install a missing gcsfuse is one error line, before anything is changed
    r, calls = _mount(tmp_path, "bkt", str(tmp_path / "new"), mounted=False, gcsfuse=False)
    assert r.returncode == 2 and calls == [f"mountpoint -q {tmp_path / 'new'}"]
    assert r.stderr.strip() == ("error: gcsfuse is not installed (launch/tpu.sh setup "
                                "installs it)")


@pytest.mark.parametrize("args,message", [
    ([], "usage: launch/gcs_mount.sh"),
    (["Bad_Bucket", "/gcs/x"], "'Bad_Bucket' is not a bucket name"),
    (["bkt", "gcs/bkt"], "an absolute path is required"),
])
def test_gcs_mount_validation(tmp_path, args, message):
    r, calls = _mount(tmp_path, *args, mounted=False, gcsfuse=True)
    assert r.returncode == 2 and calls == [] and message in r.stderr, r.stderr


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


@pytest.mark.parametrize("script, args, message", [
    ("accelerator_check.sh", [], "--out DIR is required (the results folder)"),
    ("accelerator_check.sh", ["--cpu-dry-run"], "--out DIR is required (the results folder)"),
    ("offline_wheels.sh", ["--all"],
     "unknown option --all (usage: launch/offline_wheels.sh [DEST])"),
    ("offline_wheels.sh", ["a", "b"], "one destination folder at most (got 2)"),
])
def test_accelerator_check_scripts_refuse_bad_arguments(script, args, message):
    r = _run(script, *args)
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.strip() == f"error: {message}", r.stderr


@pytest.mark.parametrize("script, first, last", [
    ("accelerator_check.sh", "Accelerator acceptance check on a GPU or TPU host",
     "`--cpu-dry-run --out DIR` runs the same stages on a CPU."),
    ("offline_wheels.sh", "Download the wheels benchmarks.accelerator_check installs",
     "PIP overrides the pip command (default: the venv's, else python3 -m pip)."),
])
def test_accelerator_check_scripts_help_is_the_header(script, first, last):
    r = _run(script, "--help")
    assert r.returncode == 0 and r.stdout.startswith(first)
    assert r.stdout.rstrip().endswith(last), r.stdout


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


def test_tradeoff3_runs_the_grids_in_the_protocols_order(tmp_path):
    """A stand-in interpreter logs each study command; the primary stage names the main grid's
    runs without the dose-response's."""
    import sys

    log = tmp_path / "calls"
    stub = tmp_path / "py"
    stub.write_text(f'#!/bin/bash\nif [[ "$1" == - ]]; then exec {sys.executable} -; fi\n'
                    f'echo "$*" >> {log}\n')
    stub.chmod(0o755)
    r = _run("tradeoff3.sh", "--python", str(stub), "--results", "R")
    assert r.returncode == 0, r.stderr
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    configs = [c[c.index("--config") + 1] for c in calls]
    assert configs == ["configs/tradeoff3.py", "configs/tradeoff3.py:B", "configs/tradeoff3.py",
                       "configs/tradeoff3.py:budget10", "configs/tradeoff3.py:budget80",
                       "configs/tradeoff3.py:fraction25", "configs/tradeoff3.py:fraction50",
                       "configs/tradeoff3.py:weak"]
    assert [c[c.index("--workdir") + 1] for c in calls][:2] == ["R/tradeoff3", "R/tradeoff3-B"]
    only = calls[0][calls[0].index("--only") + 1].split(",")
    assert only[:3] == ["zero-shot", "mono-s0", "hybrid-a0.5-s0"]
    assert not any(n.startswith(("cross", "hybrid-a0.25", "hybrid-a0.75")) for n in only)
    assert "--only" not in calls[2]  # stage 3: the rest of the main grid
    log.unlink()
    r = _run("tradeoff3.sh", "--python", str(stub), "--stage", "5")
    assert r.returncode == 0 and len(log.read_text().splitlines()) == 1
    r = _run("tradeoff3.sh", "--stage", "0")
    assert r.returncode == 2 and "error: --stage" in r.stderr
