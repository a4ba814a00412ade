"""BENCHMARKS.md from benchmarks/results.json: every figure comes from that file."""
from __future__ import annotations

from importlib import import_module


def _f(x, digits=3):
    if x is None:
        return "-"
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def _g(flops) -> str:
    """FLOP counts and rates in units of 10^9."""
    return "-" if flops is None else f"{flops / 1e9:,.1f} G"


def _meta(section: dict) -> str:
    m = section.get("_meta", {})
    load = ", ".join(f"{x:.1f}" for x in m.get("load_average", []))
    cpu = f", on {m['cpu']}" if m.get("cpu") else ""
    return (f"_{m.get('when', '?')}, `{m.get('command', '?')}`, {m.get('wall_s', 0):.0f} s, "
            f"load average after: {load}{cpu}_")


# texts/s of the encode section on its 512 XQuAD-R texts at commit efa54ef: the "today" of the
# evaluation-encoding target (>= 2x).
ENCODE_TARGET_BASELINE = 41.7


def _target(ok: bool) -> str:
    return "met" if ok else "**missed**"


def best_operating_point(pool: dict, recall: float = 0.95) -> dict | None:
    """The fastest ScaNN setting (default or sweep point) with recall@20 >= `recall`."""
    points = [{"leaves_to_search": pool.get("scann_params", {}).get("num_leaves_to_search"),
               "qps": pool.get("scann_qps"), "speedup": pool.get("scann_speedup"),
               "recall@20": pool.get("scann_recall@20")}] + list(pool.get("scann_sweep", []))
    ok = [p for p in points if p.get("qps") and (p.get("recall@20") or 0) >= recall]
    return max(ok, key=lambda p: p["qps"]) if ok else None


def _cpu_rows(s: dict, peer: dict) -> list[str]:
    """CPU seconds per step (all threads), cores kept busy: wall time beyond the compute's."""
    if "user_s" not in s:
        return []
    return [f"| CPU per step, user / system s | {_f(s['user_s'])} / {_f(s['system_s'])} | "
            + (f"{_f(peer['user_s'])} / {_f(peer['system_s'])} |" if "user_s" in peer else "- |"),
            f"| cores busy (CPU time / wall time) | {_f(s['cores_busy'])} | "
            f"{_f(peer.get('cores_busy'))} |"]


def _step(s: dict, peak: dict | None, title: str = "Training step") -> list[str]:
    peer = s.get("peer", {})
    has_peer = "step_s" in peer
    lines = [f"## {title}", "",
             f"Model config: batch {s['batch']} with {s.get('hard_negatives', 0)} hard negative(s) "
             f"per pair, query {s['query_len']} / passage "
             f"{s['passage_len']} tokens (padded; {s['real_tokens_per_step']:.0f} of "
             f"{s['padded_tokens_per_step']} tokens per step are real), {s['rounds']} timed steps "
             f"each, JAX and PyTorch alternating; devices {', '.join(s['devices'])}.", "",
             "| | hybrid_jax (JAX) | PyTorch peer |", "|---|---|---|",
             f"| step, median s | {_f(s['step_s'])} | {_f(peer.get('step_s'))} |",
             f"| examples/s | {_f(s['examples_per_s'])} | {_f(peer.get('examples_per_s'))} |",
             f"| padded tokens/s | {_f(s['padded_tokens_per_s'])} | "
             f"{_f(s['padded_tokens_per_step'] / peer['step_s']) if has_peer else '-'} |",
             f"| model FLOP/s | {_g(s['model_flops_per_s'])} | "
             f"{_g(s['model_flops_per_step'] / peer['step_s']) if has_peer else '-'} |",
             f"| peak host memory, MB | {_f(s['max_rss_mb'])} | {_f(peer.get('max_rss_mb'))} |",
             *_cpu_rows(s, peer),
             f"| first step (compile + run), s | {_f(s['first_step_s'])} | - |",
             f"| XLA compile time (set-up + first step), s | {_f(s['compile_s'])} | - |",
             f"| XLA compilations: first step / after | {s['compiles_first_step']} / "
             f"{s['compiles_after_first_step']} | - |", ""]
    lines += ["Model FLOPs per step = 3 x (forward matmul FLOPs of both towers on the padded "
              f"tokens: Q/K/V/output and feed-forward projections, attention scores and context) "
              f"= {_g(s['model_flops_per_step'])}; the PyTorch peer trains the same weights (our "
              "Hugging Face export) on the same batches with the same loss (their hard negatives "
              "included), clipping, AdamW and frozen word embeddings, accumulating over the same "
              "micro-batches GradCache-style when the step does, in its own process "
              "(benchmarks/torch_peer.py) under the same host-memory set-up "
              f"(hybrid_jax/platform/cpu.py){_peer_shape(s)}.", ""]
    if has_peer:
        lines.append(f"Speed-up over the PyTorch peer (median of per-round ratios): "
                     f"**{s['speedup_vs_peer']:.2f}x** (target >= 1.3x: "
                     f"{_target(s['speedup_vs_peer'] >= 1.3)}).")
        if peer.get("max_rss_mb"):
            memory = s["max_rss_mb"] / peer["max_rss_mb"]
            lines.append(f"Peak host memory over the peer's: **{memory:.2f}x** (target <= 1.3x: "
                         f"{_target(memory <= 1.3)}).")
    else:
        lines.append(f"PyTorch peer: {peer.get('skipped', 'not run')}.")
    if peak and "fraction_of_matmul_peak" in s:
        lines.append(f"Achieved model FLOP/s = **{100 * s['fraction_of_matmul_peak']:.0f}%** of "
                     f"the measured {peak['dtype']} matmul peak {_g(peak['flops_per_s'])}FLOP/s "
                     f"({peak['n']}x{peak['n']}, median of {peak['repeats']}) "
                     f"(target >= 40%: {_target(s['fraction_of_matmul_peak'] >= 0.4)}).")
    lines += ["Zero recompiles after the first step: "
              f"{_target(s['compiles_after_first_step'] == 0)}.", "", _meta(s), ""]
    return lines


def _search(s: dict) -> list[str]:
    lines = ["## Search: exact vs ScaNN (recall@20 against exact search)", "",
             "| pool | candidates | exact q/s | ScaNN build s | ScaNN q/s (default) | recall@20 | "
             "speed-up | fastest with recall >= 0.95 |", "|---|---|---|---|---|---|---|---|"]
    pools = [("synthetic", p) for p in s.get("synthetic", [])]
    if "real" in s:
        pools.append(("real", s["real"]))
    for kind, p in pools:
        best = best_operating_point(p)
        best_s = (f"{best['leaves_to_search']} leaves: {_f(best['qps'])} q/s, "
                  f"{_f(best['speedup'])}x, recall {best['recall@20']:.3f}" if best else "none")
        lines.append(f"| {kind} | {p['n_candidates']:,} | {_f(p['exact_qps'])} | "
                     f"{_f(p.get('scann_build_s'))} | {_f(p.get('scann_qps'))} | "
                     f"{_f(p.get('scann_recall@20'))} | {_f(p.get('scann_speedup'))}x | {best_s} |")
    big = [p for p in s.get("synthetic", []) if p["n_candidates"] >= 1_000_000]
    if big:
        best = best_operating_point(big[0])
        lines += ["", "Target at 10^6: >= 10x exact q/s at recall@20 >= 0.95: "
                  + _target(bool(best and best["speedup"] >= 10)) + "."]
    lines += ["", _meta(s), ""]
    return lines


def _profile_tables(p: dict) -> list[str]:
    lines = [f"Batch {p['batch']}, queries {p['query_len']} tokens, passages "
             f"{p['passage_len']} tokens, {p['hard_negatives']} hard negative(s) per pair; "
             f"{p['steps']} warm steps traced ({_f(p['step_s_traced'])} s/step while traced), "
             f"thunks {_f(p['thunk_s_per_step'])} s per step"
             + (f", busy {_f(p['busy_s_per_step'])} s (some thunks run at the same time)"
                if "busy_s_per_step" in p else "") + ".", ""]
    if p.get("groups"):
        lines += ["| group | thunk s/step | wall s/step | share of busy time | GFLOP/step "
                  "| FLOP/s |", "|---|---|---|---|---|---|"]
        lines += [f"| {g['group']} | {_f(g['s_per_step'])} | {_f(g['wall_s_per_step'])} | "
                  f"{100 * g['share']:.1f}% | "
                  f"{_f(g['gflop_per_step']) if g['gflop_per_step'] else '-'} | "
                  f"{_g(g['flops_per_s']) + 'FLOP/s' if 'flops_per_s' in g else '-'} |"
                  for g in p["groups"]]
        lines.append("")
    sp = p.get("scores_product")
    if sp:
        b, n, d = sp["shape"]
        line = (f"The passages' attention scores product alone (Q @ K^T over [{b}, {n}, {d}], "
                f"float32, median of 20): XLA {_g(sp['xla']['flops_per_s'])}FLOP/s")
        if "torch" in sp:
            line += (f", PyTorch `torch.bmm` {_g(sp['torch']['flops_per_s'])}FLOP/s "
                     f"({sp['torch']['flops_per_s'] / sp['xla']['flops_per_s']:.2f}x ours)")
        lines += [line + ".", ""]
    lines += ["| op kind | s/step | share |", "|---|---|---|"]
    lines += [f"| `{r['op']}` | {_f(r['s_per_step'])} | {100 * r['share']:.1f}% |"
              for r in p["top"]]
    return lines + [""]


def _profile(p: dict) -> list[str]:
    lines = ["## Where the step's time goes", "",
             "jax.profiler traces of warm steps: the wall time of XLA's thunks (one op or fusion "
             "each; a thunk's parallel parts run inside it on XLA's thread pool, which also runs "
             "independent thunks at the same time), split into batched products (dots with "
             "batch dimensions: the attention scores and context, forward and backward), 2-D "
             "matmuls (the dense layers and their gradients) and other ops. Thunk seconds count "
             "each thunk's own duration; wall seconds split each stretch of time evenly among "
             "the thunks running then, so they add up to the busy time. The FLOPs each matmul "
             "group did come from the compiled HLO, and its FLOP/s from its wall seconds (its "
             "fused element-wise ops count in its time). Then thunk time per kind of op "
             "(`ynn_fusion`: matmuls run by YNNPACK; the fusion names say what XLA fused).", "",
             "### The demo step", ""] + _profile_tables(p)
    if "study_one_pass" in p:
        lines += ["### The study's step, half its batch in one pass", ""]
        lines += _profile_tables(p["study_one_pass"])
    return lines + [_meta(p), ""]


def markdown(results: dict) -> str:
    sec = results.get("sections", {})
    m = results.get("machine", {})
    lines = ["# Benchmarks", "",
             "Made by `make bench` (`python -m benchmarks --config configs/demo_cpu.py`); "
             "every figure below is read from `benchmarks/results.json`, which that command "
             "writes (`benchmarks/report.py` renders this file). Medians over repeated "
             "runs; the machine is shared, so absolute times swing ~20%, ratios from "
             "side-by-side runs much less.", "",
             f"Machine: {m.get('platform', '?')}, {m.get('cpu_count', '?')} CPUs"
             + (f" ({m['cpu_model']})" if m.get("cpu_model") else "") + ", "
             f"jax {m.get('jax', '?')} ({m.get('backend', '?')}: {m.get('device_kind', '?')}), "
             f"Python {m.get('python', '?')}"
             + (f"; host memory: {m['host_malloc']}" if m.get("host_malloc") else "") + ".", ""]
    peak = sec.get("peak")
    if peak:
        lines += ["## Matmul peak", "",
                  f"{peak['n']}x{peak['n']} {peak['dtype']} matmul under XLA: "
                  f"{_g(peak['flops_per_s'])}FLOP/s (median of {peak['repeats']}).", "",
                  _meta(peak), ""]
    if "step" in sec:
        lines += _step(sec["step"], peak)
    study = sec.get("study_step", {})
    for name, v in study.get("variants", {}).items():  # the variants share the section's run
        lines += _step(dict(v, _meta=study.get("_meta", {})), peak,
                       f"Training step at the study's shapes: {name}")
    if "profile" in sec:
        lines += _profile(sec["profile"])
    if "pipeline" in sec:
        p = sec["pipeline"]
        ratio = p.get("pipeline_over_step_rate")
        lines += ["## Input pipeline", "", f"{p['sampling']} batches of {p['global_batch_size']} "
                  f"({p['query_max_length']}/{p['passage_max_length']} tokens), "
                  f"{p['num_threads']} read thread(s): **{_f(p['batches_per_s'])} batches/s** "
                  f"({_f(p['examples_per_s'])} examples/s), set-up {_f(p['setup_s'])} s."]
        if ratio:
            lines.append(f"That is {ratio:.0f}x the measured train-step rate "
                         f"({_f(p['step_per_s'])} steps/s; target >= 10x: {_target(ratio >= 10)}).")
        lines += ["", _meta(p), ""]
    for name, render in (("encode", _encode), ("whole_eval", _whole_eval), ("search", _search)):
        lines += render(sec[name]) if name in sec else []
    for name in ("data_prepare", "data_store", "lora"):  # these render their own markdown
        if name in sec:
            lines += import_module(f"benchmarks.{name}").markdown(sec[name], _meta(sec[name]))
    return "\n".join(lines)


def _encode(e: dict) -> list[str]:
    lines = ["## Encoding (evaluation encoder)", "",
             f"{e['texts']} XQuAD-R candidate sentences (tokens: median "
             f"{e['token_length_p50']:.0f}, 95th percentile {e['token_length_p95']:.0f}), "
             f"batch {e['batch_size']} rows, max length {e['max_length']}; every "
             "variant and the peer once per round, alternating.", "",
             "| | texts/s | median s | cosine to ours (float32), min |", "|---|---|---|---|"]
    for name, v in e["variants"].items():
        lines.append(f"| {name} | {_f(v['texts_per_s'])} | {_f(v['median_s'])} | "
                     f"{v['cosine_min']:.6f} |")
    fastest = e["variants"][e["fastest"]]["texts_per_s"]
    lines += ["", f"Fastest of ours: {e['fastest']}, {_f(fastest)} texts/s, "
              f"{fastest / ENCODE_TARGET_BASELINE:.2f}x the {ENCODE_TARGET_BASELINE} texts/s this "
              "section measured on the same texts when the target was set (2026-12-01, float32, "
              f"buckets [32, 64, 128, 256, 512]; target >= 2x: "
              f"{_target(fastest >= 2 * ENCODE_TARGET_BASELINE)}); "
              f"{e['fastest_over_baseline']:.2f}x today's default-bucket float32 path."]
    if "fastest_over_peer" in e:
        lines.append(f"Over the PyTorch peer (float32, sentence-transformers-style batches of "
                     f"{e['batch_size']} padded to their longest text; median of per-round "
                     f"ratios): ours with the default buckets {e['baseline_over_peer']:.2f}x, "
                     "fastest "
                     f"{e['fastest_over_peer']:.2f}x (target >= 1.5x: "
                     f"{_target(e['fastest_over_peer'] >= 1.5)}).")
    if "bf16_over_peer_bf16" in e:
        lines.append(f"Same precision: ours in bfloat16 over the peer's bfloat16 autocast "
                     f"(median of per-round ratios): {e['bf16_over_peer_bf16']:.2f}x.")
    return lines + ["", _meta(e), ""]


def _whole_eval(w: dict) -> list[str]:
    runs = w["dtypes"]
    names = sorted({ds for r in runs.values() for ds in r["datasets"]})
    lines = ["## Whole evaluation (cold embedding cache)", "",
             f"`{w['config']}`'s evaluation datasets ({', '.join(names)}) with the pretrained "
             "model from an empty workdir, one process per compute dtype, run once each: wall "
             "time of the process (start-up, model load, encoding, search, reports) and its "
             "peak resident memory; mAP@20 is the macro average over languages.", "",
             "| compute dtype | process wall s | " + " | ".join(f"{ds} s" for ds in names)
             + " | peak host memory, MB | " + " | ".join(
                 f"{ds} mAP@20 mono / cross / multi" for ds in names) + " |",
             "|---" * (3 + 2 * len(names)) + "|"]
    for dtype, r in runs.items():
        cells = [_f(r["datasets"].get(ds, {}).get("seconds")) for ds in names]
        maps = [" / ".join(f"{v:.4f}" for v in r["datasets"].get(ds, {}).get("map", {}).values())
                for ds in names]
        lines.append(f"| {dtype} | {_f(r['process_wall_s'])} | " + " | ".join(cells)
                     + f" | {_f(r['max_rss_mb'])} | " + " | ".join(maps) + " |")
    fastest = min(runs, key=lambda d: runs[d]["process_wall_s"])
    best = runs[fastest]
    lines += ["", f"Fastest: {fastest}, {best['process_wall_s'] / 60:.1f} min (target <= 5 min: "
              f"{_target(best['process_wall_s'] <= 300)}), peak {_f(best['max_rss_mb'])} MB "
              f"(target <= 2,500 MB: {_target(best['max_rss_mb'] <= 2500)})."]
    for dtype, r in runs.items():
        diffs = r.get("map_minus_float32", {})
        if dtype == "float32" or not diffs:
            continue
        lines.append(f"{dtype} minus float32, macro mAP@20 (target: each within +-0.001): "
                     + "; ".join(f"{ds} " + ", ".join(f"{s} {v:+.4f}" for s, v in d.items())
                                 + f" ({_target(max(map(abs, d.values())) <= 0.001)})"
                                 for ds, d in diffs.items()) + ".")
    return lines + ["", _meta(w), ""]


def _peer_shape(s: dict) -> str:
    info = s.get("peer", {})
    if "micro_batches" not in info:
        return ""
    return (f"; here {s.get('hard_negatives', 0)} hard negative(s) per pair, "
            f"{info['micro_batches']} micro-batch(es), bfloat16 autocast "
            f"{'on' if info.get('autocast') else 'off'}")
