"""Running the per-device step (step.py) on several devices: `jax.pmap`, or `jax.jit` of
`jax.shard_map` over a 1-D mesh (`config.parallelism`), and moving state and batches to where the
step expects them.  How the two differ in reducing gradients is step.py's docstring.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hybrid_jax.config import PARALLELISMS
from hybrid_jax.train import memory_hooks
from hybrid_jax.train.losses import AXIS_NAME
from hybrid_jax.train.progress import log
from hybrid_jax.train.step import DISTILL_INPUTS, MODEL_INPUTS, NEGATIVE_INPUTS, make_train_step


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
        On one CPU device XLA uses a 64-byte-aligned host array in place (loaded weights are
        such arrays under hybrid_jax.platform.cpu), so the word-embedding table is held once."""
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
        names = [k for k in MODEL_INPUTS + NEGATIVE_INPUTS + DISTILL_INPUTS if k in batch]
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

    def memory_analyses(self) -> list:
        """XLA's memory analysis (argument, temporary, output bytes) of each compiled program."""
        return [e.memory_analysis() for e in self._executables.values()]

    def _compile(self, args):
        """Compiled ahead of its first call, once per input signature; then the compiler's freed
        memory may go back before the step allocates its own (memory_hooks)."""
        executable = self.step_fn.lower(*args).compile()
        memory_hooks.release_free_memory()
        return executable


# XLA:CPU's memory-ordered schedule, process-wide (a per-executable option is accepted and
# ignored): without it the recomputed forward passes of model.remat run early and save nothing.
MEMORY_ORDERED_SCHEDULE_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def memory_ordered_schedule_on() -> bool:
    return MEMORY_ORDERED_SCHEDULE_FLAG in os.environ.get("XLA_FLAGS", "").split()


def make_runner(parallelism: str, module, tx, schedule, loss_config, *, devices=None,
                seed: int = 0, prng_impl: Optional[str] = None, grad_accum_steps: int = 1,
                deterministic: bool = False) -> Runner:
    if parallelism not in PARALLELISMS:
        raise ValueError(f"parallelism must be one of {PARALLELISMS}, got {parallelism!r}")
    devices = list(devices if devices is not None else jax.local_devices())
    # One device: the gradient pmean would be an all-reduce that only copies every gradient.
    reduce_grads = parallelism == "pmap" and len(participating_devices(devices)) > 1
    step = make_train_step(module, tx, schedule, loss_config, axis_name=AXIS_NAME,
                           reduce_grads=reduce_grads, seed=seed, prng_impl=prng_impl,
                           grad_accum_steps=grad_accum_steps, deterministic=deterministic)
    on_cpu = devices[0].platform == "cpu"
    if on_cpu and module.config.remat != "none" and not memory_ordered_schedule_on():
        log(f"model.remat={module.config.remat!r}: XLA:CPU's default scheduler keeps the "
            f"recomputed activations live together, so this step saves little memory; start "
            f"the process with XLA_FLAGS={MEMORY_ORDERED_SCHEDULE_FLAG}")
    return Runner(parallelism, devices).compile(step)
