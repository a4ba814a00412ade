"""A weakened start: the top k transformer layers of a loaded encoder drawn afresh.

`reinit_top_layers(params, config, k)` replaces every parameter of `layer_{L-k}` ... `layer_{L-1}`
(L = config.num_layers) with what the encoder's own `Layer` module initialises: the query, key,
value and attention-output kernels and the intermediate and output kernels ~ N(0, 0.02^2), their
biases 0, both layer norms (attention_norm, output_norm) scale 1 and bias 0. The embeddings, their
layer norm, the lower L - k layers and the pooler keep the loaded values. Layer i is drawn from
fold_in(key(REINIT_SEED, threefry2x32), i): the same weakened model whatever the run's seed or
`train.prng_impl`, so every run of an arm starts from one model, as from a pretrained one.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hybrid_jax.errors import InputError
from hybrid_jax.models.config import EncoderConfig
from hybrid_jax.models.encoder import Layer

REINIT_SEED = 0


def fresh_layer(config: EncoderConfig, index: int, seed: int = REINIT_SEED) -> dict:
    """Layer `index`'s params as the encoder's initialisers draw them (host arrays, float32)."""
    key = jax.random.fold_in(jax.random.key(seed, impl="threefry2x32"), index)
    x = jnp.zeros((1, config.hidden_size), jnp.float32)   # one token of one sequence
    bias = jnp.zeros((1, 1, 1, 1), jnp.float32)
    params = Layer(config).init(key, x, bias, True)["params"]
    return jax.tree_util.tree_map(np.asarray, params)


def reinit_top_layers(params: dict, config: EncoderConfig, k: int,
                      seed: int = REINIT_SEED) -> dict:
    """One tower's params with its top k layers re-initialised (a new dict; the loaded arrays are
    not modified). k = 0 returns `params` itself."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k <= \
            config.num_layers:
        raise InputError(f"model.reinit_top_layers: must be an integer in [0, "
                         f"{config.num_layers}] (the model's layers), got {k!r}")
    if k == 0:
        return params
    out = dict(params)
    for i in range(config.num_layers - k, config.num_layers):
        name = f"layer_{i}"
        fresh = fresh_layer(config, i, seed)
        loaded_shapes = jax.tree_util.tree_map(np.shape, params[name])
        if jax.tree_util.tree_map(np.shape, fresh) != loaded_shapes:
            raise InputError(f"model.reinit_top_layers: {name} of the loaded model does not have "
                             f"the architecture's parameter tree")
        out[name] = fresh
    return out
