"""Train-step benchmark: our step against the PyTorch peer, side by side, and the matmul peak.

The JAX step is the real one (`train.setup` -> `steps.Runner`, the run's config, real batches from
the input pipeline); the PyTorch peer (bench/torch_peer.py) trains the same weights on the same
batches with the same loss in its own process.  Steps alternate JAX, PyTorch, JAX, ... so both see
the same machine load; medians over the rounds and the per-round ratio are reported.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import pathlib
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from hybrid_jax import host_memory


# The event jax records for every XLA backend compilation (jax/_src/dispatch.py).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _median(xs):
    return float(statistics.median(xs)) if xs else None


def _median_seconds(f, args: tuple, repeats: int) -> float:
    """Median wall seconds of `repeats` calls of f(*args) (a jitted function), after one
    untimed call that compiles it."""
    f(*args).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(*args).block_until_ready()
        times.append(time.perf_counter() - t)
    return _median(times)


def max_rss_mb() -> float:
    """Peak resident memory of this process, MB (VmHWM: unlike ru_maxrss it does not carry a
    parent's peak across fork + exec, so the peer's figure is its own)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def count_compiles():
    """Counts XLA backend compilations (and their seconds) while the block runs."""
    import jax

    seen = []

    def listener(event, duration, **_):
        if event == BACKEND_COMPILE_EVENT:
            seen.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def matmul_peak(n: int = 2048, dtype: str = "float32", repeats: int = 10) -> dict:
    """FLOP/s of one large square matmul under XLA (the machine's practical peak)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
    s = _median_seconds(jax.jit(jnp.matmul), (a, b), repeats)
    return {"n": n, "dtype": dtype, "median_s": s, "flops_per_s": 2 * n ** 3 / s,
            "repeats": repeats}


def encoder_flops(config, batch: int, length: int) -> float:
    """Forward FLOPs of one tower on [batch, length] (padded) tokens: the matmuls of every layer
    (Q, K, V, output, FFN in and out) and of attention (scores and context)."""
    d, ff = config.hidden_size, config.intermediate_size
    tokens = batch * length
    per_layer = 2 * tokens * (4 * d * d + 2 * d * ff) + 2 * 2 * batch * length * length * d
    return float(config.num_layers * per_layer)


def train_step_flops(config, batch: int, query_len: int, passage_len: int,
                     hard_negatives: int = 0) -> float:
    """Model FLOPs of one training step: forward + backward (2x forward) of both towers, the
    `hard_negatives` per pair included (passage tower, passage length; padded ones are encoded
    too).  GradCache's extra no-gradient forward pass is not model work and is not counted."""
    passages = batch * (1 + hard_negatives)
    return 3 * (encoder_flops(config, batch, query_len)
                + encoder_flops(config, passages, passage_len))


class _PeerProcess:
    """A bench/torch_peer.py worker process: one JSON reply per command line."""

    def __init__(self, args: list):
        cmd = [sys.executable, "-m", "hybrid_jax.bench.torch_peer", *args]
        # The glibc set-up our step loop trains under (hybrid_jax.host_memory), so the comparison
        # is of the frameworks, not of allocator settings (measured: the peer gains ~4% from it).
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=host_memory.child_environment())
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the PyTorch peer exited (see its stderr above)")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the PyTorch peer: {reply['error']}")
        return reply

    def _command(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> dict:
        out = self._command("quit")
        self.proc.wait(timeout=60)
        return out


class TorchPeer(_PeerProcess):
    """The PyTorch train worker (bench/torch_peer.py), driven one step at a time: same loss (hard
    negatives included when the batches file has them), GradCache over `micro_batches`, bfloat16
    autocast of the forward passes with `autocast`."""

    def __init__(self, model_dir: str, batches_file: str, threads: int, config, dropout: float,
                 autocast: bool = False, micro_batches: int = 1):
        super().__init__([
            "--model_dir", model_dir, "--batches", batches_file, "--threads", str(threads),
            "--learning_rate", str(config.optim.learning_rate),
            "--weight_decay", str(config.optim.weight_decay),
            "--temperature", str(config.loss.temperature),
            "--max_grad_norm", str(config.optim.max_grad_norm),
            "--dropout", str(dropout), "--micro_batches", str(micro_batches)]
            + (["--autocast"] if autocast else []))

    def step(self) -> dict:
        return self._command("step")


class TorchEncodePeer(_PeerProcess):
    """The PyTorch encode worker (torch_peer.py --encode_texts): sentence-transformers-style
    encoding of pre-tokenised texts (write them with `write_ragged_ids`)."""

    def __init__(self, model_dir: str, texts_file: str, threads: int, batch_size: int = 32,
                 autocast: bool = False):
        super().__init__(["--model_dir", model_dir, "--encode_texts", texts_file,
                          "--threads", str(threads), "--encode_batch", str(batch_size)]
                         + (["--autocast"] if autocast else []))

    def encode(self) -> dict:
        """One full pass over the texts -> {'seconds': s}."""
        return self._command("encode")

    def save(self, path: str) -> dict:
        """The last pass's embeddings (float32 [n, D], input order) as .npy at `path`."""
        return self._command(f"save {path}")


def write_ragged_ids(path: str, id_lists, pad_id: int) -> None:
    """Token id lists (special tokens included, truncated already) as the encode peer's .npz:
    flat_ids int32, offsets int64 [n + 1], pad_id."""
    lengths = [len(ids) for ids in id_lists]
    flat = np.concatenate([np.asarray(ids, np.int32).reshape(-1) for ids in id_lists]
                          + [np.zeros(0, np.int32)])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    np.savez(path, flat_ids=flat, offsets=offsets, pad_id=np.int64(pad_id))


def _setup_run(config, tmp: str):
    """The real training run (pretrained weights, runner, data iterator) in a scratch workdir."""
    from hybrid_jax import train

    pretrained = train.load_model(config)
    return pretrained, train.setup(config, os.path.join(tmp, "run"), pretrained)


def export_peer_model(config, tmp: str) -> str:
    """The pretrained weights in Hugging Face format for the peer, written by `python -m
    hybrid_jax.export` in a child process: the export imports transformers and with it PyTorch
    (~200 MB resident), which a training process never holds, so our process's peak stays a
    training run's."""
    model_dir = os.path.join(tmp, "hf")
    if not os.path.isdir(model_dir):
        done = subprocess.run([sys.executable, "-m", "hybrid_jax.export", "--model",
                               str(config.model.spec), "--out", model_dir],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"exporting the peer's model failed: {done.stderr.strip()}")
    return model_dir


def _torch_available() -> bool:
    """PyTorch and transformers are installed (looked up, not imported: see export_peer_model)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


def train_step_benchmark(config, rounds: int = 10, n_batches: int = 4, peer: bool = True,
                         peak: dict | None = None) -> dict:
    """Median seconds per step of our step (and the peer's), throughput, FLOP/s, compile count."""
    import jax

    out: dict = {"devices": [str(d) for d in jax.local_devices()], "rounds": rounds}
    # The step loop runs under the allocator set-up hybrid_jax.train's loop uses.
    with tempfile.TemporaryDirectory(prefix="hybrid_jax_bench_") as tmp, \
            count_compiles() as compiles, host_memory.reuse_freed_memory():
        t = time.perf_counter()
        pretrained, run = _setup_run(config, tmp)
        pretrained = run.pretrained  # as a training run holds it: no host copy of the weights
        out["setup_s"] = time.perf_counter() - t
        batches = [next(run.iterator) for _ in range(n_batches)]  # the pipeline is not timed here
        b, lq = batches[0]["query_ids"].shape
        lp = batches[0]["passage_ids"].shape[1]
        hard = batches[0]["negative_ids"].shape[1] if "negative_ids" in batches[0] else 0
        masks = ("query_mask", "passage_mask", "negative_mask")  # negatives are encoded too
        real_tokens = float(np.mean([sum(batch[k].sum() for k in masks if k in batch)
                                     for batch in batches]))
        out.update(batch=b, query_len=lq, passage_len=lp, hard_negatives=hard,
                   padded_tokens_per_step=b * (lq + lp * (1 + hard)),
                   real_tokens_per_step=real_tokens)

        state = run.state
        cpu = []  # (user, system) CPU seconds of each step, this process's threads together

        def jax_step(i):
            nonlocal state
            t0, c0 = time.perf_counter(), cpu_seconds()
            state, metrics = run.runner(state, run.frozen,
                                        run.runner.shard_batch(batches[i % n_batches]))
            loss = float(jax.device_get(metrics["loss"]).reshape(-1)[0])
            cpu.append(cpu_seconds(since=c0))
            return time.perf_counter() - t0, loss

        first_s, first_loss = jax_step(0)
        cpu.clear()
        out["first_step_s"] = first_s              # compile + one step
        out["compiles_first_step"] = len(compiles)
        out["compile_s"] = float(sum(compiles))
        n_before = len(compiles)

        torch_peer = _maybe_peer(config, pretrained, batches, tmp, peer, out)

        jax_s, torch_s, ratios, losses = [], [], [], {"jax": [first_loss], "torch": []}
        peer_cpu = []
        for r in range(rounds):
            s, loss = jax_step(r + 1)
            jax_s.append(s)
            losses["jax"].append(loss)
            if torch_peer is not None:
                reply = torch_peer.step()
                torch_s.append(reply["seconds"])
                peer_cpu.append((reply["user_s"], reply["system_s"]))
                losses["torch"].append(reply["loss"])
                ratios.append(reply["seconds"] / s)
        out["compiles_after_first_step"] = len(compiles) - n_before
        if torch_peer is not None:
            out["peer"]["max_rss_mb"] = torch_peer.close()["max_rss_mb"]
        out["max_rss_mb"] = max_rss_mb()

    out["losses"] = losses
    out.update(_cpu_summary(cpu, jax_s))
    if peer_cpu:
        out["peer"].update(_cpu_summary(peer_cpu, torch_s))
    _summarise(out, pretrained.config, jax_s, torch_s, ratios, peak)
    return out


def cpu_seconds(since=None) -> tuple:
    """(user, system) CPU seconds this process has used (all its threads), or used since the
    earlier reading `since`."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    now = (r.ru_utime, r.ru_stime)
    return now if since is None else (now[0] - since[0], now[1] - since[1])


def _cpu_summary(cpu: list, wall: list) -> dict:
    """Median user and system CPU seconds per step, and the cores busy on average (CPU time over
    wall time): how much of the machine a step keeps working, and how much of it the kernel."""
    return {"user_s": _median([u for u, _ in cpu]), "system_s": _median([k for _, k in cpu]),
            "cores_busy": _median([(u + k) / w for (u, k), w in zip(cpu, wall)])}


def _maybe_peer(config, pretrained, batches: list, tmp: str, peer: bool, out: dict):
    """The started peer (its info in out['peer']), or None when off or torch is missing."""
    if peer and _torch_available():
        # bfloat16 runs: the peer's forward passes under its own bf16 path (CPU autocast)
        autocast = config.model.get("compute_dtype", "float32") == "bfloat16"
        torch_peer = _start_peer(config, pretrained, batches, tmp, autocast=autocast)
        out["peer"] = dict(torch_peer.info)
        return torch_peer
    if peer:
        out["peer"] = {"skipped": "torch/transformers not installed"}
    return None


def _start_peer(config, pretrained, batches: list, tmp: str,
                autocast: bool = False) -> TorchPeer:
    """The PyTorch peer on the same weights (exported to HF format) and the same batches (their
    hard negatives included), accumulating over the run's `optim.grad_accum_steps` as ours does."""
    from hybrid_jax.steps import MODEL_INPUTS, NEGATIVE_INPUTS

    model_dir = export_peer_model(config, tmp)
    batch_file = os.path.join(tmp, "batches.npz")
    keys = [k for k in MODEL_INPUTS + NEGATIVE_INPUTS if k in batches[0]]
    np.savez(batch_file, **{k: np.stack([x[k] for x in batches]) for k in keys})
    micro_batches = int(config.optim.get("grad_accum_steps", 1) or 1)
    # the dropout our step trains with (the model's, or the config's override)
    peer = TorchPeer(model_dir, batch_file, os.cpu_count() or 1, config,
                     float(pretrained.config.hidden_dropout), autocast=autocast,
                     micro_batches=micro_batches)
    peer.step()  # warm-up (allocator, thread pool)
    return peer


def _summarise(out: dict, model_config, jax_s: list, torch_s: list, ratios: list,
               peak: dict | None) -> None:
    """Medians, throughput and FLOP/s of the timed rounds into `out`."""
    b, lq, lp = out["batch"], out["query_len"], out["passage_len"]
    step_s = _median(jax_s)
    flops = train_step_flops(model_config, b, lq, lp, out["hard_negatives"])
    out.update(step_s=step_s, step_s_all=jax_s, steps_per_s=1 / step_s, examples_per_s=b / step_s,
               padded_tokens_per_s=out["padded_tokens_per_step"] / step_s,
               real_tokens_per_s=out["real_tokens_per_step"] / step_s,
               model_flops_per_step=flops, model_flops_per_s=flops / step_s)
    if peak:
        out["fraction_of_matmul_peak"] = out["model_flops_per_s"] / peak["flops_per_s"]
    if torch_s:
        out["peer"].update(step_s=_median(torch_s), step_s_all=torch_s,
                           examples_per_s=b / _median(torch_s))
        # > 1: our step is faster.  Median of per-round ratios (each pair ran back to back).
        out["speedup_vs_peer"] = _median(ratios)


def write_json(path, obj) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _op_category(name: str) -> str:
    """'ynn_fusion.793' -> 'ynn_fusion': one row per kind of XLA thunk."""
    return re.sub(r"[._]\d+$", "", name)


def step_profile(config, steps: int = 3, top: int = 15, peer: bool = True) -> dict:
    """Where the step's time goes: jax.profiler trace of `steps` warm steps, the wall time of
    XLA's thunks summed per kind of op, and split into batched products (attention), 2-D
    matmuls (dense layers) and the rest, with the FLOP/s each matmul group ran at; and the
    passages' attention scores product timed alone, ours and (`peer`) PyTorch's."""
    import jax

    from hybrid_jax.bench import hlo_dots

    with tempfile.TemporaryDirectory(prefix="hybrid_jax_profile_") as tmp, \
            host_memory.reuse_freed_memory():
        pretrained, run = _setup_run(config, tmp)
        raw = [next(run.iterator) for _ in range(2)]
        batches = [run.runner.shard_batch(b) for b in raw]
        state = run.state
        for i in range(2):  # compile and warm up outside the trace
            state, m = run.runner(state, run.frozen, batches[i % 2])
        jax.block_until_ready(m)
        t = time.perf_counter()
        with jax.profiler.trace(os.path.join(tmp, "trace")):
            for i in range(steps):
                state, m = run.runner(state, run.frozen, batches[i % 2])
            jax.block_until_ready(m)
        wall = (time.perf_counter() - t) / steps
        files = list(pathlib.Path(tmp, "trace").rglob("*.xplane.pb"))
        data = jax.profiler.ProfileData.from_file(str(files[0]))
        matmuls = {}
        for text in run.runner.compiled_texts():
            matmuls.update(hlo_dots.matmul_thunks(text))
    # XLA:CPU traces each thunk (one HLO op or fusion) with an `hlo_op` stat, on the thread that
    # runs it: the caller's or one of XLA's pool threads, which run independent thunks at the
    # same time; a thunk's parallel parts run inside it on the same pool.
    events = [(ev.start_ns, ev.start_ns + ev.duration_ns, ev.name)
              for plane in data.planes for line in plane.lines for ev in line.events
              if not ev.name.startswith("end: ") and any(k == "hlo_op" for k, _ in ev.stats)]
    per_thunk, runs = collections.Counter(), collections.Counter()
    for start, end, name in events:
        per_thunk[name] += (end - start) / 1e9 / steps
        runs[name] += 1 / steps  # a thunk in a loop body runs several times
    shared, busy = _shared_time(events)
    per_kind = collections.Counter()
    for name, s in per_thunk.items():
        per_kind[_op_category(name)] += s
    total = sum(per_thunk.values())
    first = raw[0]
    b, lq = first["query_ids"].shape
    hard = first["negative_ids"].shape[1] if "negative_ids" in first else 0
    lp = first["passage_ids"].shape[1]
    heads = pretrained.config.num_heads
    scores = (b * heads, lp, pretrained.config.hidden_size // heads)
    return {"steps": steps, "batch": b, "query_len": lq, "passage_len": lp,
            "hard_negatives": hard, "step_s_traced": wall, "thunk_s_per_step": total,
            "busy_s_per_step": busy / 1e9 / steps,
            "top": [{"op": k, "s_per_step": v, "share": v / total}
                    for k, v in per_kind.most_common(top)],
            "groups": _matmul_groups(per_thunk, runs, matmuls,
                                     {n: v / 1e9 / steps for n, v in shared.items()}),
            "scores_product": scores_product_rates(*scores, peer=peer)}


def scores_product_rates(batch: int, length: int, head_dim: int, peer: bool = True) -> dict:
    """The attention scores product Q @ K^T over [batch (x heads), length, head_dim] float32,
    alone: median seconds and FLOP/s under XLA, and under PyTorch's `torch.bmm` in its own
    process (`peer` and torch installed) with as many threads."""
    import jax
    import jax.numpy as jnp

    q, k = (jax.random.normal(jax.random.key(i), (batch, length, head_dim)) for i in range(2))
    s = _median_seconds(jax.jit(lambda a, b: jnp.einsum("bqd,bkd->bqk", a, b)), (q, k), 20)
    flops = 2.0 * batch * length * length * head_dim
    out = {"shape": [batch, length, head_dim], "gflop": flops / 1e9,
           "xla": {"median_s": s, "flops_per_s": flops / s}}
    if peer and _torch_available():
        done = subprocess.run([sys.executable, "-m", "hybrid_jax.bench.torch_peer", "--bmm",
                               f"{batch},{length},{head_dim}", "--threads",
                               str(os.cpu_count() or 1)], capture_output=True, text=True,
                              env=host_memory.child_environment())
        if done.returncode:
            raise RuntimeError(f"the PyTorch peer's bmm failed: {done.stderr.strip()}")
        out["torch"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _shared_time(events: list) -> tuple[dict, float]:
    """({thunk name: ns}, busy ns) over (start_ns, end_ns, name) intervals: each stretch of
    time is split evenly among the thunks running then, so the names' times add up to the busy
    time (the time any thunk ran)."""
    edges = sorted([(s, 1, i) for i, (s, _, _) in enumerate(events)]
                   + [(e, -1, i) for i, (_, e, _) in enumerate(events)])
    shared, running, last, busy = collections.Counter(), set(), 0, 0
    for t, change, i in edges:
        if running:
            busy += t - last
            for j in running:
                shared[events[j][2]] += (t - last) / len(running)
        last = t
        if change > 0:
            running.add(i)
        else:
            running.discard(i)
    return shared, busy


def _matmul_groups(per_thunk: dict, runs: dict, matmuls: dict, shared: dict) -> list[dict]:
    """Per group (batched products, 2-D matmuls, other ops): thunk seconds per step, wall
    seconds per step (time shared among concurrent thunks, `shared`) and their share of the busy
    time, and the matmul groups' GFLOP per step and FLOP/s on that wall time (their fused
    element-wise ops count in their time).  `runs`: executions of each thunk per step."""
    from hybrid_jax.bench.hlo_dots import BATCHED, PLAIN

    groups = {g: {"group": g, "s_per_step": 0.0, "wall_s_per_step": 0.0, "gflop_per_step": 0.0}
              for g in (BATCHED, PLAIN, "other ops")}
    for name, s in per_thunk.items():
        mm = matmuls.get(name)
        g = groups[mm["kind"] if mm else "other ops"]
        g["s_per_step"] += s
        g["wall_s_per_step"] += shared.get(name, 0.0)
        if mm:
            g["gflop_per_step"] += mm["flops"] * runs[name] / 1e9
    busy = sum(g["wall_s_per_step"] for g in groups.values())
    for g in groups.values():
        g["share"] = g["wall_s_per_step"] / busy if busy else 0.0
        if g["gflop_per_step"] and g["wall_s_per_step"]:
            g["flops_per_s"] = g["gflop_per_step"] * 1e9 / g["wall_s_per_step"]
    return list(groups.values())
