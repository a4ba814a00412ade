"""The persistent XLA compilation cache (config.train.compilation_cache_dir; '' disables): a
restarted or repeated run skips most of the step's compile time."""
from __future__ import annotations

import os

import jax


def enable(config) -> None:
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
