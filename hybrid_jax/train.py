"""The training loop: pretrained weights -> contrastive fine-tuning -> checkpoints and evaluation.

`train_and_evaluate(config, workdir)` is the whole run.  Resume order: the latest checkpoint in
`workdir`, else the pretrained weights named by `config.model.spec`.  Everything the run writes
lives under `workdir`: config.json, metrics.jsonl, tensorboard/, checkpoints/, frozen_params/,
eval/.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

import jax
import numpy as np

from hybrid_jax import checkpointing, host_memory, losses, metrics_writer, optim, steps
from hybrid_jax.errors import InputError

PRNG_IMPLS = ("rbg", "unsafe_rbg", "threefry2x32")
MODES_WITH_EVAL = ("train_and_evaluate",)


# ----------------------------------------------------------------------------- validation


def _devices(config) -> list:
    available = jax.local_devices()
    n = int(config.num_devices)
    if n < 0 or n > len(available):
        raise InputError(f"num_devices: {n} requested but {len(available)} local devices exist")
    return available[:n] if n else available


_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/")  # a scheme of 2+ letters: not a drive letter


def check_workdir(workdir) -> str:
    if not workdir:
        raise InputError("--workdir is required")
    workdir = os.fspath(workdir)
    url = _URL.match(workdir)  # gs://b/x, or gs:/b/x once a pathlib.Path has collapsed the '//'
    if url:
        # Everything under the workdir is written with plain file I/O: a URL would silently
        # become a local directory named "gs:" (or "s3:") on each host.
        scheme, path = url.group(1).lower(), workdir[url.end():].strip("/")
        example = f" (here --workdir /gcs/{path})" if scheme == "gs" and path else ""
        raise InputError(
            f"workdir {workdir}: a URL, not a directory: mount the bucket on every host (for "
            f"gs://, Cloud Storage FUSE: gcsfuse --implicit-dirs BUCKET /gcs/BUCKET) and pass the "
            f"mount path{example}; launch/tpu.sh run does both for a gs:// workdir")
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise InputError(f"workdir {workdir}: exists and is not a directory")
    try:
        os.makedirs(workdir, exist_ok=True)
    except OSError as e:
        raise InputError(f"workdir {workdir}: cannot create it ({e.strerror})") from e
    if not os.path.isdir(workdir):
        raise InputError(f"workdir {workdir}: exists and is not a directory")
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise InputError(f"workdir {workdir}: not writable")
    probe = os.path.join(workdir, f".write_test.{os.getpid()}")
    try:  # os.access says yes to root on a read-only file system: really write
        with open(probe, "w") as f:
            f.write("x")
        os.remove(probe)
    except OSError as e:
        raise InputError(f"workdir {workdir}: not writable ({e.strerror})") from e
    return workdir


def validate_config(config, num_devices: Optional[int] = None) -> None:
    """Impossible values stop the run before anything is loaded, with one message naming the key."""
    def require(ok, key, message):
        if not ok:
            raise InputError(f"{key}: {message}")

    require(config.parallelism in steps.PARALLELISMS, "parallelism",
            f"{config.parallelism!r} is not one of {', '.join(steps.PARALLELISMS)}")
    n = num_devices if num_devices is not None else len(_devices(config))
    batch = int(config.data.global_batch_size)
    accum = int(config.optim.grad_accum_steps)
    require(batch >= 1, "data.global_batch_size", f"must be >= 1, got {batch}")
    require(accum >= 1, "optim.grad_accum_steps", f"must be >= 1, got {accum}")
    procs = jax.process_count()
    require(batch % (procs * n * accum) == 0, "data.global_batch_size",
            f"{batch} is not divisible by {procs * n} devices x {accum} accumulation steps")
    require(0.0 <= float(config.data.alpha) <= 1.0, "data.alpha",
            f"must lie in [0, 1], got {config.data.alpha}")
    require(int(config.train.num_steps) >= 1, "train.num_steps",
            f"must be >= 1, got {config.train.num_steps}")
    require(int(config.train.log_every) >= 1, "train.log_every",
            f"must be >= 1, got {config.train.log_every}")
    require(int(config.train.checkpoint_every) >= 0, "train.checkpoint_every", "must be >= 0")
    require(int(config.train.keep_checkpoints) >= 1, "train.keep_checkpoints", "must be >= 1")
    require(config.train.prng_impl in PRNG_IMPLS, "train.prng_impl",
            f"{config.train.prng_impl!r} is not one of {', '.join(PRNG_IMPLS)}")
    require(float(config.loss.temperature) > 0, "loss.temperature",
            f"must be > 0, got {config.loss.temperature}")
    require(int(config.loss.num_hard_negatives) >= 0, "loss.num_hard_negatives", "must be >= 0")
    require(float(config.optim.learning_rate) >= 0, "optim.learning_rate", "must be >= 0")
    require(int(config.optim.warmup_steps) >= 0, "optim.warmup_steps", "must be >= 0")
    require(int(config.eval.every_steps) >= 0, "eval.every_steps", "must be >= 0")
    require(float(config.model.dropout) < 1.0, "model.dropout", "must be < 1")
    optim.make_schedule(config.optim, int(config.train.num_steps))  # schedule name
    optim.frozen_predicate(config.optim)                            # frozen_params regex


# ----------------------------------------------------------------------------- model and data


def load_model(config):
    """The pretrained model named by config.model.spec with the run's overrides."""
    from hybrid_jax.models.pretrained import load_pretrained

    overrides: dict[str, Any] = {"compute_dtype": config.model.compute_dtype}
    if float(config.model.dropout) >= 0:
        overrides.update(hidden_dropout=float(config.model.dropout),
                         attention_dropout=float(config.model.dropout))
    return load_pretrained(config.model.spec, **overrides)


class SyntheticIterator:
    """Random learnable batches in the pipeline's format (passages share tokens with their
    queries); the state is the number of batches drawn, so restore is exact."""

    def __init__(self, data_config, vocab_size: int, seed: int = 0,
                 process_index: int = 0, process_count: int = 1):
        self.c = data_config
        self.vocab = min(int(vocab_size), 1000)
        self.seed = seed
        self.step = 0
        self.process_index, self.process_count = process_index, process_count

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        b = int(self.c.global_batch_size)
        lq, lp = int(self.c.query_max_length), int(self.c.passage_max_length)
        rng = np.random.default_rng((self.seed, self.step))
        self.step += 1
        q = rng.integers(5, self.vocab, size=(b, lq), dtype=np.int32)
        p = rng.integers(5, self.vocab, size=(b, lp), dtype=np.int32)
        shared = min(lq, lp) // 2
        p[:, 1:1 + shared] = q[:, 1:1 + shared]
        q_len = rng.integers(max(2, shared + 1), lq + 1, size=b)
        mask_q = (np.arange(lq)[None] < q_len[:, None]).astype(np.int32)
        mask_p = np.ones((b, lp), np.int32)
        lang = rng.integers(0, 11, size=b).astype(np.int32)
        batch = dict(query_ids=np.where(mask_q > 0, q, 1), query_mask=mask_q,
                     passage_ids=p, passage_mask=mask_p,
                     is_mono=np.ones(b, np.int32), query_lang=lang, passage_lang=lang,
                     example_id=np.arange(b) + b * (self.step - 1))
        per = b // self.process_count
        lo = self.process_index * per
        return {k: v[lo:lo + per] for k, v in batch.items()}

    def get_state(self):
        return {"step": self.step}

    def set_state(self, state):
        self.step = int(state["step"])


def make_train_iterator(config, pretrained):
    if config.data.synthetic:
        return SyntheticIterator(config.data, pretrained.config.vocab_size, seed=config.data.seed,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count())
    from hybrid_jax.data import pipeline

    return pipeline.make_train_iterator(
        config.data, pretrained.tokenizer, pretrained.prefixes.get("query", ""),
        pretrained.prefixes.get("passage", ""), process_index=jax.process_index(),
        process_count=jax.process_count())


# ----------------------------------------------------------------------------- run pieces


def save_config(config, workdir: str) -> None:
    """workdir/config.json; a different earlier config is kept as config.<n>.json."""
    path = os.path.join(workdir, "config.json")
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if old == text:
            return
        n = 1
        while os.path.exists(os.path.join(workdir, f"config.{n}.json")):
            n += 1
        os.replace(path, os.path.join(workdir, f"config.{n}.json"))
    with open(path, "w") as f:
        f.write(text)


@dataclasses.dataclass
class Run:
    """Everything a training run holds between steps."""
    config: Any
    workdir: str
    pretrained: Any
    runner: steps.Runner
    state: Any                # in the runner's layout
    frozen: Any               # in the runner's layout
    frozen_host: Any
    schedule: Callable
    checkpointer: checkpointing.Checkpointer
    iterator: Any
    start_step: int


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _log(message: str) -> None:
    if jax.process_index() == 0:
        print(message, flush=True)


def setup(config, workdir: str, pretrained=None) -> Run:
    devices = _devices(config)
    validate_config(config, len(devices))
    if pretrained is None:
        t = time.time()
        pretrained = load_model(config)
        _log(f"model {config.model.spec}: {pretrained.config.num_layers} layers, hidden "
             f"{pretrained.config.hidden_size} ({time.time() - t:.1f}s to load)")
    from hybrid_jax.models.dual_encoder import DualEncoder, tie_or_untie

    module = DualEncoder(pretrained.config, tied=bool(config.model.tied))
    num_steps = int(config.train.num_steps)
    tx, schedule = optim.make_optimizer(config.optim, num_steps)
    full = {"model": tie_or_untie(pretrained.encoder_params, bool(config.model.tied)),
            "loss": losses.init_loss_params(config.loss)}
    full = jax.tree.map(np.asarray, full)
    trainable, frozen = optim.split_params(full, optim.frozen_predicate(config.optim))
    host_state = steps.create_state(trainable, tx)

    iterator = make_train_iterator(config, pretrained)  # bad data stops before anything is written
    checkpointer = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints,
                                              async_save=bool(config.train.async_checkpointing))
    start_step = 0
    latest = checkpointer.latest_step()
    if latest is not None:
        host_state, data_state = checkpointer.restore(latest, host_state)
        if data_state is not None:
            iterator.set_state(data_state)
        start_step = int(host_state.step)
        _log(f"resuming from {checkpointer.directory}/{latest}")
    else:  # every process: an orbax save is collective (process 0 writes the numpy arrays)
        checkpointing.save_frozen(workdir, frozen)

    runner = steps.make_runner(config.parallelism, module, tx, schedule, config.loss,
                               devices=devices, seed=int(config.seed),
                               prng_impl=config.train.prng_impl,
                               grad_accum_steps=int(config.optim.grad_accum_steps))
    state = runner.replicate(host_state)
    del host_state
    return Run(config, workdir, pretrained, runner, state, runner.replicate(frozen), frozen,
               schedule, checkpointer, iterator, start_step)


def model_params(run: Run):
    """Current dual-encoder params (trained + frozen) as one host tree."""
    trainable = jax.device_get(run.runner.unreplicate(run.state.params))
    # On device once, so evaluation's jitted encoder does not re-send the table every batch.
    return jax.device_put(optim.merge_params(trainable, run.frozen_host)["model"])


def eval_datasets(config) -> list:
    return [d.to_dict() if hasattr(d, "to_dict") else d for d in (config.eval.datasets or [])]


def run_evaluation(run_or_bundle, config, eval_dir: str, step: int, name: str,
                   writer: Optional[metrics_writer.MetricsWriter] = None) -> dict:
    """Evaluation hook: hybrid_jax.evaluation.run.evaluate on config.eval.datasets; reports go to
    `eval_dir`/eval/<dataset>/ and headline scalars to metrics.jsonl (as eval/<name>)."""
    datasets = eval_datasets(config)
    if not datasets:
        return {}
    from hybrid_jax.evaluation import run as eval_run  # lazily: only runs that evaluate need it

    bundle = run_or_bundle
    if isinstance(run_or_bundle, Run):
        bundle = run_or_bundle.pretrained.bundle(tied=bool(config.model.tied),
                                                 params=model_params(run_or_bundle))
        bundle.name = name
    t = time.time()
    # Every process evaluates (they stay in step; local devices only), process 0 writes.
    results = eval_run.evaluate(bundle, datasets, eval_dir, config.eval,
                                write=jax.process_index() == 0)
    scalars = results.get("scalars", {})
    if writer is not None and scalars:
        writer.write(step, {f"eval/{k}": v for k, v in scalars.items()
                            if isinstance(v, (int, float))})
    _log(f"evaluation at step {step} ({time.time() - t:.1f}s): "
         + ", ".join(f"{k} {v:.4f}" for k, v in list(scalars.items())[:8]
                     if isinstance(v, (int, float))))
    return results


def _check_first_batch(batch: dict, config, runner: steps.Runner) -> None:
    missing = [k for k in steps.MODEL_INPUTS if k not in batch]
    if missing:
        raise InputError(f"data: the training iterator gives no {missing}")
    b = batch["query_ids"].shape[0]
    expected = int(config.data.global_batch_size) // jax.process_count()
    if b != expected:
        raise InputError(f"data: batch of {b} examples, expected {expected} "
                         f"(data.global_batch_size / processes)")
    if int(config.loss.num_hard_negatives) > 0 and "negative_ids" not in batch:
        raise InputError(f"loss.num_hard_negatives={config.loss.num_hard_negatives} but the data "
                         f"pipeline gives no hard negatives (negative_ids)")


class TrainingDiverged(RuntimeError):
    """A non-finite loss, gradient or parameter norm: the run stops, its last good checkpoint
    (saved before the bad step) is kept and the bad state is never saved."""


_FINITE_KEYS = ("loss", "grad_norm", "param_norm")


def _check_finite(fetched: list, first_step: int, example_ids: list, run: "Run") -> None:
    """`fetched[i]`: host metrics of step `first_step + i` (1-based update count); raises
    TrainingDiverged naming the first bad step and the example ids of its batch."""
    for i, m in enumerate(fetched):
        bad = {k: m[k] for k in _FINITE_KEYS if k in m and not np.isfinite(m[k])}
        if not bad:
            continue
        ids = example_ids[i] if i < len(example_ids) else None
        ids_text = ("unknown (the batch has no example_id)" if ids is None
                    else "[" + ", ".join(str(int(x)) for x in np.ravel(ids)) + "]")
        last = run.checkpointer.latest_step()
        kept = (f"the last good checkpoint is {checkpointing.CHECKPOINT_DIR}/{last}"
                if last is not None else "no checkpoint was saved before it")
        values = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise TrainingDiverged(
            f"training diverged at step {first_step + i} ({values}); batch example ids "
            f"{ids_text}; {kept} in {run.workdir} (the bad state was not saved)")


class _PreemptionFlag:
    """SIGTERM (a TPU/GCE preemption notice, SLURM's pre-kill signal) -> finish the step, save,
    exit 0.  Multi-process runs ask jax's preemption sync point instead, so every process stops at
    the same step (an orbax save is collective)."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        if self.signum is None:
            print(f"received signal {signum}: finishing the current step, then saving a "
                  f"checkpoint", file=sys.stderr, flush=True)
        self.signum = signum

    def __enter__(self):
        # Multi-process: jax.distributed's preemption notifier owns SIGTERM (replacing its
        # handler would hide the notice from the sync point).
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM,):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            try:
                return bool(multihost_utils.reached_preemption_sync_point(step))
            except RuntimeError:  # preemption service not running: fall back to the local flag
                pass
        return self.signum is not None


def train(run: Run, writer: metrics_writer.MetricsWriter, *, evaluate_every: int = 0,
          stop_at: Optional[int] = None) -> dict:
    """Steps from run.start_step to config.train.num_steps (or `stop_at`): logs, checkpoints and
    evaluates at their cadences, saves the final state.  Returns the last logged metrics."""
    c = run.config
    num_steps = int(c.train.num_steps)
    end = num_steps if stop_at is None else min(int(stop_at), num_steps)
    log_every, ckpt_every = int(c.train.log_every), int(c.train.checkpoint_every)
    global_batch = int(c.data.global_batch_size)
    step = run.start_step
    last: dict = {}
    if step >= end:
        _log(f"step {step}: nothing to train (train.num_steps = {num_steps})")
        return last
    _log(f"training steps {step}..{end} of {num_steps} on {run.runner.num_devices} "
         f"{jax.devices()[0].platform} device(s) ({c.parallelism}), global batch {global_batch}")
    pending, pending_ids = [], []   # device metrics and host example ids since the last fetch
    fetched_unlogged: list = []     # fetched (checked) metrics not yet logged
    first_pending = step + 1        # update count of pending[0]
    last_saved = run.checkpointer.latest_step()
    t_interval, steps_interval = time.time(), 0
    t_first = None

    def fetch_and_check():
        """Pending device metrics -> host, non-finite values -> TrainingDiverged.  Called at the
        log interval and before every save (which syncs anyway): no extra per-step host sync."""
        nonlocal pending, pending_ids, first_pending
        fetched = [run.runner.metrics_to_host(m) for m in pending]
        _check_finite(fetched, first_pending, pending_ids, run)
        fetched_unlogged.extend(fetched)
        first_pending += len(pending)
        pending, pending_ids = [], []

    def save(at: int, force: bool = False):
        nonlocal last_saved
        fetch_and_check()
        if last_saved == at:
            return
        run.checkpointer.save(at, run.runner.unreplicate(run.state), run.iterator.get_state(),
                              force=force)
        last_saved = at

    preempted = False
    # Same-shaped steps: each step's freed temporaries stay mapped for the next (host_memory).
    with _PreemptionFlag() as preemption, host_memory.reuse_freed_memory():
        try:
            while step < end:
                batch = next(run.iterator)
                if step == run.start_step:
                    _check_first_batch(batch, c, run.runner)
                run.state, metrics = run.runner(run.state, run.frozen,
                                                run.runner.shard_batch(batch))
                step += 1
                steps_interval += 1
                pending.append(metrics)
                pending_ids.append(batch.get("example_id"))
                if step == run.start_step + 1:
                    # First step includes compilation: time the rest from here.
                    jax.block_until_ready(metrics)
                    t_first = time.time() - t_interval
                    _log(f"step {step}: compiled and ran the first step in {t_first:.1f}s")
                    t_interval, steps_interval = time.time(), 0
                if step % log_every == 0 or step == end:
                    fetch_and_check()
                    fetched, fetched_unlogged[:] = list(fetched_unlogged), []
                    now = time.time()
                    rate = steps_interval / (now - t_interval) if steps_interval else 0.0
                    last = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
                    last.update(lr=fetched[-1]["lr"], param_norm=fetched[-1]["param_norm"])
                    if rate:
                        last.update(steps_per_sec=rate, examples_per_sec=rate * global_batch)
                    writer.write(step, last)
                    eta = (end - step) / rate if rate else float("nan")
                    _log(f"step {step}/{num_steps} | loss {last['loss']:.4f} acc "
                         f"{last['accuracy']:.3f} | lr {last['lr']:.2e} grad "
                         f"{last['grad_norm']:.3f}"
                         + (f" | {rate:.2f} steps/s {rate * global_batch:.1f} ex/s | ETA "
                            f"{_fmt_time(eta)}" if rate else ""))
                    t_interval, steps_interval = now, 0
                if preemption.should_stop(step) and step < end:
                    preempted = True
                    break
                if ckpt_every and step % ckpt_every == 0 and step < end:
                    save(step)
                if evaluate_every and step % evaluate_every == 0 and step < end:
                    run.checkpointer.wait()
                    t_eval = time.time()
                    run_evaluation(run, c,
                                   os.path.join(run.workdir, "eval_steps", f"step_{step}"),
                                   step, f"{run.workdir}@{step}", writer)
                    t_interval += time.time() - t_eval  # evaluation time is not training time
            save(step, force=True)
        finally:
            run.checkpointer.wait()
    if preempted:
        reason = f"signal {preemption.signum}" if preemption.signum else "preemption notice"
        _log(f"preempted ({reason}): saved {checkpointing.CHECKPOINT_DIR}/"
             f"{step} in {run.workdir}; rerun the same command to continue")
        last = dict(last, preempted_at=step)
    return last


def enable_compilation_cache(config) -> None:
    """Persistent XLA compilation cache (config.train.compilation_cache_dir; '' disables): a
    restarted or repeated run skips most of the step's compile time."""
    directory = str(config.train.get("compilation_cache_dir", "") or "")
    if not directory or jax.config.jax_compilation_cache_dir:
        return
    directory = os.path.expanduser(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return  # a cache is an optimisation: never fail a run for it
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def train_and_evaluate(config, workdir, *, evaluate: bool = True,
                       stop_at: Optional[int] = None) -> dict:
    """The whole run: set up (or resume), train to the step budget, evaluate at the cadence and
    at the end (when `evaluate` and config.eval.datasets is set).  Returns final metrics.
    `stop_at` ends this invocation early (a checkpoint is saved) without changing the schedule."""
    workdir = check_workdir(workdir)
    validate_config(config)
    enable_compilation_cache(config)
    run = setup(config, workdir)  # model, data, resume: a failure here leaves the workdir as it was
    if jax.process_index() == 0:
        save_config(config, workdir)
    writer = metrics_writer.MetricsWriter(workdir, enabled=jax.process_index() == 0)
    try:
        every = int(config.eval.every_steps) if evaluate else 0
        metrics = train(run, writer, evaluate_every=every, stop_at=stop_at)
        step = int(jax.device_get(run.runner.unreplicate(run.state.step)))
        if evaluate and step >= int(config.train.num_steps):
            results = run_evaluation(run, config, workdir, step, f"{workdir}@{step}", writer)
            if results:
                metrics = dict(metrics, eval=results)
        return metrics
    finally:
        writer.close()
        run.checkpointer.close()


def evaluate_checkpoint(config, workdir) -> dict:
    """--mode evaluate: the latest checkpoint of workdir, or the pretrained model if none."""
    workdir = check_workdir(workdir)
    if not eval_datasets(config):
        raise InputError("eval.datasets: empty; name the datasets to evaluate on")
    pretrained = load_model(config)
    step, name, params = 0, config.model.spec, None
    if os.path.isdir(os.path.join(workdir, checkpointing.CHECKPOINT_DIR)):
        checkpointer = checkpointing.Checkpointer(workdir, read_only=True)
        latest = checkpointer.latest_step()
        checkpointer.close()
        if latest is not None:
            params, _ = checkpointing.restore_params(workdir, latest)
            params = jax.device_put(params)
            step, name = latest, f"{workdir}@{latest}"
            _log(f"evaluating {checkpointing.CHECKPOINT_DIR}/{latest} of {workdir}")
    if params is None:
        _log(f"no checkpoint in {workdir}: evaluating the pretrained model {config.model.spec}")
    bundle = pretrained.bundle(tied=bool(config.model.tied), params=params)
    bundle.name = name
    return run_evaluation(bundle, config, workdir, step, name)
