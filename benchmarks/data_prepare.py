"""Corpus preparation throughput: `python -m hybrid_jax.prepare_data` on a synthetic corpus of
mMARCO's shape (hybrid_jax/data/store/synthetic_mmarco.py), in a child process so its peak
resident memory is the prepare step's own.

    python -m benchmarks.data_prepare [--questions 100000] [--languages 9] [--negatives 1]
        [--mmarco DIR] [--out DIR]

texts/s counts the texts the prepared examples hold (questions x languages x (query + positive +
negatives)), repeats included, over the prepare step's whole wall time (tokenizer load, reading,
hashing, tokenizing, writing); distinct_texts_per_s the distinct ones it tokenized; texts per
CPU second the same count over the CPU time it used (steadier on shared cores). Target
>= 8,000 texts/s on a 2-core CPU. `make bench` runs it as the
`data_prepare` section (--prepare_questions; 1,000,000 is the paper scale).
--mmarco reads a synthetic corpus written before (`python -m hybrid_jax.data.store.synthetic_mmarco
--questions N`, the same N, languages and negatives) instead of writing one; --out keeps the
prepared corpus there (it must not exist yet) for the other data benchmarks. --record adds the
result to benchmarks/results.json as a run at scale of the data_prepare section (beside the
`make bench` one) and renders BENCHMARKS.md again; data_store.py and data_multihost.py record
their runs there too (`record_at_scale`).
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

LANGUAGES = ("en", "de", "es", "fr", "it", "pt", "ru", "zh", "ar", "nl", "hi", "id", "ja", "vi")
TARGET_TEXTS_PER_S = 8000
REPO = pathlib.Path(__file__).resolve().parents[1]


def data_prepare_benchmark(questions: int = 100_000, languages: int = 9, negatives: int = 1,
                           workdir: str | None = None, mmarco: str | None = None,
                           out: str | None = None) -> dict:
    from hybrid_jax.data.store.layout import open_store
    from hybrid_jax.data.store.synthetic_mmarco import write_mmarco_like

    root = pathlib.Path(workdir or tempfile.mkdtemp(prefix="data_prepare_"))
    source, target = pathlib.Path(mmarco or root / "mmarco"), pathlib.Path(out or root / "store")
    if target.exists():
        raise SystemExit(f"--out {target}: exists already; the benchmark prepares a new corpus")
    try:
        t = time.perf_counter()
        if not mmarco:
            write_mmarco_like(source, questions, LANGUAGES[:languages], negatives)
        generate_s = time.perf_counter() - t
        t = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "hybrid_jax.prepare_data",
                                  "--source", f"mmarco:{source}", "--out", str(target)],
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                     [str(REPO), os.environ.get("PYTHONPATH", "")])})
        status, usage, peak_kb = _wait_with_peak(child.pid)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
        if child.returncode:
            raise RuntimeError(f"prepare_data exited with status {child.returncode}")
        store = open_store(target)
        held = (store.meta["n_examples"], len(store.languages), store.meta["max_negatives"])
        if held != (questions, languages, negatives):
            raise SystemExit(f"--mmarco {source}: holds {held[0]} questions in {held[1]} "
                             f"languages with {held[2]} negative(s), not --questions {questions} "
                             f"--languages {languages} --negatives {negatives}")
        texts = questions * languages * (2 + negatives)
        return {"questions": questions, "languages": languages, "negatives": negatives,
                "texts_read": texts, "distinct_texts": store.meta["n_texts"],
                "tokens": int(store.offsets[-1]), "wall_s": wall, "texts_per_s": texts / wall,
                "distinct_texts_per_s": store.meta["n_texts"] / wall,
                "peak_rss_gb": peak_kb / 2**20, "generate_s": generate_s,
                # CPU seconds it used: on shared cores texts / cpu_s is the steadier figure
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "texts_per_cpu_s": texts / (usage.ru_utime + usage.ru_stime),
                "store_gb": sum(p.stat().st_size for p in store.path.iterdir()) / 2**30,
                "target_texts_per_s": TARGET_TEXTS_PER_S, "cpu_count": os.cpu_count()}
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)


def _wait_with_peak(pid: int, every_s: float = 0.1):
    """(exit status, rusage, peak resident kB) of child `pid`. The peak is its VmHWM, read while it
    runs: the rusage's ru_maxrss of a child starts from the parent's peak at fork, so after the
    training sections of `make bench` it would report their memory, not the prepare step's."""
    peak_kb = 0
    while True:
        try:
            with open(f"/proc/{pid}/status") as f:
                hwm = [line for line in f if line.startswith("VmHWM:")]
            peak_kb = max([peak_kb] + [int(line.split()[1]) for line in hwm])
        except OSError:
            pass
        # wait4: this child's own usage (RUSAGE_CHILDREN would mix in earlier sections' children)
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, peak_kb or usage.ru_maxrss
        time.sleep(every_s)


def markdown(p: dict, meta: str = "") -> list[str]:
    """The section for BENCHMARKS.md (`meta`: how and where it was run)."""
    ok = "met" if p["texts_per_s"] >= p["target_texts_per_s"] else "**not met**"
    return ["## Corpus preparation", "", f"Synthetic mMARCO-shaped corpus, {p['questions']:,} questions x {p['languages']} "
            f"languages, {p['negatives']} negative(s): {p['texts_read']:,} example texts "
            f"({p['distinct_texts']:,} distinct, {p['tokens']:,} tokens) in {p['wall_s']:.0f} s: "
            f"**{p['texts_per_s']:,.0f} texts/s** (target >= {p['target_texts_per_s']:,}: {ok}), "
            f"peak RSS {p['peak_rss_gb']:.2f} GB, corpus {p['store_gb']:.2f} GB on disk; "
            f"{p['cpu_s']:.0f} CPU seconds ({p['texts_per_cpu_s']:,.0f} texts per CPU second).",
            "", meta, ""] + _scale_sections(p)


def scale_markdown(p: dict) -> list[str]:
    """A run at scale, under the data_prepare section."""
    return [f"### Corpus preparation, {p['questions']:,} questions", ""] + markdown(p)[2:3] + [
        "", p.get("note", "")]


def record_at_scale(name: str, value: dict, argv, started: float, note: str,
                    results: pathlib.Path = REPO / "benchmarks" / "results.json",
                    rendered: pathlib.Path = REPO / "BENCHMARKS.md") -> None:
    """Stores `value`, the result of `python -m benchmarks.<name> <argv>` begun at perf_counter
    `started`, as the data_prepare section's run at scale `name` (with when, the command, its wall
    time, the load average and the CPU, as `make bench` records a section) and renders
    BENCHMARKS.md from the results file again."""
    from benchmarks import measure, report
    from benchmarks.__main__ import cpu_description

    doc = json.loads(results.read_text())
    if "data_prepare" not in doc.get("sections", {}):
        raise SystemExit(f"{results}: no data_prepare section to add a run at scale to; run "
                         f"`python -m benchmarks --sections data_prepare` first")
    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    argv = ["NOTE" if a == note else a for a in argv]  # the note is printed beside the run
    value = dict(value, note=note, _meta={
        "when": when, "command": f"python -m benchmarks.{name} {shlex.join(argv)}",
        "wall_s": time.perf_counter() - started, "load_average": list(os.getloadavg()),
        "cpu": cpu_description()})
    doc["sections"]["data_prepare"].setdefault("at_scale", {})[name] = value
    measure.write_json(results, doc)
    rendered.write_text(report.markdown(doc))


def _scale_sections(p: dict) -> list[str]:
    from importlib import import_module

    from benchmarks.report import _meta

    lines = []
    for name, value in p.get("at_scale", {}).items():
        lines += import_module(f"benchmarks.{name}").scale_markdown(value) + [
            "", _meta(value), ""]
    return lines


def main(argv) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=100_000)
    parser.add_argument("--languages", type=int, default=9)
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--mmarco", help="a synthetic mMARCO-layout corpus written before")
    parser.add_argument("--out", help="keep the prepared corpus here (a new directory)")
    parser.add_argument("--record", default="", metavar="NOTE", help="add the result to "
                        "benchmarks/results.json and BENCHMARKS.md, NOTE saying how the host "
                        "was loaded")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = data_prepare_benchmark(args.questions, args.languages, args.negatives,
                                    mmarco=args.mmarco, out=args.out)
    print(json.dumps(result, indent=1))
    if args.record:
        record_at_scale("data_prepare", result, argv, started, args.record)
    print("\n".join(markdown(result)))


if __name__ == "__main__":
    main(sys.argv[1:])
