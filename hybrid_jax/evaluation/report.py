"""report.md: the tables a person reads, built from metrics.json content."""
from __future__ import annotations

from typing import Sequence


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _metric_cols(entry: dict) -> list[str]:
    return [m for m in entry if m not in ("n_queries", "n_entries")]


def _search_lines(search: dict) -> list[str]:
    out = []
    for pool, info in search.items():
        rec = {k: v for k, v in info.items() if k.startswith("scann_recall@")}
        extra = ", ".join(f"{k} = {v:.4f}" for k, v in rec.items())
        out.append(f"- {pool}: {info['method']} search, {info['pool_size']} candidates, "
                   f"{info['n_queries']} queries" + (f", {extra}" if extra else ""))
    return out


def lareqa_report(name: str, m: dict, plots: Sequence[str] = ()) -> str:
    k = m["k"]
    cols = _metric_cols(m["multi"]["micro"])
    parts = [f"# {name}: LAReQA-style retrieval", "",
             f"Languages: {', '.join(m['languages'])}. Ties are pessimistic (relevant candidates "
             f"rank after equal-scored non-relevant ones). Mono and cross are macro-averaged over "
             f"language pairs, multi over question languages (micro: over all questions).", "",
             "## Summary", "",
             table(["setting"] + cols,
                   [["mono (macro)"] + [m["mono"]["macro"].get(c) for c in cols],
                    ["cross (macro)"] + [m["cross"]["macro"].get(c) for c in cols],
                    ["multi (macro)"] + [m["multi"]["macro"].get(c) for c in cols],
                    ["multi (micro)"] + [m["multi"]["micro"].get(c) for c in cols]]),
             "", f"Rank distance (multi, exact ranks; lower = less language bias): macro "
             f"{_fmt(m['rank_distance']['macro'])}, micro {_fmt(m['rank_distance']['micro'])}.",
             "", f"## mAP@{k} per question language", ""]
    key = f"map@{k}"
    rows = []
    for lang in m["languages"]:
        rows.append([lang, m["mono"]["per_language"].get(lang, {}).get(key),
                     m["cross"]["per_query_language"].get(lang, {}).get(key),
                     m["multi"]["per_language"].get(lang, {}).get(key),
                     m["rank_distance"]["per_language"].get(lang, {}).get("rank_distance"),
                     m["multi"]["per_language"].get(lang, {}).get("n_queries")])
    parts += [table(["language", "mono", "cross (mean over targets)", "multi", "rank distance",
                     "questions"], rows), "", f"## mAP@{k}: question x candidate language", ""]
    langs = m["languages"]
    grid = []
    for x in langs:
        row = [x]
        for y in langs:
            e = m["mono"]["per_language"].get(x) if x == y else m["cross"]["pairs"].get(f"{x}->{y}")
            row.append(e.get(key) if e else None)
        grid.append(row)
    parts += [table(["q \\ c"] + langs, grid), "", "## Search", ""] + _search_lines(m["search"])
    if plots:
        parts += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(parts) + "\n"


def beir_report(name: str, m: dict) -> str:
    cols = _metric_cols(m["all"])
    return "\n".join([f"# {name}: monolingual retrieval", "",
                      table(["queries"] + cols, [[m["all"]["n_queries"]] +
                                                 [m["all"][c] for c in cols]]),
                      "", "## Search", ""] + _search_lines(m["search"])) + "\n"


def comparison_table(rows: Sequence[dict]) -> str:
    """Rows from compare.py: name, metric, a, b, diff, CI, p-values (Holm-adjusted where set)."""
    return table(["dataset", "view", "metric", "A", "B", "A-B", "95% CI", "p (boot)",
                  "p (perm)", "p Holm", "queries"],
                 [[r["dataset"], r["view"], r["metric"], r["mean_a"], r["mean_b"], r["diff"],
                   f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]", r["p_bootstrap"],
                   r["p_permutation"], r.get("p_holm"), r["n_queries"]] for r in rows])
