"""The last check before metrics are written: every number is finite and every ranking metric
lies in [0, 1].  A broken model (overflowed or corrupted parameters) must stop the
evaluation rather than publish `map@20 inf` or a recall near 1."""
from __future__ import annotations

import math
from typing import Any, Iterator

from hybrid_jax.errors import InputError

# metric names (before any '@k') whose values are fractions of queries or of an ideal ranking
UNIT_INTERVAL = ("map", "mrr", "ndcg", "recall", "precision", "hit", "accuracy")


def _leaves(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{path}/{key}" if path else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _leaves(value, f"{path}/{i}")
    else:
        yield path, tree


def check_metrics(dataset: str, metrics: dict) -> None:
    """Raises InputError naming the dataset and the first metric out of its range."""
    for path, value in _leaves(metrics):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        name = path.rsplit("/", 1)[-1].split("@", 1)[0]
        bounded = name in UNIT_INTERVAL
        if not math.isfinite(value) or (bounded and not 0.0 <= value <= 1.0):
            raise InputError(
                f"evaluation of {dataset}: metric {path} = {value} is outside its range "
                f"({'[0, 1]' if bounded else 'finite'}); nothing was written -- the model's "
                "parameters have likely diverged or are corrupted")
