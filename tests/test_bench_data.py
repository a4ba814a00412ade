"""The data benchmarks' options for corpora made beforehand: benchmarks/data_prepare.py
--mmarco / --out (prepare a synthetic corpus written before, keep the result), data_store.py
--store (store path only, both draws, the corpus's languages) and benchmarks/data_multihost.py
(each of 2 processes assembles its half of every batch, 1 process all of it)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO
from hybrid_jax.data.store.prepare import prepare
from hybrid_jax.data.store.synthetic_mmarco import write_mmarco_like

LANGUAGES = ("en", "de", "zh")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("bench_data")
    write_mmarco_like(root / "mmarco", 300, LANGUAGES)
    prepare([f"mmarco:{root / 'mmarco'}"], root / "store", log=open(os.devnull, "w"))
    return root / "store"


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def store_rows(store, tmp_path_factory) -> list:
    scratch = tmp_path_factory.mktemp("scratch")
    out = _run("benchmarks.data_store", "--store", str(store), "--batches", "3",
               "--dir", str(scratch))
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (scratch / "pairs.jsonl").exists()  # no synthetic corpus written
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.fixture(scope="module")
def multihost(store) -> tuple[dict, dict]:
    out = _run("benchmarks.data_multihost", "--store", str(store), "--batches", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    cut = out.stdout.rindex("\n{")
    return json.loads(out.stdout[:cut]), json.loads(out.stdout[cut:])


def test_data_store_reads_a_prepared_corpus_with_both_draws(store_rows):
    assert [(r["path"], r["draw"]) for r in store_rows] == [("store", "permutation"),
                                                            ("store", "rejection")]
    assert all(r["batches"] == 3 and r["pairs_per_s_wall"] > 0 for r in store_rows)


def test_data_store_refuses_a_directory_that_is_not_a_corpus(tmp_path):
    out = _run("benchmarks.data_store", "--store", str(tmp_path), "--dir", str(tmp_path))
    assert out.returncode != 0
    assert f"--store {tmp_path}: no meta.json" in out.stderr


def test_data_multihost_gives_each_process_its_half_of_the_batch(multihost):
    runs = multihost[0]
    assert [(r["process"], r["devices"], r["rows_per_batch"]) for r in runs["one"]] == \
        [(0, [4, 4], 100)]
    assert [(r["process"], r["devices"], r["rows_per_batch"]) for r in runs["many"]] == \
        [(0, [2, 4], 50), (1, [2, 4], 50)]
    assert all(r["data_mb"]["Rss"] > 0 for r in runs["one"] + runs["many"])


def test_data_prepare_reads_a_written_corpus_and_keeps_the_result(tmp_path):
    write_mmarco_like(tmp_path / "mmarco", 200, LANGUAGES)
    common = ("--questions", "200", "--languages", "3", "--mmarco", str(tmp_path / "mmarco"))
    out = _run("benchmarks.data_prepare", *common, "--out", str(tmp_path / "kept"))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout[:out.stdout.index("\n}") + 2])
    assert (result["texts_read"], result["questions"]) == (200 * 3 * 3, 200)
    assert (tmp_path / "kept" / "meta.json").is_file()
    again = _run("benchmarks.data_prepare", *common, "--out", str(tmp_path / "kept"))
    assert again.returncode != 0 and "exists already" in again.stderr
    wrong = _run("benchmarks.data_prepare", "--questions", "300", "--languages", "3",
                 "--mmarco", str(tmp_path / "mmarco"), "--out", str(tmp_path / "other"))
    assert wrong.returncode != 0
    assert "holds 200 questions in 3 languages with 1 negative(s)" in wrong.stderr


def test_runs_at_scale_are_rendered_from_the_results_file(store, store_rows, multihost,
                                                          tmp_path):
    """record_at_scale keeps BENCHMARKS.md what report.py makes of the results file."""
    from benchmarks import data_prepare, report

    results, rendered = tmp_path / "results.json", tmp_path / "BENCHMARKS.md"
    results.write_text((REPO / "benchmarks" / "results.json").read_text())
    store_run = {"questions": 300, "languages": list(LANGUAGES), "n_texts": 10, "runs": store_rows}
    multihost_run = dict(multihost[1], questions=300, processes=2, devices=2, batches=2,
                         draw="permutation")
    for name, value in (("data_store", store_run), ("data_multihost", multihost_run)):
        data_prepare.record_at_scale(name, value, ["--store", "x"], 0.0, f"note {name}",
                                     results=results, rendered=rendered)
    text = rendered.read_text()
    assert text == report.markdown(json.loads(results.read_text()))
    for heading in ("### Training set-up on the prepared corpus, 300 questions",
                    "### Data memory per host, 300 questions", "note data_store",
                    "note data_multihost", "`python -m benchmarks.data_store --store x`"):
        assert heading in text
    assert text.index("## Corpus preparation") < text.index("### Data memory per host")


def test_a_section_rerun_keeps_the_runs_recorded_at_scale(tmp_path):
    """`python -m benchmarks --sections data_prepare` replaces the section's own numbers but keeps
    what --record stored beside them."""
    out = tmp_path / "results.json"
    kept = {"prepare_1m": {"texts_per_s": 1.0}}
    out.write_text(json.dumps({"sections": {"data_prepare": {"at_scale": kept, "old": 1}}}))
    r = subprocess.run([sys.executable, "-m", "benchmarks", "--config", "configs/tiny.py",
                        "--sections", "data_prepare", "--prepare_questions", "200",
                        "--out", str(out), "--markdown", ""],
                       cwd=REPO, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu"))
    assert r.returncode == 0, r.stderr[-2000:]
    section = json.loads(out.read_text())["sections"]["data_prepare"]
    assert section["at_scale"] == kept and "old" not in section


def test_make_bench_data_store_section(tmp_path):
    """`make bench`'s data_store section: the examples path and both draws on one synthetic corpus,
    the speed-up against the target, rendered."""
    from benchmarks import data_store
    r = data_store.data_store_benchmark(questions=200, batches=3, languages=3,
                                        workdir=str(tmp_path))
    assert [(x["path"], x["draw"]) for x in r["runs"]] == [
        ("examples", "-"), ("store", "permutation"), ("store", "rejection")]
    rejection, examples = r["runs"][2], r["runs"][0]
    assert r["speedup_per_cpu_s"] == rejection["pairs_per_cpu_s"] / examples["pairs_per_cpu_s"]
    text = "\n".join(data_store.markdown(r, "_when_"))
    assert text.startswith("## Input pipeline at corpus scale")
    assert f"**{r['speedup_per_cpu_s']:.1f}x**" in text and "_when_" in text
    assert text.count("| store | rejection | 3 |") == 1
