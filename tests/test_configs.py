"""Every shipped config (and variant) passes the pre-run checks, and the paper-recipe configs carry
the recipe: hard negatives, dev selection, both benchmarks."""
import importlib

import pytest

from hybrid_jax import config as schema

CONFIGS = [("default", None), ("default", "mono"), ("demo_cpu", None), ("demo_cpu", "cross"),
           ("paper_cpu", None), ("paper_cpu", "mono"), ("xlmr_base", None), ("labse", None),
           ("tiny", None), ("tradeoff", None), ("tradeoff", "alpha_sweep"), ("tradeoff", "tiny")]


@pytest.mark.parametrize("name,variant", CONFIGS)
def test_config_passes_checks(name, variant):
    c = importlib.import_module(f"configs.{name}").get_config(variant)
    batch, accum = int(c.data.global_batch_size), int(c.optim.grad_accum_steps)
    schema.validate_config(c, num_devices=1 if batch % (2 * accum) else 2)


@pytest.mark.parametrize("name", ["paper_cpu", "xlmr_base", "labse"])
def test_paper_recipe(name):
    c = importlib.import_module(f"configs.{name}").get_config()
    assert c.data.hard_negatives == 1 and c.data.negative_source == "same_paragraph"
    assert c.train.select == "loss" and c.data.global_batch_size >= 64
    assert {d["type"] for d in c.eval.datasets} == {"xquad-r", "mlqa-r"}
    mlqa = next(d for d in c.eval.datasets if d["type"] == "mlqa-r")
    assert mlqa["fold"] == "all"  # zero-shot: MLQA-R is never trained on
