"""The model a run's config names: `config.model.spec` loaded with the run's model overrides."""
from __future__ import annotations

from typing import Any, Optional

from hybrid_jax.models.pretrained import load_pretrained


def load_model(config, spec: Optional[str] = None):
    """The pretrained model named by `spec` (default config.model.spec) with the run's compute
    dtype, rematerialisation and dropout (config.model.dropout < 0 keeps the checkpoint's).
    The run's starting model (no `spec`) has its top config.model.reinit_top_layers layers
    re-initialised (models/reinit.py); a checkpoint named by `spec` is loaded as it was saved."""
    overrides: dict[str, Any] = {"compute_dtype": config.model.compute_dtype,
                                 "remat": str(config.model.get("remat", "none"))}
    if spec is None:
        overrides["reinit_top_layers"] = int(config.model.get("reinit_top_layers", 0))
    if float(config.model.dropout) >= 0:
        overrides.update(hidden_dropout=float(config.model.dropout),
                         attention_dropout=float(config.model.dropout))
    return load_pretrained(spec or config.model.spec, **overrides)
