"""What the existing runs of a grid must agree with before the study driver adds to it:
the same config (up to keys that never change a result) and the same code.

A run is finished when eval/<dataset>/metrics.json exists for every eval dataset; half-done when it
has a checkpoint to resume from.
"""
from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Optional

from hybrid_jax import code_version
from hybrid_jax.errors import InputError
from hybrid_jax.models.run_checkpoint import saved_steps
from hybrid_jax.study.runs import ZERO_SHOT

# Keys that change speed or logging, never the result: a finished run stays finished when they do.
IGNORED_KEYS = ("eval.progress", "eval.plots", "eval.cache", "eval.batch_size",
                "eval.buckets", "eval.token_budget",  # padding and batching of the encoder
                "train.compilation_cache_dir", "train.log_every", "train.async_checkpointing",
                "data.prefetch", "data.num_threads", "data.worker_count")


# Keys added since runs were saved, at the default that reproduces those runs: absent == default.
ADDED_KEY_DEFAULTS = {"eval.compute_dtype": "", "eval.every_datasets": [],
                      "train.cpu_ynnpack_dots": True, "model.remat": "none",
                      "data.mono_schedule": "coin", "optim.warmup_from_zero": True,
                      "train.select_at_start": False,
                      "train.select_per_query": False, "model.reinit_top_layers": 0,
                      "model.lora_rank": 0, "model.lora_alpha": 16.0,
                      "model.lora_targets": ["query", "key", "value", "attention_output",
                                             "intermediate", "output"],
                      "model.lora_dropout": 0.0, "loss.distill": "none",
                      "loss.distill_weight": 1.0, "loss.distill_temperature": 0.05,
                      "data.teacher_model": "", "data.mining_skip_top": 0,
                      "data.mining_margin": 0.0, "data.mining_range": [0, 0], "data.store": "",
                      "data.store_cache": "", "data.draw": "permutation", "data.sources": [],
                      "data.source_mixing": "batch", "data.source_schedule": "draw",
                      "data.train_fraction": 1.0}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(run_dir: pathlib.Path, config, spec) -> list[str]:
    """Keys where the run's saved config.json differs from `config` (empty if none saved).
    The zero-shot row depends only on the model and the evaluation keys."""
    path = run_dir / "config.json"
    if not path.is_file():
        return []
    old = {**ADDED_KEY_DEFAULTS, **_flat(json.loads(path.read_text()))}
    new = {**ADDED_KEY_DEFAULTS, **_flat(json.loads(config.to_json_best_effort(sort_keys=True)))}
    keys = sorted(set(old) | set(new))
    if spec.sampler == ZERO_SHOT:
        keys = [k for k in keys if k.startswith(("model.", "eval."))]
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys
            if k not in IGNORED_KEYS and old.get(k, "<absent>") != new.get(k, "<absent>")]


def is_finished(run_dir: pathlib.Path, datasets: list[str]) -> bool:
    return all((run_dir / "eval" / d / "metrics.json").is_file() for d in datasets)


def run_state(run_dir: pathlib.Path, datasets: list[str]) -> str:
    if is_finished(run_dir, datasets):
        return "finished"
    steps = saved_steps(run_dir)
    return f"half-done (checkpoint at step {steps[-1]})" if steps else "to do"


def made_by(versions: list[dict]) -> str:
    if not versions:
        return "unrecorded code (no code_version.json: made before code versions were recorded)"
    return "code " + " then ".join(code_version.label(v) for v in versions)


def recorded_code_versions(workdir: pathlib.Path, specs: list,
                           datasets: dict[str, list[str]]) -> dict[str, list[dict]]:
    """run name -> the code versions recorded for it, for the runs with results (finished, or
    a checkpoint to resume from); `datasets`: run name -> the eval folders it needs."""
    return {s.name: code_version.recorded(workdir / "runs" / s.name) for s in specs
            if run_state(workdir / "runs" / s.name, datasets[s.name]) != "to do"}


def check_code_versions(workdir: pathlib.Path, made: dict[str, list[dict]],
                        current: Optional[dict]) -> None:
    """Raises InputError naming the first run of `made` whose code differs from `current` (the
    code about to run) or, when `current` is None (nothing runs), from the first run's."""
    def key(versions):
        return [code_version.identity(v) for v in versions]

    if current is not None:
        ref, ref_what = key([current]), f"the code about to run is {code_version.label(current)}"
    elif made:
        first = next(iter(made))
        ref, ref_what = key(made[first]), f"runs/{first} was made by {made_by(made[first])}"
    for name, versions in made.items():
        if key(versions) != ref:
            raise InputError(
                f"{workdir / 'runs' / name} was made by {made_by(versions)}, but {ref_what}: "
                f"one grid must not mix code versions (the differences would be the code's, not "
                f"the samplers'); use another --workdir, delete that run to redo it, or pass "
                f"--allow_mixed_code")


def check_configs(workdir: pathlib.Path, specs: list, configs: dict) -> None:
    """Every run's config is valid and matches what an earlier invocation saved for it."""
    from hybrid_jax import config as schema

    for s in specs:
        if s.sampler != ZERO_SHOT:
            schema.validate_config(configs[s.name])
        diffs = config_differences(workdir / "runs" / s.name, configs[s.name], s)
        if diffs:
            raise InputError(
                f"{workdir / 'runs' / s.name}/config.json differs from this experiment's config "
                f"({'; '.join(diffs[:5])}{' ...' if len(diffs) > 5 else ''}): use another "
                f"--workdir, or delete that run to redo it")


def check_protocol(experiment) -> None:
    """experiment.protocol (a pre-registered protocol file) must still hash to
    experiment.protocol_sha256: a grid never runs under an edited protocol."""
    e = experiment
    path = str(e.get("protocol") or "")
    if not path:
        return
    try:
        digest = hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    except OSError as err:
        raise InputError(f"experiment.protocol: {path}: unreadable ({err})") from err
    if digest != str(e.get("protocol_sha256") or ""):
        raise InputError(f"experiment.protocol: {path} hashes to {digest}, not the registered "
                         f"experiment.protocol_sha256 {e.get('protocol_sha256')!r}: the "
                         f"protocol was edited after registration (restore it; a new protocol "
                         f"needs a new experiment config and workdir)")
