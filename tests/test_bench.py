"""`python -m benchmarks` end to end on the tiny model: every section runs, the results file
holds the figures, and BENCHMARKS.md is rendered from exactly that file."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory, shared_data):
    """Two invocations into one results file (sections merge): the step section against the
    PyTorch peer, the rest without it (tests/test_torch_peer.py checks the peer's encoder and
    loss; its start-up in every section would cost the suite about a minute).  Cheaper than the
    sections' defaults where no figure below depends on it: one compilation cache for both
    invocations (the profile reuses the step sections' programs), no dev-selection batches, and
    texts encoded at 32 tokens (one length bucket)."""
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    cmd = [sys.executable, "-m", "benchmarks", "--config", "configs/tiny.py",
           "--config.num_devices=1", "--config.data.synthetic=False",
           f"--config.data.dataset_dir={shared_data / 'xquad-r'}",
           "--config.train.select=none", "--config.eval.max_length=32",
           f"--compilation_cache_dir={out / 'xla_cache'}",
           "--rounds", "3", "--repeats", "1", "--search_sizes", "3000", "--search_queries", "64",
           "--encode_texts", "48", "--pipeline_batches", "5", "--study_rounds", "2",
           "--study_config=configs/tradeoff2.py:tiny", "--study_config.train.select=none",
           "--config.eval.datasets=" + json.dumps([dict(
               name="xquad-r-test", type="xquad-r", path=str(shared_data / "xquad-r"),
               fold="test", languages=["en", "de"])]),
           "--out", str(out / "results.json"), "--markdown", str(out / "BENCHMARKS.md")]
    for sections in (["--sections=peak,step"],
                     ["--sections=study_step,profile,pipeline,encode,whole_eval,search",
                      "--nopeer"]):
        proc = subprocess.run(cmd + sections, cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text())


def test_every_section_reports_its_figures(bench_run):
    _, results = bench_run
    sec = results["sections"]
    assert set(sec) == {"peak", "step", "study_step", "profile", "pipeline", "encode",
                        "whole_eval", "search"}
    whole = sec["whole_eval"]["dtypes"]
    assert set(whole) == {"bfloat16", "float32"}
    for r in whole.values():  # each child evaluated every dataset of the config from scratch
        assert r["datasets"] and r["process_wall_s"] > r["evaluate_s"] > 0 and r["max_rss_mb"] > 0
        assert all(set(d["map"]) == {"mono", "cross", "multi"} for d in r["datasets"].values())
    diffs = whole["bfloat16"]["map_minus_float32"]
    assert set(diffs) == set(whole["float32"]["datasets"])
    assert all(abs(v) < 0.1 for d in diffs.values() for v in d.values())
    assert all(v == 0 for d in whole["float32"]["map_minus_float32"].values() for v in d.values())
    study = sec["study_step"]["variants"]
    accum, plain = study["GradCache, 2 micro-batches"], study["half the batch, one pass"]
    assert accum["hard_negatives"] == plain["hard_negatives"] == 1  # the study's triplets
    assert accum["batch"] == 2 * plain["batch"] and accum["passage_len"] == plain["passage_len"]
    for v in (accum, plain):
        assert len(v["step_s_all"]) == 2 and v["compiles_after_first_step"] == 0
    prof = sec["profile"]
    for p in (prof, prof["study_one_pass"]):  # the demo step's and the study's one-pass step's
        assert p["thunk_s_per_step"] > 0 and p["top"]
        assert sum(r["share"] for r in p["top"]) <= 1 + 1e-9
        groups = {g["group"]: g for g in p["groups"]}
        assert sum(g["s_per_step"] for g in groups.values()) == pytest.approx(
            p["thunk_s_per_step"])
        # concurrent thunks share their stretch of time: the wall split adds up to the busy time
        assert sum(g["wall_s_per_step"] for g in groups.values()) == pytest.approx(
            p["busy_s_per_step"])
        assert p["busy_s_per_step"] <= p["thunk_s_per_step"] + 1e-9
        batched = groups["batched products (attention)"]
        assert batched["gflop_per_step"] > 0 and batched["flops_per_s"] > 0
        assert "torch" not in p["scores_product"]  # --nopeer
        assert p["scores_product"]["xla"]["flops_per_s"] > 0
    assert prof["study_one_pass"]["batch"] == plain["batch"]
    # the matmul groups did the model's FLOPs (the loss's own small matmuls aside)
    model_gflop = sum(g["gflop_per_step"] for g in prof["groups"])
    assert model_gflop == pytest.approx(sec["step"]["model_flops_per_step"] / 1e9, rel=0.02)
    assert sec["peak"]["flops_per_s"] > 1e8
    step = sec["step"]
    assert step["batch"] == 8 and step["query_len"] == 8 and step["passage_len"] == 12
    assert len(step["step_s_all"]) == 3 and step["step_s"] > 0
    # The real step compiles once: later batches of the same shapes reuse it.
    assert step["compiles_first_step"] >= 1 and step["compiles_after_first_step"] == 0
    assert 0 < step["fraction_of_matmul_peak"] < 1
    if "step_s" in step.get("peer", {}):  # torch installed: the peer trained on the same batches
        assert len(step["peer"]["step_s_all"]) == 3 and step["speedup_vs_peer"] > 0
        assert all(l == l and l > 0 for l in step["losses"]["torch"])
    assert sec["pipeline"]["pipeline_over_step_rate"] == pytest.approx(
        sec["pipeline"]["batches_per_s"] / step["steps_per_s"])
    enc = sec["encode"]
    assert enc["texts"] == 48
    base = enc["variants"]["default buckets, fixed rows, float32"]
    assert base["texts_per_s"] > 0 and base["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    # every variant encodes the same texts to (nearly) the same vectors
    assert all(v["cosine_min"] > 0.999 for v in enc["variants"].values())
    assert not any("PyTorch" in name for name in enc["variants"])  # --nopeer
    pool = sec["search"]["synthetic"][0]
    assert pool["n_candidates"] == 3000 and pool["exact_qps"] > 0
    if "scann_qps" in pool:
        assert 0 <= pool["scann_recall@20"] <= 1
        assert all(0 <= p["recall@20"] <= 1 for p in pool.get("scann_sweep", []))


def test_markdown_is_rendered_from_the_results_file(bench_run):
    from benchmarks import report

    out, results = bench_run
    text = (out / "BENCHMARKS.md").read_text()
    assert text == report.markdown(results)
    assert report._f(results["sections"]["step"]["step_s"]) in text
    assert "python -m benchmarks" in text


def test_step_flops_count_hard_negatives_in_the_passage_tower():
    from benchmarks.step import _summarise, encoder_flops, train_step_flops
    from hybrid_jax.models import config as config_lib

    cfg = config_lib.tiny()
    plain = train_step_flops(cfg, 8, 16, 32)
    assert plain == 3 * (encoder_flops(cfg, 8, 16) + encoder_flops(cfg, 8, 32))
    assert encoder_flops(cfg, 16, 32) == 2 * encoder_flops(cfg, 8, 32)
    # what the step benchmark reports for a batch with 2 negatives per pair: 16 more passages
    out = dict(batch=8, query_len=16, passage_len=32, hard_negatives=2, real_tokens_per_step=100,
               padded_tokens_per_step=8 * (16 + 32 * 3))
    _summarise(out, cfg, [0.5], [], [], None)
    assert out["model_flops_per_step"] == plain + 3 * encoder_flops(cfg, 16, 32)
    assert out["model_flops_per_s"] == 2 * out["model_flops_per_step"]
    assert out["padded_tokens_per_s"] == 2 * 8 * (16 + 32 * 3)  # negatives are tokens too


def test_matmul_thunks_tell_batched_products_from_2d_matmuls():
    """The profile's split: a batched einsum (attention's shape) and a dense matmul compiled
    together are found as thunks of the right kind with their FLOPs."""
    import jax
    import jax.numpy as jnp

    from benchmarks.hlo_dots import BATCHED, PLAIN, matmul_thunks

    def f(q, k, x, w):
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k)
        return jnp.tanh(scores).sum() + jnp.tanh(x @ w).sum()

    q = jnp.ones((2, 3, 16, 8))
    x, w = jnp.ones((40, 24)), jnp.ones((24, 32))
    text = jax.jit(f).lower(q, q, x, w).compile().as_text()
    # the entry computation's thunks (the dots inside fusions are listed too, never run alone)
    entry = text[text.index("ENTRY"):]
    by_kind = {}
    for name, t in matmul_thunks(text).items():
        if f"%{name} = " in entry or f" {name} = " in entry:
            by_kind[t["kind"]] = by_kind.get(t["kind"], 0) + t["flops"]
    assert by_kind == {BATCHED: 2 * 2 * 3 * 16 * 16 * 8, PLAIN: 2 * 40 * 24 * 32}


def test_shared_time_splits_overlaps_evenly():
    from benchmarks.step_profile import _shared_time

    # a: 0-10 alone then 10-20 beside b; b: 10-30 (20-30 alone); c: 40-50 alone
    shared, busy = _shared_time([(0, 20, "a"), (10, 30, "b"), (40, 50, "c")])
    assert shared == {"a": 15, "b": 15, "c": 10} and busy == 40


def test_best_operating_point_needs_the_recall():
    from benchmarks.report import best_operating_point

    pool = {"scann_params": {"num_leaves_to_search": 10}, "scann_qps": 900.0,
            "scann_speedup": 30.0, "scann_recall@20": 0.90,
            "scann_sweep": [{"leaves_to_search": 20, "qps": 600.0, "speedup": 20.0,
                             "recall@20": 0.96},
                            {"leaves_to_search": 50, "qps": 300.0, "speedup": 10.0,
                             "recall@20": 0.99}]}
    assert best_operating_point(pool)["leaves_to_search"] == 20
    assert best_operating_point(pool, recall=0.995) is None


def test_committed_benchmarks_md_is_rendered_from_committed_results():
    """BENCHMARKS.md in the repository is exactly what report.py makes of benchmarks/results.json
    (no hand-edited figure)."""
    from benchmarks import report

    with open(os.path.join(REPO, "benchmarks", "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(REPO, "BENCHMARKS.md")) as f:
        assert f.read() == report.markdown(results)
