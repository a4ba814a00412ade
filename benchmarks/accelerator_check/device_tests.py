"""The accelerator-relevant tests the check runs, and which of them fit the host's devices."""
from __future__ import annotations

# Tests that need one device.  Under the check they run with
# JAX_DEFAULT_MATMUL_PRECISION=highest: they compare against float32 references at rtol 1e-5,
# and a GPU computes float32 matmuls in TF32 by default.
ONE_DEVICE_TESTS = (
    "tests/test_losses.py::test_single_device_matches_numpy",
    "tests/test_losses.py::test_padded_negatives_do_not_count",
    "tests/test_losses.py::test_learnable_temperature",
    # GradCache: micro-batched loss and gradient equal the one-batch step
    "tests/test_steps.py::test_step_equals_single_device[negatives2-accum2]",
    "tests/test_steps.py::test_step_equals_single_device[negatives2-accum4]",
    "tests/test_steps.py::test_padded_negatives_change_nothing",
    "tests/test_steps.py::test_frozen_word_embeddings_have_no_state_and_no_update",
    "tests/test_steps.py::test_bfloat16_compute_matches_float32_loosely",
)
# Sharded-layout tests and the devices each needs (they take jax.devices()[:n]; with fewer they
# would not test what they say).  The CPU suite runs all of them on 8 simulated devices.
_STEP = "tests/test_steps.py::test_step_equals_single_device"
SHARDED_TESTS = (
    ("tests/test_losses.py::test_pmap_loss_and_offsets_match_reference", 4),
    ("tests/test_losses.py::test_shard_map_embedding_gradients_match_reference", 4),
    *((f"{_STEP}[negatives2-{layout}]", 2)
      for layout in ("pmap2", "shard_map2", "pmap2_accum4", "shard_map2_accum4")),
    *((f"{_STEP}[{case}]", 4)
      for case in ("plain-pmap4", "plain-shard_map4", "plain-pmap4_accum2",
                   "plain-shard_map4_accum2", "negatives2-pmap4", "negatives2-shard_map4",
                   "negatives2-pmap4_accum2", "negatives2-shard_map4_accum2",
                   "negatives1-shard_map4_accum2")),
    *((f"{_STEP}[{case}]", 8)
      for case in ("negatives2-pmap8", "negatives2-shard_map8", "negatives1-pmap8")),
    ("tests/test_steps.py::test_shard_map_gradient_trap_is_real", 4),
    ("tests/test_steps.py::test_step_compiles_once_and_dropout_differs_per_device_and_step", 4),
    ("tests/test_train.py::test_short_run_outputs_and_loss_decreases", 2),
    ("tests/test_train.py::test_resume_equals_uninterrupted", 2),
)
# The dry run checks the stage's mechanics, not the numerics the CPU suite already covers.
DRY_RUN_TESTS = ("tests/test_losses.py::test_single_device_matches_numpy",
                 "tests/test_losses.py::test_learnable_temperature")


def select_tests(n_devices: int, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """(node ids to run, sharded node ids left out for want of devices)."""
    if dry_run:
        return list(DRY_RUN_TESTS), [n for n, _ in SHARDED_TESTS]
    fits = [n for n, need in SHARDED_TESTS if need <= n_devices]
    return list(ONE_DEVICE_TESTS) + fits, [n for n, need in SHARDED_TESTS if need > n_devices]
