"""A grid run's saved config against today's: encoder padding keys are ignored, and a key added
since the run was saved counts as its default (so old finished runs stay finished)."""
import json
import types

import ml_collections

from hybrid_jax.study import grid_checks


def _config(**eval_keys):
    return ml_collections.ConfigDict({"eval": {"max_length": 96, "buckets": (32, 64),
                                               **eval_keys}})


def test_padding_keys_ignored_and_added_keys_at_their_default(tmp_path):
    saved = {"eval": {"max_length": 96, "buckets": [32, 64, 128]}}  # before compute_dtype existed
    (tmp_path / "config.json").write_text(json.dumps(saved))
    spec = types.SimpleNamespace(sampler="mono")
    same = _config(buckets=(16, 24, 32), token_budget=4096, compute_dtype="")
    assert grid_checks.config_differences(tmp_path, same, spec) == []
    changed = grid_checks.config_differences(tmp_path, _config(compute_dtype="bfloat16"), spec)
    assert changed == ["eval.compute_dtype: '' -> 'bfloat16'"]
    longer = grid_checks.config_differences(tmp_path, _config(max_length=128), spec)
    assert longer == ["eval.max_length: 96 -> 128"]


def test_the_committed_second_edition_runs_have_todays_config():
    """Every key added since the second edition's runs were saved is listed at its default, so
    those finished runs stay finished under today's code."""
    import pathlib

    from configs import tradeoff2
    from hybrid_jax.study import plan

    config = tradeoff2.get_config()
    runs = pathlib.Path(__file__).resolve().parents[1] / "results" / "tradeoff2" / "runs"
    specs = [s for s in plan.plan(config) if (runs / s.name / "config.json").is_file()]
    assert len(specs) >= 20
    for s in specs:
        assert grid_checks.config_differences(runs / s.name, plan.run_config(config, s), s) == []
