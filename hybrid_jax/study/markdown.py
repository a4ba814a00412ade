"""How the study's reports write: the page every section renders from, and one formatter per
kind of value, shared by every edition so that the same number always reads the same."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from hybrid_jax.evaluation.report import table
from hybrid_jax.study.runs import label

__all__ = ["Page", "and_list", "ci", "count", "diff", "duration", "mean_std", "p_value",
           "runs_table", "table"]


def _finite(v) -> bool:
    return v is not None and math.isfinite(v)


def p_value(v) -> str:
    return "-" if not _finite(v) else (f"{v:.4f}" if v >= 1e-4 else f"{v:.1e}")


def ci(r: dict, digits: int = 4) -> str:
    return f"[{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"


def diff(v, digits: int = 4) -> str:
    return "-" if v is None else f"{v:+.{digits}f}"


def mean_std(t, digits: int = 3) -> str:
    """(mean, std, n) as 'mean ± std' ('-' without a mean; no ± without a finite std); values of
    10 and more with one decimal."""
    mean, std, _ = t
    if not _finite(mean):
        return "-"
    digits = 1 if abs(mean) >= 10 else digits
    if _finite(std):
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.{digits}f}"


def duration(s) -> str:
    if s is None:
        return "-"
    m, sec = divmod(int(round(s)), 60)
    return f"{m}m{sec:02d}s" if m else f"{sec}s"


def and_list(items: list[str]) -> str:
    if len(items) < 3:
        return " and ".join(items)
    return ", ".join(items[:-1]) + ", and " + items[-1]


def count(n: int, what: str) -> str:
    words = {1: "one", 2: "two", 3: "three", 4: "four"}
    return f"{words.get(n, n)} {what}{'' if n == 1 else 's'}"


@dataclasses.dataclass(frozen=True)
class Page:
    """What every section of a report renders from: the edition's analysis, the finished runs
    (runs.run_info), how many runs the grid plans, where the figures and data files are linked
    (`stem`/), and the words the experiment config asks for around the figures."""
    analysis: Any
    runs: list
    planned: int
    stem: str
    presentation: dict = dataclasses.field(default_factory=dict)

    def link(self, name: str) -> str:
        return f"{self.stem}/{name}"


def _optional(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


# The runs table's columns, each a cell of one run's row (runs.run_info, plus the training curve's
# figures where an edition has them) and the page's link; each edition picks its columns.
RUN_COLUMNS = {
    "run": lambda r, link: r["name"],
    "condition": lambda r, link: label(r["condition"]),
    "seed": lambda r, link: "-" if r["seed"] is None else r["seed"],
    "steps": lambda r, link: r["steps"],
    "first loss": lambda r, link: _optional(r["first_loss"], ".3f"),
    "final loss": lambda r, link: _optional(r["final_loss"], ".3f"),
    "steps/s": lambda r, link: _optional(r["steps_per_sec"], ".2f"),
    "eval": lambda r, link: duration(r["eval_seconds"]),
    "wall time": lambda r, link: duration(r["wall_seconds"]),
    "sessions": lambda r, link: r["sessions"],
    "code": lambda r, link: r["code"],
    "metrics": lambda r, link: f"[metrics.json]({link('metrics/' + r['name'] + '.json')})",
}


def see_also(presentation: dict) -> list[str]:
    """'See also: [what](file); ...' from the presentation's see_also ("file|what" items)."""
    links = [f"[{text or target}]({target})"
             for target, _, text in (item.partition("|")
                                     for item in presentation.get("see_also", ()))]
    return ["See also: " + "; ".join(links) + ".", ""] if links else []


def runs_table(rows: list[dict], columns: tuple, link) -> str:
    return table(list(columns), [[RUN_COLUMNS[c](r, link) for c in columns] for r in rows])
