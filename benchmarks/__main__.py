"""`make bench`: training, encoding, search and input-pipeline benchmarks on the present devices.

    python -m benchmarks [--config configs/demo_cpu.py] [--sections peak,step,...] [--rounds 10] [--search_sizes 10000,100000,1000000]
        [--real_pool eval/<ds>/embeddings.npz] [--out benchmarks/results.json]
        [--markdown BENCHMARKS.md] [--config.a.b=...]

Sections (each result keeps its own settings; see BENCHMARKS.md for the table):
  peak      the machine's practical matmul peak under XLA, in the dtype the step computes in
            (model.compute_dtype; --peak_dtype overrides), so the step's fraction of it is MFU
  step      our train step against the PyTorch peer, alternating, on the config's model and shapes
  study_step  the same at the trade-off study's shapes (--study_config): its GradCache step, and
            half its batch in one pass without accumulation
  profile   where the step's time goes (the demo step and the study's one-pass step):
            jax.profiler trace, XLA thunk time per kind of op, and split into batched products
            (attention), 2-D matmuls (dense layers) and other ops with each matmul group's FLOP/s
  pipeline  input-pipeline batches/s against the measured step rate
  encode    evaluation encoding: our variants (rows, token budget, bfloat16) and the PyTorch peer
  whole_eval  the config's evaluation datasets from a cold cache, bfloat16 and float32, each in
            its own process: wall time, peak memory, and the metrics' differences
  search    exact vs ScaNN queries/s and recall@20 on clustered synthetic vectors (and a real pool)
  data_prepare  prepare_data on a synthetic mMARCO-shaped corpus: texts/s and peak memory
  data_store  the examples path against the prepared corpus on such a corpus: set-up, memory,
            pairs per CPU second (benchmarks/data_store.py)
  lora      LoRA against full fine-tuning (benchmarks/lora.py): parameters, step time, memory
Results are merged into --out (a rerun of one section replaces only that section), and
--markdown is regenerated from the whole file.
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import shlex
import sys
import time

from absl import flags
from ml_collections import config_flags

from hybrid_jax import cli
from hybrid_jax.platform import cpu

ONE_PASS = "half the batch, one pass"
SECTIONS = ("peak", "step", "study_step", "profile", "pipeline", "encode", "whole_eval",
            "search", "lora", "data_prepare", "data_store")


def _cpuinfo(field: str) -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bfloat16 matmuls at (at least) float32 speed, for both frameworks."""
    return bool({"avx512_bf16", "amx_bf16"} & set(_cpuinfo("flags").split()))


FLAGS = flags.FLAGS
cli.define_config_flags("configs/demo_cpu.py", workdir=False)
config_flags.DEFINE_config_file(
    "study_config", "configs/tradeoff2.py",
    "The study whose shapes the study_step section times (override keys with "
    "--study_config.<section>.<key>=<value>).", lock_config=True)
flags.DEFINE_list("sections", list(SECTIONS), "Which benchmarks to run.")
flags.DEFINE_integer("rounds", 10, "Timed steps per framework (alternating), after warm-up.")
flags.DEFINE_integer("study_rounds", 3, "Timed steps per framework at the study's shapes.")
flags.DEFINE_integer("repeats", 3, "Repetitions of each encode / search timing (median).")
flags.DEFINE_list("search_sizes", ["10000", "100000", "1000000"], "Synthetic pool sizes.")
flags.DEFINE_integer("search_queries", 1000, "Queries per search benchmark.")
flags.DEFINE_string("real_pool", None,
                    "embeddings.npz of a real evaluation (eval.save_embeddings).")
flags.DEFINE_integer("encode_texts", 512, "Candidate sentences for the encoding benchmark.")
flags.DEFINE_integer("pipeline_batches", 200, "Batches drawn in the pipeline benchmark.")
flags.DEFINE_integer("store_questions", 100_000, "Questions of the data_store section's "
                     "synthetic corpus (examples path against the prepared corpus).")
flags.DEFINE_integer("prepare_questions", 100_000, "Questions of the data_prepare section's "
                     "synthetic corpus (1000000: the paper-scale corpus, about 10x longer).")
flags.DEFINE_bool("peer", True, "Time the PyTorch peer beside our step (needs torch).")
flags.DEFINE_bool("peer_bf16", None,
                  "Also time the peer's bfloat16 autocast encoding beside our bfloat16 path "
                  "(default: when the CPU has AVX512-BF16 or AMX; without them it is slow: "
                  "measured 0.3 GFLOP/s matmuls on AVX2).")
flags.DEFINE_string("peak_dtype", "", "dtype of the peak matmul ('' = model.compute_dtype).")
flags.DEFINE_integer("peak_size", 0, "Side of the square peak matmul (0 = 2048 on CPU, 8192 on "
                     "accelerators, where smaller products do not fill the chip).")
flags.DEFINE_string("compilation_cache_dir", "",
                    "Persistent XLA compilation cache the sections share, e.g. the profile reusing "
                    "the step sections' programs ('' = none: every section compiles afresh, as "
                    "its compile figures assume).")
flags.DEFINE_string("out", "benchmarks/results.json", "Results file (merged per section).")
flags.DEFINE_string("markdown", "BENCHMARKS.md", "Table regenerated from --out ('' = none).")
LEAVES_SWEEP = (10, 20, 30, 50, 100, 200)


def _log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or "?"


def cpu_description() -> str:
    """The CPU model and its widest vector instructions: hosts sold under one model name differ
    (AVX2 only, AVX-512, AVX512-BF16), and so do their float32 and bfloat16 rates."""
    cpu_flags = set(_cpuinfo("flags").split())
    isa = ("AVX512-BF16" if "avx512_bf16" in cpu_flags else
           "AVX-512, no BF16" if "avx512f" in cpu_flags else
           "AVX2, no AVX-512" if "avx2" in cpu_flags else "no AVX2")
    return f"{_cpu_model()} ({isa}{', AMX' if 'amx_bf16' in cpu_flags else ''})"


def machine_info() -> dict:
    import jax

    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_model": _cpu_model(), "host_malloc": cpu.status(),
            "cpu_count": os.cpu_count(), "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind,
            "load_average_at_start": list(os.getloadavg())}


def _peak(config) -> dict:
    import jax

    from benchmarks import measure

    # MFU is only meaningful against a peak in the step's own dtype: bfloat16 matmuls run at
    # several times the float32 rate on GPU and TPU.
    dtype = FLAGS.peak_dtype or str(config.model.get("compute_dtype", "float32") or "float32")
    if dtype not in ("float32", "bfloat16", "float16"):
        cli.fail(f"--peak_dtype: {dtype!r}; choose float32, bfloat16 or float16")
    n = FLAGS.peak_size or (2048 if jax.default_backend() == "cpu" else 8192)
    return measure.matmul_peak(n, dtype)


def _pipeline(config, step_result: dict | None) -> dict:
    from benchmarks import pipeline as pipeline_bench
    from hybrid_jax.models.pretrained import load_tokenizer

    d = config.data
    out = pipeline_bench.pipeline_throughput(
        d.dataset_dir, load_tokenizer(config.model.spec), FLAGS.pipeline_batches,
        int(d.global_batch_size), int(d.query_max_length), int(d.passage_max_length),
        format=d.format, train_fold=d.train_fold, sampling=d.sampling, alpha=float(d.alpha),
        num_threads=int(d.num_threads), prefetch=int(d.prefetch))
    if step_result:
        out["step_per_s"] = step_result["steps_per_s"]
        out["pipeline_over_step_rate"] = out["batches_per_s"] / step_result["steps_per_s"]
    return out


def _study_configs() -> dict:
    """{variant name: config} at the trade-off study's shapes: its GradCache step as configured,
    and half its batch in one pass (no accumulation)."""
    study = FLAGS.study_config
    micro = int(study.optim.get("grad_accum_steps", 1) or 1)
    plain = study.copy_and_resolve_references()
    with plain.unlocked():
        plain.data.global_batch_size = int(study.data.global_batch_size) // 2
        plain.optim.grad_accum_steps = 1
    return {f"GradCache, {micro} micro-batches": study, ONE_PASS: plain}


def _study_step(peak: dict | None) -> dict:
    """Our step against the peer at the study's shapes, with and without accumulation."""
    from benchmarks import step

    out = {"variants": {}}
    for name, cfg in _study_configs().items():
        _log(f"study_step: {name}")
        out["variants"][name] = step.train_step_benchmark(
            cfg, rounds=FLAGS.study_rounds, peer=FLAGS.peer, peak=peak)
    return out


def _profile(config) -> dict:
    """The demo step's profile, and the study's one-pass step's (its longer passages give
    attention a larger share)."""
    from benchmarks import step_profile

    out = step_profile.step_profile(config, peer=FLAGS.peer)
    _log(f"profile: {ONE_PASS}")
    out["study_one_pass"] = step_profile.step_profile(_study_configs()[ONE_PASS], steps=2,
                                              peer=FLAGS.peer)
    return out


def _encode(config) -> dict:
    from benchmarks.encode import encode_benchmark

    peer_bf16 = cpu_has_bf16() if FLAGS.peer_bf16 is None else FLAGS.peer_bf16
    return encode_benchmark(config, FLAGS.encode_texts, FLAGS.repeats, FLAGS.peer, peer_bf16)


def _whole_eval() -> dict:
    from benchmarks.whole_eval import whole_eval_benchmark

    # the children evaluate the config this program was given, with the same overrides, on both
    # benchmarks of the paper unless the command line names the datasets
    overrides = [a for a in sys.argv[1:] if a.startswith("--config.")]
    if not any(a.startswith("--config.eval.datasets") for a in overrides):
        from configs import paper_recipe

        overrides.append("--config.eval.datasets=" + json.dumps(list(paper_recipe.EVAL_DATASETS)))
    config_file = config_flags.get_config_filename(FLAGS["config"]) or "configs/demo_cpu.py"
    return whole_eval_benchmark(config_file, overrides)


def _search(config) -> dict:
    from benchmarks import search as search_bench

    out = {"synthetic": []}
    for n in [int(s) for s in FLAGS.search_sizes]:
        _log(f"search: {n} candidates")
        out["synthetic"].append(search_bench.search_benchmark(
            n, n_queries=FLAGS.search_queries, repeats=FLAGS.repeats,
            leaves_to_search=LEAVES_SWEEP))
    if FLAGS.real_pool:
        cands, queries = search_bench.embeddings_pool(FLAGS.real_pool)
        real = search_bench.pool_benchmark(cands, queries[:FLAGS.search_queries], 20,
                                           FLAGS.repeats, LEAVES_SWEEP)
        real["source"] = FLAGS.real_pool
        out["real"] = real
    return out


def run_benchmarks(config) -> dict:
    from benchmarks import lora, measure, step
    from benchmarks.data_prepare import data_prepare_benchmark
    from benchmarks.data_store import data_store_benchmark

    unknown = [s for s in FLAGS.sections if s not in SECTIONS]
    if unknown:
        cli.fail(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    path = pathlib.Path(FLAGS.out)
    results = json.loads(path.read_text()) if path.is_file() else {}
    results.setdefault("sections", {})
    results["machine"] = machine_info()
    sections = results["sections"]
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    command = "python -m benchmarks " + shlex.join(sys.argv[1:])

    def record(name, fn):
        _log(f"{name} ...")
        t = time.perf_counter()
        value = fn()
        value["_meta"] = {"when": stamp, "command": command, "wall_s": time.perf_counter() - t,
                          "load_average": list(os.getloadavg()), "cpu": cpu_description()}
        value.update({k: v for k, v in sections.get(name, {}).items() if k == "at_scale"})
        sections[name] = value
        measure.write_json(path, results)  # each finished section is kept even if a later one fails
        _log(f"{name}: done in {value['_meta']['wall_s']:.0f}s")

    runs = {"peak": lambda: _peak(config),
            "step": lambda: step.train_step_benchmark(
                config, rounds=FLAGS.rounds, peer=FLAGS.peer, peak=sections.get("peak")),
            "study_step": lambda: _study_step(sections.get("peak")),
            "profile": lambda: _profile(config),
            "pipeline": lambda: _pipeline(config, sections.get("step")),
            "encode": lambda: _encode(config),
            "whole_eval": _whole_eval,
            "search": lambda: _search(config),
            "lora": lambda: lora.lora_benchmark(config, rounds=FLAGS.rounds),
            "data_prepare": lambda: data_prepare_benchmark(FLAGS.prepare_questions),
            "data_store": lambda: data_store_benchmark(FLAGS.store_questions)}
    for name in SECTIONS:  # in this order: step reads the peak's result, pipeline the step's
        if name in FLAGS.sections:
            record(name, runs[name])
    if FLAGS.markdown:
        from benchmarks import report

        pathlib.Path(FLAGS.markdown).write_text(report.markdown(results))
        _log(f"wrote {FLAGS.markdown}")
    return results


@cli.program
def main(argv):
    del argv
    config = FLAGS.config
    if config is None:
        from configs import demo_cpu

        config = demo_cpu.get_config()
    if FLAGS.compilation_cache_dir:
        import jax

        # this process's sections, and through the environment the whole_eval children
        os.environ.update(JAX_COMPILATION_CACHE_DIR=FLAGS.compilation_cache_dir,
                          JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    run_benchmarks(config)


if __name__ == "__main__":
    cli.run(main)
