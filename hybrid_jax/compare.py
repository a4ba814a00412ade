"""Paired comparison of two evaluated runs on the same queries.

    python -m hybrid_jax.compare RUN_A RUN_B [--metric map@20] [--resamples 10000] [--json F]

RUN is an evaluation directory holding per_query.npz (workdir/eval/<dataset>), or a workdir whose
eval/<dataset>/per_query.npz files are compared dataset by dataset. Several seeds of one run:
join them with commas (RUN_A=seed0,seed1,...); per-query scores are averaged over seeds and
queries resampled jointly (evaluation/statistics/paired.py). Rows: the setting macro averages and
per-language rows with Holm-adjusted p-values (bootstrap p) across the languages of each setting.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import per_query, report
from hybrid_jax.evaluation.statistics import paired, tables


def find_runs(arg: str) -> dict[str, pathlib.Path]:
    """{dataset name: per_query.npz path} for one RUN argument (a single seed)."""
    p = pathlib.Path(arg)
    if (p / "per_query.npz").is_file():
        return {p.name: p / "per_query.npz"}
    found = {f.parent.name: f for f in sorted((p / "eval").glob("*/per_query.npz"))}
    if not found:
        raise InputError(f"{p}: no per_query.npz here nor under {p / 'eval'}/<dataset>/")
    return found


def compare_dataset(name: str, groups_a: list, groups_b: list, metric: str | None = None,
                    **kw) -> list[dict]:
    lareqa = "multi" in groups_a[0]
    metrics = [metric] if metric else (
        [m for m in per_query.metric_names(groups_a[0]["multi"]) if m.startswith("map@")][:1]
        + ["rank_distance"] if lareqa else ["ndcg@10"])
    rows = []
    for met in metrics:
        la = [tables.per_question_scores(g, met) for g in groups_a]
        lb = [tables.per_question_scores(g, met) for g in groups_b]
        views = sorted(la[0])

        def add(view_name, row, holm_group=None):
            if row:
                rows.append({"dataset": name, "view": view_name, "metric": met,
                             "holm_group": holm_group and f"{holm_group}:{met}", **row})

        if not lareqa:
            for v in views:
                add(v, tables.paired_row(la, lb, [v], None, **kw))
            continue
        langs = sorted({v.split("/")[1] for v in views if v.startswith("multi/")})
        add("multi (macro over languages)", tables.paired_row(la, lb, ["multi"], "lang", **kw))
        add("mono (macro)", tables.scope_row(la, lb, "mono", langs, **kw))
        add("cross (macro)", tables.scope_row(la, lb, "cross", langs, **kw))
        for setting, view_name in (("mono", "mono/{}"), ("cross", "cross/{}->* (macro)"),
                                   ("multi", "multi/{}")):
            for x in langs:
                add(view_name.format(x), tables.scope_row(la, lb, setting, [x], **kw), setting)
    for group in {r["holm_group"] for r in rows if r["holm_group"]}:
        paired.add_holm([r for r in rows if r["holm_group"] == group], "p_holm")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--metric", default=None, help="per-query column (default: map@k and "
                    "rank_distance for LAReQA sets, ndcg@10 for BEIR)")
    ap.add_argument("--resamples", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resample-seeds", action="store_true",
                    help="also resample seeds in each bootstrap replicate")
    ap.add_argument("--dataset", default=None, help="only this dataset")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    a = ap.parse_args(argv)
    try:
        side_a = [find_runs(x) for x in a.run_a.split(",") if x]
        side_b = [find_runs(x) for x in a.run_b.split(",") if x]
        names = set.intersection(*[set(s) for s in side_a + side_b])
        if a.dataset:
            names &= {a.dataset}
        if not names:
            raise InputError("the two runs share no evaluated dataset")
        rows = []
        for name in sorted(names):
            rows += compare_dataset(name, [per_query.load(s[name]) for s in side_a],
                                    [per_query.load(s[name]) for s in side_b], a.metric,
                                    n_resamples=a.resamples, seed=a.seed,
                                    resample_seeds=a.resample_seeds)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"A = {a.run_a} ({len(side_a)} seed(s)); B = {a.run_b} ({len(side_b)} seed(s))\n")
    print(report.comparison_table(rows))
    if a.json:
        pathlib.Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
