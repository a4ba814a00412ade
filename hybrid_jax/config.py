"""The config schema's checks: everything that stops a run before anything is loaded or written.

The keys and their defaults are configs/default.py (`get_config(arg)`, with named variants; the
data and eval sections come from data/pipeline.py and evaluation/run.py, which read them).
`validate_config` checks every value a run reads, each with one message naming the key; keys that
name a registered member (data.format, model.spec, the type of each eval.datasets entry) are
looked up in their registry, whose error lists the known names. Also here: the workdir and the
devices.  Names the step and the optimizer accept (`PARALLELISMS`, `SCHEDULES`) are defined here,
with the other enumerations of the schema, and train/ reads them from here.
"""
from __future__ import annotations

import os
import re
from typing import Optional

import jax

from hybrid_jax.data.formats import FORMATS
from hybrid_jax.data.negatives import SOURCES as NEGATIVE_SOURCES
from hybrid_jax.data.mixture import MIXINGS, SCHEDULES as MIX_SCHEDULES, check_sources
from hybrid_jax.data.store_sampler import DRAWS
from hybrid_jax.data.sampler import CROSS_PAIRINGS, LANGUAGE_WEIGHTS, MONO_SCHEDULES, SAMPLINGS
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import run as eval_run
from hybrid_jax.evaluation.datasets import check_spec
from hybrid_jax.models import config as model_config
from hybrid_jax.models.families import family_of

PRNG_IMPLS = ("rbg", "unsafe_rbg", "threefry2x32")
PARALLELISMS = ("pmap", "shard_map")
SCHEDULES = ("constant", "linear", "cosine")
SELECT_METRICS = ("none", "loss", "map")  # train.select (train/selection.py)
TRAIN_FOLDS = ("train", "dev", "test", "all")
DISTILL_LOSSES = ("none", "kl", "margin_mse")  # loss.distill (train/losses.py: distill_loss)


def _require(ok, key: str, message: str) -> None:
    if not ok:
        raise InputError(f"{key}: {message}")


def _one_of(key: str, value, allowed) -> None:
    _require(value in allowed, key, f"{value!r} is not one of {', '.join(allowed)}")


def _check_regex(key: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise InputError(f"{key}: invalid regular expression {pattern!r} ({e})") from e


def devices(config) -> list:
    """The local devices a run uses (config.num_devices; 0: all)."""
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
    _one_of("parallelism", config.parallelism, PARALLELISMS)
    n = num_devices if num_devices is not None else len(devices(config))
    _check_batch(config, n)
    _check_data(config.data)
    _check_model(config)
    _require(float(config.loss.temperature) > 0, "loss.temperature",
             f"must be > 0, got {config.loss.temperature}")
    _check_distill(config)
    _require(float(config.optim.learning_rate) >= 0, "optim.learning_rate", "must be >= 0")
    _require(int(config.optim.warmup_steps) >= 0, "optim.warmup_steps", "must be >= 0")
    _require(isinstance(config.optim.get("warmup_from_zero", True), bool),
             "optim.warmup_from_zero", "must be True or False")
    _one_of("optim.schedule", config.optim.schedule, SCHEDULES)
    _check_regex("optim.frozen_params", config.optim.get("frozen_params", "") or "")
    _check_train(config.train)
    _check_selection(config)
    _check_eval(config.eval)


def _check_batch(config, num_devices: int) -> None:
    batch = int(config.data.global_batch_size)
    accum = int(config.optim.grad_accum_steps)
    _require(batch >= 1, "data.global_batch_size", f"must be >= 1, got {batch}")
    _require(accum >= 1, "optim.grad_accum_steps", f"must be >= 1, got {accum}")
    devices_total = jax.process_count() * num_devices
    _require(batch % (devices_total * accum) == 0, "data.global_batch_size",
             f"{batch} is not divisible by {devices_total} devices x {accum} accumulation steps")


def _check_data(d) -> None:
    _require(0.0 <= float(d.alpha) <= 1.0, "data.alpha", f"must lie in [0, 1], got {d.alpha}")
    _one_of("data.sampling", d.sampling, SAMPLINGS)
    _one_of("data.mono_schedule", d.mono_schedule, MONO_SCHEDULES)
    _one_of("data.cross_pairing", d.cross_pairing, CROSS_PAIRINGS)
    _one_of("data.language_weights", d.language_weights, LANGUAGE_WEIGHTS)
    _one_of("data.train_fold", d.train_fold, TRAIN_FOLDS)
    hard = d.hard_negatives
    _require(isinstance(hard, int) and not isinstance(hard, bool) and hard >= 0,
             "data.hard_negatives", f"must be an integer >= 0, got {hard!r}")
    _one_of("data.negative_source", d.negative_source, NEGATIVE_SOURCES)
    if hard and d.negative_source == "mined":
        _require(int(d.mining_depth) >= hard, "data.mining_depth",
                 f"{d.mining_depth} mined candidates cannot give data.hard_negatives={hard} "
                 f"per pair")
        if d.mining_model:
            family_of(str(d.mining_model))
    _check_mining_controls(d)
    if not d.synthetic:
        FORMATS.get(d.format)
    _check_corpora(d)


def _check_corpora(d) -> None:
    """The prepared-corpus keys (data/store_pipeline.py)."""
    fraction = d.get("train_fraction", 1.0)
    _require(isinstance(fraction, (int, float)) and not isinstance(fraction, bool)
             and 0.0 < float(fraction) <= 1.0, "data.train_fraction",
             f"must lie in (0, 1], got {fraction!r}")
    _one_of("data.draw", d.get("draw", "rejection"), DRAWS)
    _one_of("data.source_mixing", d.get("source_mixing", "batch"), MIXINGS)
    _one_of("data.source_schedule", d.get("source_schedule", "draw"), MIX_SCHEDULES)
    _require(isinstance(d.get("store", ""), str), "data.store",
             f"must be a corpus directory, 'auto' or '', got {d.get('store')!r}")
    if d.get("sources"):
        check_sources(d.sources)
        _require(not d.get("store"), "data.store", "set data.store or data.sources, not both")
    if _given_corpora(d):
        _require(not (d.hard_negatives and d.negative_source == "mined"), "data.negative_source",
                 "'mined' mines the configured source (data.format, data.dataset_dir); a corpus "
                 "given by data.store=<dir> / data.sources carries its own negatives")


def _given_corpora(d) -> bool:
    """Corpora given as directories (data.store=<dir>, data.sources), not prepared from the
    configured source ('' or 'auto'), which is all mining and a teacher model can read."""
    return bool(d.get("sources")) or str(d.get("store", "") or "") not in ("", "auto")


def _check_mining_controls(d) -> None:
    skip = d.get("mining_skip_top", 0)
    _require(isinstance(skip, int) and not isinstance(skip, bool) and skip >= 0,
             "data.mining_skip_top", f"must be an integer >= 0, got {skip!r}")
    margin = d.get("mining_margin", 0.0)
    _require(isinstance(margin, (int, float)) and 0 <= margin < 1, "data.mining_margin",
             f"must be a fraction in [0, 1) (0: off), got {margin!r}")
    rank_range = tuple(d.get("mining_range", (0, 0)))
    ok = (len(rank_range) == 2 and all(isinstance(r, int) and not isinstance(r, bool)
                                       for r in rank_range)
          and (rank_range == (0, 0) or 0 <= rank_range[0] < rank_range[1]))
    _require(ok, "data.mining_range", f"must be (lo, hi) with 0 <= lo < hi, or (0, 0) for off, "
                                      f"got {rank_range!r}")
    if rank_range == (0, 0):
        return
    hard = d.hard_negatives
    _require(d.negative_source != "mined" or rank_range[1] - rank_range[0] >= hard,
             "data.mining_range", f"{tuple(rank_range)} holds fewer ranks than "
                                  f"data.hard_negatives={hard}")


def _check_distill(config) -> None:
    """loss.distill: teacher scores over each pair's positive and hard negatives."""
    loss, d = config.loss, config.data
    _one_of("loss.distill", loss.distill, DISTILL_LOSSES)
    weight, temperature = loss.distill_weight, loss.distill_temperature
    _require(not isinstance(weight, bool) and isinstance(weight, (int, float)) and weight >= 0,
             "loss.distill_weight", f"must be a number >= 0, got {weight!r}")
    _require(not isinstance(temperature, bool) and isinstance(temperature, (int, float))
             and temperature > 0, "loss.distill_temperature",
             f"must be a number > 0, got {temperature!r}")
    teacher = str(d.teacher_model or "")
    if teacher:
        family_of(teacher)
    if loss.distill == "none":
        return
    _require(not d.synthetic, "loss.distill", "needs teacher scores; data.synthetic has none")
    _require(int(d.hard_negatives) > 0, "loss.distill",
             f"{loss.distill!r} compares each pair's positive with its hard negatives: set "
             f"data.hard_negatives > 0")
    _require(teacher or d.negative_source == "from_data", "data.teacher_model",
             f"'' takes the scores from the data, which score the records' own negatives "
             f"(data.negative_source='from_data', not {d.negative_source!r}); set a model spec "
             f"to score the {d.negative_source!r} negatives")
    _require(not (teacher and _given_corpora(d)), "data.teacher_model",
             "a model scores the configured source (data.format, data.dataset_dir); with "
             "data.store=<dir> / data.sources prepare the corpus from records carrying "
             "pos_scores / neg_scores")


def _check_model(config) -> None:
    m = config.model
    family_of(str(m.spec))
    _one_of("model.compute_dtype", m.compute_dtype, model_config.COMPUTE_DTYPES)
    _one_of("model.remat", m.remat, model_config.REMAT_POLICIES)
    _require(float(m.dropout) < 1.0, "model.dropout", "must be < 1")
    k = m.get("reinit_top_layers", 0)
    _require(isinstance(k, int) and not isinstance(k, bool) and k >= 0, "model.reinit_top_layers",
             f"must be an integer >= 0 (layers to re-initialise), got {k!r}")
    model_config.check_lora(m.lora_rank, m.lora_alpha, m.lora_targets, m.lora_dropout)


def _check_train(t) -> None:
    _require(int(t.num_steps) >= 1, "train.num_steps", f"must be >= 1, got {t.num_steps}")
    _require(int(t.log_every) >= 1, "train.log_every", f"must be >= 1, got {t.log_every}")
    _require(int(t.checkpoint_every) >= 0, "train.checkpoint_every", "must be >= 0")
    _require(int(t.keep_checkpoints) >= 1, "train.keep_checkpoints", "must be >= 1")
    _one_of("train.prng_impl", t.prng_impl, PRNG_IMPLS)


def _check_selection(config) -> None:
    """train.select: the dev-fold score that keeps the best step (train/selection.py)."""
    t = config.train
    _one_of("train.select", t.select, SELECT_METRICS)
    at_start = t.get("select_at_start", False)
    _require(isinstance(at_start, bool), "train.select_at_start", "must be True or False")
    per_query = t.get("select_per_query", False)
    _require(isinstance(per_query, bool), "train.select_per_query", "must be True or False")
    _require(not per_query or t.select == "map", "train.select_per_query",
             "writes the per-query scores of train.select='map': set it")
    if t.select == "none":
        _require(not at_start, "train.select_at_start",
                 "scores the starting model for dev selection: set train.select too")
        return
    _require(int(t.select_every) >= 1, "train.select_every",
             f"must be >= 1 with train.select={t.select!r}")
    _require(not config.data.synthetic, "train.select",
             "needs a dev fold; data.synthetic has none")
    _require(t.select != "map" or config.data.format == "lareqa", "train.select='map'",
             f"needs LAReQA articles (data.format 'lareqa'), not {config.data.format!r}; "
             f"use 'loss'")


def _check_eval(e) -> None:
    eval_run.resolve_config(e)  # unknown keys, eval.search, eval.compute_dtype
    _require(int(e.every_steps) >= 0, "eval.every_steps", "must be >= 0")
    for spec in e.datasets:
        check_spec(spec)
    names = {str(dict(d).get("name")) for d in e.datasets}
    unknown = sorted(set(map(str, e.get("every_datasets") or ())) - names)
    _require(not unknown, "eval.every_datasets",
             f"{unknown} not in eval.datasets ({sorted(names)})")

