"""The first edition's report (study/pooled.py and its sections) from hand-built runs (no
training): the text follows the runs' config, the statistics are the compare CLI's, and the
evaluation package never imports that CLI."""
import ast
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from configs import labse, tradeoff as tradeoff_config, xlmr_base
from hybrid_jax import compare
from hybrid_jax.evaluation import per_query
from hybrid_jax.evaluation.statistics import paired, tables
from hybrid_jax.study import editions, figures_pooled, paper, pooled, report, sections_pooled
from hybrid_jax.study.markdown import Page
from hybrid_jax.study.runs import Run

DATASET = "toy"
LANGS = ["de", "en", "fr"]
NQ = 24
FIRST = editions.EDITIONS["first"]


def _groups(rng, shift):
    """per_query tables of one run: every question in every language, in every pool."""
    base = np.linspace(0.2, 0.9, NQ)
    qid = np.array([f"{x}-{i}" for x in LANGS for i in range(NQ)])
    lang = np.repeat(LANGS, NQ)
    cluster = np.tile([f"q{i}" for i in range(NQ)], len(LANGS))

    def scores():
        return np.clip(np.tile(base, len(LANGS)) + shift + rng.normal(0, .05, len(qid)), 0, 1)

    out = {"multi": {"qid": qid, "lang": lang, "cluster": cluster, "map@20": scores(),
                     "rank_distance": 10 + 5 * rng.random(len(qid))}}
    for y in LANGS:
        out[f"pool={y}"] = {"qid": qid, "lang": lang, "cluster": cluster, "map@20": scores()}
    return out


def _metrics(groups):
    """The parts of metrics.json the report reads, computed from the per-query tables."""
    views = per_query.views(groups)
    mean = lambda v, c="map@20": float(np.mean(views[v][c]))  # noqa: E731
    cross = {x: {"map@20": float(np.mean([mean(f"cross/{x}->{y}") for y in LANGS if y != x]))}
             for x in LANGS}
    mono = {x: {"map@20": mean(f"mono/{x}")} for x in LANGS}
    return {"type": "lareqa", "languages": LANGS, "seconds": 12.0,
            "mono": {"macro": {"map@20": float(np.mean([m["map@20"] for m in mono.values()]))},
                     "per_language": mono},
            "cross": {"per_query_language": cross},
            "multi": {"per_language": {x: {"map@20": mean(f"multi/{x}")} for x in LANGS},
                      "micro": {"n_queries": NQ * len(LANGS)}},
            "rank_distance": {"per_language": {
                x: {"rank_distance": mean(f"multi/{x}", "rank_distance")} for x in LANGS}}}


def _run(root, name, condition, alpha, seed, shift, rng):
    d = root / name / "eval" / DATASET
    d.mkdir(parents=True)
    groups = _groups(rng, shift)
    per_query.save(d / "per_query.npz", groups)
    (d / "metrics.json").write_text(json.dumps(_metrics(groups)))
    (root / name / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0 / s, "steps_per_sec": 2.0}) + "\n"
                for s in (1, 2, 3)))
    (root / name / "timing.json").write_text(json.dumps({"wall_seconds": 60.0,
                                                         "sessions": [{}]}))
    return Run(name, condition, seed, alpha, root / name)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    rng = np.random.default_rng(0)
    runs = [_run(root, "zero-shot", "zero-shot", None, None, -0.1, rng)]
    for cond, alpha, shift in (("mono", 1.0, 0.05), ("cross", 0.0, -0.05),
                               ("hybrid-a0.5", 0.5, 0.0)):
        runs += [_run(root, f"{cond}-s{s}", cond, alpha, s, shift, rng) for s in (0, 1)]
    return runs


def _config(**changes):
    config = json.loads(tradeoff_config.get_config().to_json_best_effort())
    for dotted, value in changes.items():
        section, field = dotted.split("__")
        config[section][field] = value
    return config


def _report(grid, tmp_path, **kw):
    kw.setdefault("config", _config())
    path = report.write_report(FIRST, grid, out_dir=tmp_path, report_name="tradeoff.md",
                               planned=len(grid),
                               parameters=dict(dataset=DATASET, n_bootstrap=200,
                                               high_resource=("en", "de"), model="toy", **kw))
    return path.read_text()


# -- text from the config ---------------------------------------------------------------------

@pytest.mark.parametrize("batch", [16, 32])
def test_negatives_follow_the_batch_size(grid, tmp_path, batch):
    text = _report(grid, tmp_path, config=_config(data__global_batch_size=batch))
    assert f"steps of global batch {batch} ({batch - 1} in-batch negatives per query)" in text
    assert f"99 instead of {batch - 1} in-batch negatives per query" in text


def test_hard_negatives_are_counted(grid, tmp_path):
    text = _report(grid, tmp_path, config=_config(data__global_batch_size=8,
                                                  data__hard_negatives=2))
    # every query scores all 8 * 2 hard negatives of the batch (losses.py gathers them)
    assert "global batch 8 (7 in-batch and 16 hard negatives per query)" in text
    assert pooled.negatives_per_query(
        _config(data__global_batch_size=8, data__hard_negatives=2)) == (7, 16)


def test_accelerator_paragraph_lists_only_real_changes(grid, tmp_path):
    same = _config(data__global_batch_size=100, data__passage_max_length=128,
                   train__num_steps=3000, data__hard_negatives=1)
    text = _report(grid, tmp_path, config=same)
    assert "instead of" not in text and "These runs already have the batch" in text
    text = _report(grid, tmp_path, config=_config(data__global_batch_size=100,
                                                  data__hard_negatives=1))
    assert "changes two things this CPU budget cannot: untruncated answer sentences and " \
           "many more steps." in text
    text = _report(grid, tmp_path, config=_config(data__global_batch_size=100))
    assert "three things this CPU budget cannot: a hard negative per pair" in text
    text = _report(grid, tmp_path, config=None)       # no config: nothing to compare with
    assert "99 in-batch negatives per query" in text and "instead of" not in text
    assert "Every trained run" not in text


def test_accelerator_constants_are_the_configs():
    for module in (xlmr_base, labse):
        c = module.get_config()
        assert paper.ACCELERATOR == dict(
            global_batch_size=c.data.global_batch_size,
            passage_max_length=c.data.passage_max_length, num_steps=c.train.num_steps,
            hard_negatives=c.data.hard_negatives)
        assert c.data.negative_source == "same_paragraph" and c.train.select == "loss"
    for name in paper.ACCELERATOR_CONFIGS.split(", "):
        assert (REPO / name).is_file()


# -- statistical wording ----------------------------------------------------------------------

def test_macro_rows_are_not_called_significant(grid, tmp_path):
    text = _report(grid, tmp_path)
    comps = json.loads((tmp_path / "tradeoff" / "comparisons.json").read_text())["answer"]
    macro = [r for s in comps.values() for r in s if r["scope"].startswith("macro")]
    assert any(r["p_bootstrap"] < 0.05 for r in macro)         # the case the wording is about
    for line in text.splitlines():
        if line.startswith("| macro ("):
            assert "(not in family)" in line and "significant loss" not in line \
                and "significant gain" not in line
    row = next(r for r in comps["mono"] if r["scope"] == "macro_all")
    assert row["diff"] < 0 and row["p_bootstrap"] < 0.05
    assert pooled.uncorrected_verdict(row) == "loss at uncorrected p < 0.05"
    assert "it is not evidence that there is no difference" in text
    assert "high-resource tests of both comparisons" in text


def test_sections_render_the_analysis(grid, tmp_path):
    a = pooled.analyse(grid, dataset=DATASET, high_resource=("en", "xx"), n_bootstrap=100)
    assert a.high_resource == ["en"] and a.primary == "hybrid-a0.5"
    assert [r["scope"] for r in a.family] == ["en", "en"]      # mono and cross
    assert [r["p_holm"] for r in a.family] == pytest.approx(
        list(paired.holm([r["p_bootstrap"] for r in a.family])))
    page = Page(a, [], len(grid), "x")
    text = report.render(FIRST, page)
    for section in (sections_pooled.header, sections_pooled.paper, sections_pooled.how_it_was_run):
        assert "\n".join(section(page)) in text
    assert "Holm-adjusted over the 2 high-resource tests" in text
    assert set(figures_pooled.files(a)) == {"settings", "answer", "curves", "alpha"}
    only_mono = pooled.analyse([r for r in grid if r.condition != "cross"], dataset=DATASET,
                               high_resource=("en",), n_bootstrap=100)
    assert "high-resource tests of the one comparison" in report.render(
        FIRST, Page(only_mono, [], len(grid), "x"))


# -- one implementation of the statistics -----------------------------------------------------

def test_compare_cli_and_tradeoff_give_the_same_rows(grid, monkeypatch):
    runs = {r.name: r for r in grid}
    hyb, mono = [runs["hybrid-a0.5-s0"], runs["hybrid-a0.5-s1"]], [runs["mono-s0"],
                                                                   runs["mono-s1"]]
    calls = []
    shared = tables.paired_row
    monkeypatch.setattr(tables, "paired_row", lambda *a, **k: calls.append(1) or shared(*a, **k))
    cli = compare.compare_dataset(DATASET, [r.groups(DATASET) for r in hyb],
                                  [r.groups(DATASET) for r in mono], "map@20", n_resamples=300,
                                  seed=4)
    n_cli = len(calls)
    ours = {s: pooled.compare_conditions(hyb, mono, DATASET, s, LANGS, ["en"], "map@20",
                                         n_bootstrap=300, seed=4)
            for s in ("mono", "cross")}
    assert n_cli > 0 and len(calls) > n_cli                   # both went through tables
    keys = ("mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_bootstrap", "p_permutation",
            "n_queries", "n_clusters")
    by_view = {r["view"]: r for r in cli}
    for x in LANGS:
        for s, view in (("mono", f"mono/{x}"), ("cross", f"cross/{x}->* (macro)")):
            row = next(r for r in ours[s] if r["scope"] == x)
            assert {k: row[k] for k in keys} == {k: by_view[view][k] for k in keys}
    macro = next(r for r in ours["mono"] if r["scope"] == "macro_all")
    assert macro["diff"] == pytest.approx(by_view["mono (macro)"]["diff"])
    assert not hasattr(compare, "paired_row") and not hasattr(compare, "per_question_scores")


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_evaluation_and_the_study_never_import_the_compare_cli():
    root = REPO / "hybrid_jax"
    files = sorted((root / "evaluation").rglob("*.py")) + sorted((root / "study").glob("*.py"))
    assert any(f.name == "report.py" and f.parent.name == "study" for f in files)
    assert any(f.parent.name == "statistics" for f in files)
    for f in files:
        assert "hybrid_jax.compare" not in _imports(f), f
    dotted = [".".join(f.relative_to(REPO).with_suffix("").parts) for f in files
              if f.stem not in ("__init__", "__main__")]
    modules = ", ".join(dotted)
    code = f"import sys, {modules}; print('hybrid_jax.compare' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
