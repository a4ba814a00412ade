"""The model a run's config names: `config.model.spec` loaded with the run's model overrides."""
from __future__ import annotations

from typing import Any, Optional

from hybrid_jax.models.pretrained import load_pretrained


def load_model(config, spec: Optional[str] = None):
    """The pretrained model named by `spec` (default config.model.spec) with the run's compute
    dtype, rematerialisation and dropout (config.model.dropout < 0 keeps the checkpoint's)."""
    overrides: dict[str, Any] = {"compute_dtype": config.model.compute_dtype,
                                 "remat": str(config.model.get("remat", "none"))}
    if float(config.model.dropout) >= 0:
        overrides.update(hidden_dropout=float(config.model.dropout),
                         attention_dropout=float(config.model.dropout))
    return load_pretrained(spec or config.model.spec, **overrides)
