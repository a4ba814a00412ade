"""The per-device train step, written once, and the two ways of running it on several devices.

`make_train_step` returns `step(state, frozen, batch) -> (state, metrics)` for *one device's
slice* of the global batch.  It talks to the other devices only through collectives on
`losses.AXIS_NAME`, so the same function runs under

* `jax.pmap` (`config.parallelism='pmap'`): state and frozen params carry a leading device axis;
  gradients of the local loss are averaged with `pmean` (the transpose of `all_gather` already
  routes every device's loss back to the passages it encoded);
* `jax.jit(jax.shard_map(...))` over a 1-D Mesh (`'shard_map'`): state is replicated (invariant);
  differentiating the *pmean'd* loss with respect to invariant params already sums the per-device
  contributions, so gradients must NOT be reduced again (reducing the local loss's gradient
  instead would give n_devices x the gradient -- the trap pinned in tests/test_steps.py).

Both equal one device on the same global batch.  The state is donated; dropout keys come from
`fold_in(fold_in(key(seed), step), device_index)` (nothing to carry, resume-safe); metrics stay on
device.  With `grad_accum_steps > 1` the local batch is processed GradCache-style: embeddings of all
micro-batches are computed without gradients, the loss and its gradient with respect to the
embeddings are computed on the full global batch (so negatives are unchanged), then each
micro-batch is re-encoded (same dropout key) and back-propagated with those embedding gradients.
The gradient is exactly the full-batch one while activations are held for one micro-batch only.
Hard negatives (`NEGATIVE_INPUTS`) go through the passage tower with their pairs' micro-batch; their
validity mask is not encoded, so the loss takes it whole.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hybrid_jax import host_memory, losses, optim
from hybrid_jax.losses import AXIS_NAME
from hybrid_jax.progress import log
from hybrid_jax.models.dual_encoder import DualEncoder

PARALLELISMS = ("pmap", "shard_map")
MODEL_INPUTS = ("query_ids", "query_mask", "passage_ids", "passage_mask")
# Optional hard negatives: ids and token mask [b, H, Lp], validity [b, H] (0 = padding).
NEGATIVE_INPUTS = ("negative_ids", "negative_mask", "negative_valid")
# `make_runner(cpu_ynnpack_dots=False)` (config.train.cpu_ynnpack_dots): a float32 step on CPU
# compiles without XLA's YNNPACK dot fusions.  Hosts differ: on one session's AMD EPYC the
# study's one-pass step (batch 32, hard negatives) ran 1.10x faster without them (its large
# backward dots ran on one of two threads), neutral at the demo and GradCache shapes; an earlier
# session measured the demo step 1.16-1.28x slower without them.  bfloat16 steps keep them
# (YNNPACK runs bfloat16 dots at twice XLA's own rate).  docs/training.md has the figures.
CPU_FLOAT32_STEP_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray     # int32 scalar: number of updates applied
    params: Any           # trainable tree {'model': ..., 'loss': ...}
    opt_state: Any


def create_state(trainable: dict, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=trainable, opt_state=tx.init(trainable))


def _global_norm(tree):
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


@dataclasses.dataclass(frozen=True)
class _StepSpec:
    """What the pieces of a train step share (static under jit)."""
    module: DualEncoder
    loss_config: Any
    axis_name: Optional[str]
    deterministic: bool
    grad_accum_steps: int


def _embed(spec: _StepSpec, trainable_model, frozen_model, inputs, rng) -> dict:
    params = optim.merge_params(trainable_model, frozen_model)
    variables = {"params": params}
    rngs = None if spec.deterministic else {"dropout": rng}
    q, p = spec.module.apply(variables, *(inputs[name] for name in MODEL_INPUTS),
                             deterministic=spec.deterministic, rngs=rngs)
    out = {"q": q, "p": p}
    if "negative_ids" in inputs:
        ids, mask = inputs["negative_ids"], inputs["negative_mask"]
        rngs = None if spec.deterministic else {"dropout": jax.random.fold_in(rng, 1 << 20)}
        out["n"] = spec.module.apply(variables, ids.reshape(-1, ids.shape[-1]),
                                     mask.reshape(-1, mask.shape[-1]), "passage",
                                     spec.deterministic, rngs=rngs, method=DualEncoder.encode)
    return out


def _loss_of_embeddings(spec: _StepSpec, emb: dict, loss_params, negative_valid=None):
    c = spec.loss_config
    scale = losses.logit_scale(loss_params, c)
    local, metrics = losses.contrastive_loss(emb["q"], emb["p"], scale=scale,
                                             axis_name=spec.axis_name, symmetric=c.symmetric,
                                             negative_emb=emb.get("n"),
                                             negative_valid=negative_valid)
    total = jax.lax.pmean(local, spec.axis_name) if spec.axis_name else local
    metrics["logit_scale"] = scale
    return total, metrics


def _grads_direct(spec: _StepSpec, params, frozen, inputs, rng):
    def loss_fn(p):
        emb = _embed(spec, p["model"], frozen.get("model", {}), inputs, rng)
        return _loss_of_embeddings(spec, emb, p.get("loss", {}), inputs.get("negative_valid"))
    return jax.value_and_grad(loss_fn, has_aux=True)(params)


def _grads_cached(spec: _StepSpec, params, frozen, inputs, rng):
    """GradCache: exact full-batch gradient, activations of one micro-batch at a time.  The
    embeddings of all micro-batches are computed without gradients, the loss gradient with
    respect to them is taken once, then each micro-batch is re-encoded and back-propagated."""
    k = spec.grad_accum_steps
    frozen_model = frozen.get("model", {})
    b = inputs["query_ids"].shape[0]
    chunks = jax.tree.map(lambda x: x.reshape((k, b // k) + x.shape[1:]), inputs)
    keys = jnp.arange(k)

    def embed_chunk(model_params, chunk, i):
        return _embed(spec, model_params, frozen_model, chunk, jax.random.fold_in(rng, i))

    frozen_params = jax.lax.stop_gradient(params["model"])
    emb_chunks = jax.lax.map(lambda xs: embed_chunk(frozen_params, *xs), (chunks, keys))
    # Chunks are contiguous pair ranges, so the concatenated embeddings (negatives pair-major
    # [b * H, D]) are in the order of the unchunked batch and its negative_valid.
    emb = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), emb_chunks)
    (loss, metrics), (emb_grad, loss_grad) = jax.value_and_grad(
        lambda e, lp: _loss_of_embeddings(spec, e, lp, inputs.get("negative_valid")),
        argnums=(0, 1), has_aux=True)(emb, params.get("loss", {}))
    emb_grad_chunks = jax.tree.map(lambda x: x.reshape((k, -1) + x.shape[1:]), emb_grad)

    def body(acc, xs):
        chunk, i, cotangent = xs
        _, vjp = jax.vjp(lambda mp: embed_chunk(mp, chunk, i), params["model"])
        (g,) = vjp(cotangent)
        return jax.tree.map(jnp.add, acc, g), None

    zeros = jax.tree.map(jnp.zeros_like, params["model"])
    model_grad, _ = jax.lax.scan(body, zeros, (chunks, keys, emb_grad_chunks))
    grads = dict(params)
    grads["model"] = model_grad
    if "loss" in params:
        grads["loss"] = loss_grad
    return (loss, metrics), grads


def make_train_step(module: DualEncoder, tx: optax.GradientTransformation,
                    schedule: Callable, loss_config, *, axis_name: Optional[str] = AXIS_NAME,
                    reduce_grads: bool = True, seed: int = 0, prng_impl: Optional[str] = None,
                    grad_accum_steps: int = 1, deterministic: bool = False):
    """Per-device train step.  `reduce_grads`: pmean the gradients (pmap: True, shard_map: False)."""
    spec = _StepSpec(module, loss_config, axis_name, deterministic, int(grad_accum_steps))
    compute_grads = _grads_direct if spec.grad_accum_steps <= 1 else _grads_cached

    def train_step(state: TrainState, frozen: dict, batch: dict):
        rng = jax.random.fold_in(jax.random.key(seed, impl=prng_impl), state.step)
        if axis_name:
            rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
        inputs = {name: batch[name] for name in MODEL_INPUTS + NEGATIVE_INPUTS if name in batch}
        (loss, metrics), grads = compute_grads(spec, state.params, frozen, inputs, rng)
        if axis_name:
            metrics = jax.lax.pmean(metrics, axis_name)
            if reduce_grads:
                grads = jax.lax.pmean(grads, axis_name)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=_global_norm(grads),
                       param_norm=_global_norm(params), lr=schedule(state.step))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


# ----------------------------------------------------------------------------- parallel runners


def participating_devices(devices) -> list:
    """`devices` (this process's, e.g. its first `num_devices` local ones) -> the devices of the
    whole run: every process contributes as many, process-major, so that process p's devices
    hold rows [p*B/P, (p+1)*B/P) of the global batch -- the slice its data iterator reads.  A list
    that already names other processes' devices is taken as it is."""
    devices = list(devices)
    if jax.process_count() == 1 or any(d.process_index != jax.process_index() for d in devices):
        return devices
    n = len(devices)
    return [d for p in range(jax.process_count()) for d in jax.local_devices(process_index=p)[:n]]


@dataclasses.dataclass
class Runner:
    """Runs a per-device step on `devices` and moves state and batches to where it expects them.

    Multi-process (jax.distributed): `devices` may be this process's devices only; the mesh spans
    every process's (participating_devices).  Each process passes its own slice of the global
    batch; pmap takes and returns host-local arrays (leading axis = local devices), shard_map
    global ones, and `unreplicate` gives global replicated arrays (what a collective orbax save
    and jax.device_get need)."""
    parallelism: str
    devices: list
    step_fn: Callable = None          # jitted (state, frozen, batch) -> (state, metrics)
    compiler_options: Optional[dict] = None   # XLA options the step is compiled with
    _executables: dict = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.devices = participating_devices(self.devices)
        self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
        self.mesh = Mesh(np.array(self.devices), (AXIS_NAME,))
        self._sharded = NamedSharding(self.mesh, P(AXIS_NAME))
        self._replicated = NamedSharding(self.mesh, P())
        # pmap's inputs are host-local: sharded over this process's devices only
        self._local_sharded = NamedSharding(Mesh(np.array(self.local_devices), (AXIS_NAME,)),
                                            P(AXIS_NAME))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def compile(self, per_device_step: Callable) -> "Runner":
        if self.parallelism == "pmap":
            self.step_fn = jax.pmap(per_device_step, axis_name=AXIS_NAME, devices=self.devices,
                                    donate_argnums=(0,))
        else:
            mapped = jax.shard_map(per_device_step, mesh=self.mesh,
                                   in_specs=(P(), P(), P(AXIS_NAME)), out_specs=(P(), P()))
            self.step_fn = jax.jit(mapped, donate_argnums=(0,))
        return self

    def replicate(self, tree):
        """Host or single-device tree -> the layout the step takes (copied, safe to donate).
        The host copy is private: XLA:CPU may use an aligned host array in place (device_put's
        may_alias=False does not stop it for numpy input), and the state the step donates must
        own its buffers, not share them with the caller's arrays (the pretrained weights)."""
        n = len(self.local_devices)
        if self.parallelism == "pmap":
            return jax.tree.map(lambda x: jax.device_put(
                np.broadcast_to(np.array(x), (n,) + np.shape(x)), self._local_sharded), tree)
        # every process holds the same host value: device_put places its addressable copies
        return jax.tree.map(lambda x: jax.device_put(np.array(x), self._replicated), tree)

    def place_read_only(self, tree):
        """Host tree the step reads but never donates (the frozen params) -> the step's layout.
        On one CPU device XLA uses a 64-byte-aligned host array in place
        (hybrid_jax/models/host_arrays.py), so the word-embedding table is held once, not twice."""
        n = len(self.local_devices)
        if self.parallelism == "pmap":  # a [1, ...] broadcast is a contiguous view: aliasable
            return jax.tree.map(lambda x: jax.device_put(
                np.broadcast_to(np.asarray(x), (n,) + np.shape(x)), self._local_sharded), tree)
        return jax.tree.map(lambda x: jax.device_put(np.asarray(x), self._replicated), tree)

    def unreplicate(self, tree):
        """Step layout -> one copy (device arrays; not aliased with donated buffers)."""
        if self.parallelism == "pmap":
            if jax.process_count() == 1:
                return jax.tree.map(lambda x: x[0], tree)
            return jax.tree.map(self._global_copy, tree)
        return jax.tree.map(lambda x: x.copy(), tree)

    def _global_copy(self, x):
        """Host-local pmap output [n_local, ...] (one copy per device) -> a global array
        replicated over the mesh, from the per-device copies (no host round trip)."""
        by_device = {s.device: s.data for s in x.addressable_shards}
        copies = [by_device[d][0] for d in self.local_devices]  # indexing copies: safe to donate x
        return jax.make_array_from_single_device_arrays(x.shape[1:], self._replicated, copies)

    def shard_batch(self, batch: dict) -> dict:
        """This process's numpy slice of the global batch -> device slices (only the arrays the
        step reads)."""
        n = len(self.local_devices)
        names = [k for k in MODEL_INPUTS + NEGATIVE_INPUTS if k in batch]
        if self.parallelism == "pmap":
            return {k: jax.device_put(np.asarray(batch[k]).reshape(
                (n, -1) + np.shape(batch[k])[1:]), self._local_sharded) for k in names}
        return {k: jax.make_array_from_process_local_data(self._sharded, np.asarray(batch[k]))
                for k in names}

    def metrics_to_host(self, metrics) -> dict:
        # pmap: host-local; shard_map: replicated (fetchable on every process)
        m = jax.device_get(metrics)
        if self.parallelism == "pmap":
            m = jax.tree.map(lambda x: x[0], m)
        return {k: float(v) for k, v in m.items()}

    def __call__(self, state, frozen, batch):
        # A plain function (tests wrap the step) or multi-process pmap, whose ahead-of-time
        # lowering takes global shapes while its calls pass host-local ones: called as it is.
        if not hasattr(self.step_fn, "lower") or (self.parallelism == "pmap"
                                                   and jax.process_count() > 1):
            return self.step_fn(state, frozen, batch)
        args = (state, frozen, batch)
        leaves, tree = jax.tree.flatten(args)
        key = (tree, tuple((x.shape, x.dtype, getattr(x, "sharding", None)) for x in leaves))
        executable = self._executables.get(key)
        if executable is None:
            executable = self._executables[key] = self._compile(args)
        return executable(*args)

    def compiled_texts(self) -> list[str]:
        """The optimised HLO of each program compiled so far (the profile reads its thunks)."""
        return [e.as_text() for e in self._executables.values()]

    def _compile(self, args):
        """Compiled ahead of its first call, once per input signature, with `compiler_options`;
        then glibc returns the compiler's freed memory before the step allocates its own."""
        lowered = self.step_fn.lower(*args)
        try:
            executable = lowered.compile(self.compiler_options or None)
        except jax.errors.JaxRuntimeError as e:  # an XLA without the option: XLA's defaults
            if not self.compiler_options or "No such compile option" not in str(e):
                raise
            self.compiler_options = None
            executable = lowered.compile()
        host_memory.return_free_memory()
        return executable


def make_runner(parallelism: str, module, tx, schedule, loss_config, *, devices=None,
                seed: int = 0, prng_impl: Optional[str] = None, grad_accum_steps: int = 1,
                deterministic: bool = False, cpu_ynnpack_dots: bool = True) -> Runner:
    if parallelism not in PARALLELISMS:
        raise ValueError(f"parallelism must be one of {PARALLELISMS}, got {parallelism!r}")
    devices = list(devices if devices is not None else jax.local_devices())
    # One device: the gradient pmean would be an all-reduce that only copies every gradient.
    reduce_grads = parallelism == "pmap" and len(participating_devices(devices)) > 1
    step = make_train_step(module, tx, schedule, loss_config, axis_name=AXIS_NAME,
                           reduce_grads=reduce_grads, seed=seed, prng_impl=prng_impl,
                           grad_accum_steps=grad_accum_steps, deterministic=deterministic)
    options = None
    on_cpu = devices[0].platform == "cpu"
    if not cpu_ynnpack_dots and on_cpu and module.config.compute_dtype == "float32":
        options = dict(CPU_FLOAT32_STEP_OPTIONS)
    if on_cpu and module.config.remat != "none" and not host_memory.memory_ordered_cpu_schedule_on():
        log(f"model.remat={module.config.remat!r}: XLA:CPU's default scheduler keeps the "
            f"recomputed activations live together, so this step saves little memory; start "
            f"the process with XLA_FLAGS={host_memory.CPU_MEMORY_SCHEDULE_FLAG} (our commands "
            f"do this themselves)")
    return Runner(parallelism, devices, compiler_options=options).compile(step)
