"""Multi-host training: 2 processes x 2 CPU devices (jax.distributed on 127.0.0.1, gloo
collectives) train exactly what 1 process x 4 devices trains on the same global batch.

Both runs are the real CLI (`python -m hybrid_jax.main --distributed ...`) in subprocesses, each
process with its own simulated device count (XLA_FLAGS must be set before jax is imported, so
this cannot run inside the pytest process).  pmap runs on synthetic batches, shard_map on XQuAD-R
when ../shared/data is there (else synthetic too), so both data iterators' per-host slicing is
exercised; with two processes each builds only its half of every global batch.  Both runs train
with hard negatives (synthetic: 2 per pair, some padding; XQuAD-R: 1 from the positive's
paragraph), so every query is scored against negatives that the other process encoded.
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, SHARED_DATA
from hybrid_jax.train import checkpoints
from hybrid_jax.models import run_checkpoint

CACHE = "/tmp/hybrid_jax_test_xla_cache"
TIMEOUT = 240.0  # seconds for all processes of one comparison (typically ~30-60 s)
STEPS = 4
# Not bit-identical: the cross-process all-reduce (gloo) adds the 4 devices' values in another
# order than XLA's in-process all-reduce, so losses and gradients differ in the last float32 bits
# (measured: <= 2.4e-7 in the loss and in any parameter, 4 and 8 Adam steps).  Adam can amplify
# such noise only in near-zero gradient components, by at most ~lr per step; 1e-5 is far below
# lr (1e-3) yet ~40x above what was seen.
ATOL = 1e-5


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir: pathlib.Path, num_processes: int, devices_per_process: int,
            overrides: dict) -> list:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count="
                                     f"{devices_per_process}",
               JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
    args = [sys.executable, "-m", "hybrid_jax.main", "--config=configs/tiny.py",
            f"--workdir={workdir}", "--mode=train",
            *[f"--config.{k}={v}" for k, v in overrides.items()]]
    port = _free_port() if num_processes > 1 else None
    procs = []
    for i in range(num_processes):
        distributed = [] if num_processes == 1 else [
            "--distributed", f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={num_processes}", f"--process_id={i}"]
        log = open(f"{workdir}.{i}.log", "w")  # files, not pipes: nobody has to drain them
        procs.append((subprocess.Popen(args + distributed, cwd=REPO, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True), log))
    return procs


def _wait_all(procs: list, timeout: float) -> None:
    """Waits for every process; kills all of them on a failure or the deadline (a process whose
    peer died would otherwise wait in a collective until jax's own timeouts)."""
    deadline = time.time() + timeout
    try:
        while True:
            codes = [p.poll() for p, _ in procs]
            if any(c not in (None, 0) for c in codes):
                raise AssertionError(f"exit statuses {codes}")
            if all(c == 0 for c in codes):
                return
            if time.time() > deadline:
                raise AssertionError(f"not finished within {timeout:.0f}s (statuses {codes})")
            time.sleep(0.2)
    except AssertionError as e:
        logs = "\n".join(f"--- {log.name}\n" + pathlib.Path(log.name).read_text()[-3000:]
                         for _, log in procs)
        raise AssertionError(f"{e}\n{logs}") from None
    finally:
        for p, log in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)  # its own session: the whole process group
                p.wait()
            log.close()


def _losses(workdir: pathlib.Path) -> dict:
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines() if x]
    return {r["step"]: r["loss"] for r in rows}


@pytest.mark.parametrize("parallelism,data", [("pmap", "synthetic"), ("shard_map", "xquad-r"),
                                             ("shard_map", "xquad-r-store")])
def test_two_processes_match_one(tmp_path, parallelism, data):
    overrides = {"parallelism": parallelism, "train.num_steps": STEPS, "train.log_every": 1,
                 "train.checkpoint_every": 2, "train.compilation_cache_dir": CACHE,
                 "data.hard_negatives": 2}
    if data.startswith("xquad-r") and (SHARED_DATA / "xquad-r").is_dir():
        overrides.update({"data.synthetic": False, "data.dataset_dir": SHARED_DATA / "xquad-r",
                          "data.hard_negatives": 1, "data.negative_source": "same_paragraph"})
        if data == "xquad-r-store":  # prepared once here; each process gathers its rows only
            from hybrid_jax.data.store.prepare import prepare
            prepare([f"lareqa:{SHARED_DATA / 'xquad-r'}"], tmp_path / "corpus", "random:tiny",
                    log=open(os.devnull, "w"))
            overrides["data.store"] = tmp_path / "corpus"
    else:
        data = "synthetic"
    one, two = tmp_path / "one", tmp_path / "two"
    t = time.time()
    # all three processes at once: the pair's start-up waits overlap the single run's work
    procs = _launch(one, 1, 4, overrides) + _launch(two, 2, 2, overrides)
    _wait_all(procs, TIMEOUT)
    wall = time.time() - t
    assert "on 4 cpu device(s)" in pathlib.Path(f"{two}.0.log").read_text()

    # process 0 alone writes metrics: one row per step, not two
    loss_one, loss_two = _losses(one), _losses(two)
    assert sorted(loss_two) == sorted(loss_one) == list(range(1, STEPS + 1))
    loss_diff = max(abs(loss_one[s] - loss_two[s]) for s in loss_one)
    assert loss_diff <= ATOL, (loss_one, loss_two)

    # the collective orbax save of the 2-process run restores on one host (other device ids)
    saved = checkpoints.Checkpointer(two, read_only=True)
    assert saved.all_steps() == [2, 4]
    saved.close()
    params_one, _ = run_checkpoint.restore_params(one, STEPS)
    params_two, _ = run_checkpoint.restore_params(two, STEPS)
    assert jax.tree.structure(params_one) == jax.tree.structure(params_two)
    param_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                     for a, b in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_two)))
    assert param_diff <= ATOL
    print(f"{parallelism}/{data}: max |loss diff| {loss_diff:.2e}, max |param diff| "
          f"{param_diff:.2e}, {wall:.1f}s for both runs")


def test_synthetic_negatives_are_per_process_slices_of_one_draw():
    """What the synthetic runs above feed: each process's hard negatives are its rows of the
    1-process batch, a function of (seed, step); some are padding; every one shares tokens with
    its query, but fewer than the positive does."""
    from configs import tiny
    from hybrid_jax.data.synthetic import SyntheticIterator

    c = tiny.get_config().data
    c.hard_negatives = 2
    b, h = int(c.global_batch_size), 2
    one = SyntheticIterator(c, 1000, seed=3)
    whole = [next(one), next(one)]
    half = SyntheticIterator(c, 1000, seed=3, process_index=1, process_count=2)
    half.set_state({"step": 1})  # resume at the second batch
    second = next(half)
    assert second["negative_ids"].shape == (b // 2, h, c.passage_max_length)
    for k in ("negative_ids", "negative_mask", "negative_valid"):
        np.testing.assert_array_equal(second[k], whole[1][k][b // 2:])
    assert not np.array_equal(whole[0]["negative_ids"], whole[1]["negative_ids"])

    batch = whole[0]
    assert (batch["negative_mask"].sum(-1) > 0).all()
    assert 0 < batch["negative_valid"].sum() < batch["negative_valid"].size
    for i in range(b):
        query = set(batch["query_ids"][i][batch["query_mask"][i] > 0].tolist())
        positive = len(query & set(batch["passage_ids"][i].tolist()))
        for j in range(h):
            negative = batch["negative_ids"][i, j][batch["negative_mask"][i, j] > 0]
            assert 0 < len(query & set(negative.tolist())) < positive

    c.hard_negatives = 0  # the pairs do not depend on whether negatives are drawn
    plain = next(SyntheticIterator(c, 1000, seed=3))
    assert "negative_ids" not in plain
    np.testing.assert_array_equal(plain["passage_ids"], batch["passage_ids"])
