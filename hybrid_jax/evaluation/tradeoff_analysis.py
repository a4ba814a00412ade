"""The trade-off analysis as data: everything the report, its plots and its JSON files show.

`analyse(runs, ...)` loads finished runs (eval/<dataset>/metrics.json and per_query.npz, plus
metrics.jsonl and timing.json when present), checks that they are comparable and returns an
`Analysis`:

* summary: per condition (zero-shot, X-X-mono, X-Y, hybrid at each alpha), mono, cross and multi
  mAP@k per question language and macro over the high-resource and over all languages, and rank
  distance, as (mean, sample std, n seeds) over seeds. Per language: mono = X vs X's candidates;
  cross = X vs each other language's candidates, mean over the targets (metrics.json
  cross.per_query_language); multi = X vs the pooled candidates of all languages.
* answer: hybrid - X-X-mono on mono retrieval and hybrid - X-Y on cross retrieval, per language and
  macro: paired bootstrap over questions (a question and its translations resampled together),
  per-query scores averaged over seeds (evaluation/stats.py), two-sided bootstrap p, Holm-adjusted
  over the family of the high-resource tests of both comparisons (`p_holm`) and separately over
  all languages' tests (`p_holm_all`). The macro rows are outside both families.
* sweep: every other hybrid alpha against the same references, macro rows only.
* per run: training curve and timing.
Nothing here writes files or renders markdown.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Optional, Sequence

import numpy as np

from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import per_query, stats

SETTINGS = ("mono", "cross", "multi")
LEVEL = 0.05         # verdicts: significant at p < LEVEL
CONFIDENCE = 0.95    # bootstrap percentile intervals
REFERENCES = {"mono": "mono", "cross": "cross"}  # setting -> the condition hybrid is tested against


@dataclasses.dataclass
class RunRecord:
    name: str
    condition: str            # 'zero-shot' | 'mono' | 'cross' | 'hybrid-a<alpha>'
    sampler: str
    alpha: Optional[float]
    seed: Optional[int]
    run_dir: pathlib.Path
    metrics: dict = dataclasses.field(default_factory=dict)
    groups: dict = dataclasses.field(default_factory=dict)

    def load(self, dataset: str) -> "RunRecord":
        d = pathlib.Path(self.run_dir) / "eval" / dataset
        try:
            self.metrics = json.loads((d / "metrics.json").read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{d / 'metrics.json'}: unreadable ({e})") from e
        if self.metrics.get("type") != "lareqa":
            raise InputError(f"{d / 'metrics.json'}: not a LAReQA evaluation")
        self.groups = per_query.load(d / "per_query.npz")
        return self


def label(condition: str) -> str:
    if condition == "mono":
        return "X-X-mono"
    if condition == "cross":
        return "X-Y"
    if condition.startswith("hybrid-a"):
        return f"hybrid (alpha={condition[len('hybrid-a'):]})"
    return condition


def _order(condition: str) -> tuple:
    if condition.startswith("hybrid-a"):
        return (3, float(condition[len("hybrid-a"):]))
    return ({"zero-shot": 0, "mono": 1, "cross": 2}.get(condition, 4), 0.0)


def by_condition(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for r in sorted(runs, key=lambda r: (_order(r.condition), r.seed or 0)):
        out.setdefault(r.condition, []).append(r)
    return out


def negatives_per_query(config: Optional[dict]) -> Optional[tuple[int, int]]:
    """(in-batch, hard) negatives each training query is scored against (losses.py): the other
    global_batch_size - 1 positives of the global batch, plus the hard negatives of every query
    of the batch (they are gathered like the positives). None without a batch size."""
    data = (config or {}).get("data", {})
    if data.get("global_batch_size") is None:
        return None
    b = int(data["global_batch_size"])
    hard = int((config or {}).get("data", {}).get("hard_negatives") or 0)
    return b - 1, b * hard


# ----------------------------------------------------------------------------- summaries


def language_value(m: dict, setting: str, lang: str, key: str) -> float:
    """mono / cross (mean over targets) / multi `key`, or 'rank_distance', for question language."""
    if setting == "rank_distance":
        e = m["rank_distance"]["per_language"].get(lang) or {}
        v = e.get("rank_distance")
    else:
        per = {"mono": m["mono"]["per_language"], "cross": m["cross"]["per_query_language"],
               "multi": m["multi"]["per_language"]}[setting]
        v = (per.get(lang) or {}).get(key)
    return float("nan") if v is None else float(v)


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v)


def summarize(groups: dict[str, list[RunRecord]], languages: Sequence[str],
              high_resource: Sequence[str], key: str) -> dict:
    """condition -> setting -> {lang | 'macro_hr' | 'macro_all': (mean, std, n_seeds)}.
    Macros are taken per seed (mean over the languages), then mean +- std over seeds."""
    out = {}
    for cond, runs in groups.items():
        out[cond] = {}
        for setting in SETTINGS + ("rank_distance",):
            per_seed = [{x: language_value(r.metrics, setting, x, key) for x in languages}
                        for r in runs]
            row = {x: mean_std([s[x] for s in per_seed]) for x in languages}
            row["macro_hr"] = mean_std([np.mean([s[x] for x in high_resource]) for s in per_seed])
            row["macro_all"] = mean_std([np.mean([s[x] for x in languages]) for s in per_seed])
            out[cond][setting] = row
    return out


# ----------------------------------------------------------------------------- comparisons


def compare_conditions(a: list[RunRecord], b: list[RunRecord], setting: str,
                       languages: Sequence[str], high_resource: Sequence[str], key: str, *,
                       per_language: bool = True, n_bootstrap: int = 10_000, seed: int = 0,
                       resample_seeds: bool = False) -> list[dict]:
    """Rows of A - B on `setting` ('mono' or 'cross'): per question language (when
    `per_language`), and the macro over the high-resource and over all languages (seeds pooled,
    questions resampled as clusters)."""
    la = [stats.per_question_scores(r.groups, key) for r in a]
    lb = [stats.per_question_scores(r.groups, key) for r in b]
    views = sorted(la[0])
    kw = dict(n_resamples=n_bootstrap, seed=seed, resample_seeds=resample_seeds,
              confidence=CONFIDENCE)
    rows = []

    def add(scope, sel, stratify):
        if not sel:
            return
        r = stats.paired_row(la, lb, sel, stratify, **kw)
        if r:
            rows.append({"setting": setting, "scope": scope, "metric": key, **r})

    def sel(langs):
        return [v for x in langs for v in stats.language_views(x, setting, views)]

    if per_language:
        for x in languages:
            add(x, sel([x]), "view" if setting == "cross" else None)
    add("macro_hr", sel(high_resource), "view")
    add("macro_all", sel(languages), "view")
    return rows


def verdict(row: dict, p_key: str = "p_holm") -> str:
    p = row.get(p_key, row["p_bootstrap"])
    if p is None or not np.isfinite(p) or p >= LEVEL:
        return "no significant difference"
    return "significant gain" if row["diff"] > 0 else "significant loss"


def uncorrected_verdict(row: dict) -> str:
    """The verdict of a test outside every Holm family: it names the uncorrected p, so that it
    cannot be read as a finding of the corrected family."""
    p = row["p_bootstrap"]
    if p is None or not np.isfinite(p) or p >= LEVEL:
        return "no significant difference"
    return f"{'gain' if row['diff'] > 0 else 'loss'} at uncorrected p < {LEVEL}"


# ----------------------------------------------------------------------------- curves, timing


def read_curve(run_dir) -> dict[int, dict]:
    """metrics.jsonl as step -> row (a resumed run repeats steps: the last line wins)."""
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    out: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out.setdefault(int(row["step"]), {}).update(row)
    return out


def run_timing(r: RunRecord, curve: dict[int, dict]) -> dict:
    path = pathlib.Path(r.run_dir) / "timing.json"
    t = json.loads(path.read_text()) if path.is_file() else {}
    steps = [s for s in sorted(curve) if "loss" in curve[s]]
    rates = [curve[s]["steps_per_sec"] for s in steps if "steps_per_sec" in curve[s]]
    return {"wall_seconds": t.get("wall_seconds"), "sessions": len(t.get("sessions", [])),
            "steps": steps[-1] if steps else 0,
            "first_loss": curve[steps[0]]["loss"] if steps else None,
            "final_loss": curve[steps[-1]]["loss"] if steps else None,
            "steps_per_sec": float(np.mean(rates)) if rates else None,
            "eval_seconds": r.metrics.get("seconds")}


# ----------------------------------------------------------------------------- the analysis


@dataclasses.dataclass
class Analysis:
    dataset: str
    key: str                          # the metric, 'map@<k>'
    languages: list[str]              # evaluated question languages
    high_resource: list[str]          # the requested high-resource languages that were evaluated
    runs: list[RunRecord]             # loaded
    groups: dict[str, list[RunRecord]]
    summary: dict                     # summarize()
    primary: Optional[str]            # the hybrid condition the answer is about
    answer: dict[str, list[dict]]     # setting -> compare_conditions rows, Holm added
    sweep: list[dict]                 # other alphas' macro rows, each with its 'condition'
    curves: dict[str, dict]           # run name -> read_curve()
    timing: dict[str, dict]           # run name -> run_timing()
    n_bootstrap: int
    resample_seeds: bool
    missing: list[str] = dataclasses.field(default_factory=list)
    config: Optional[dict] = None
    model: str = ""

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs if r.seed is not None})

    @property
    def alphas(self) -> dict[str, float]:
        return {c: rs[0].alpha for c, rs in self.groups.items() if rs[0].alpha is not None}

    @property
    def per_language(self) -> list[dict]:
        """The answer's per-language rows (the Holm families draw from these)."""
        return [r for s in self.answer.values() for r in s if r["scope"] in self.languages]

    @property
    def family(self) -> list[dict]:
        """The question's Holm family: the high-resource rows of every comparison."""
        return [r for r in self.per_language if r["scope"] in self.high_resource]

    @property
    def n_multi_queries(self):
        return self.runs[0].metrics["multi"]["micro"].get("n_queries")

    @property
    def total_wall_seconds(self) -> float:
        return sum(t["wall_seconds"] or 0.0 for t in self.timing.values())


def _load(runs: Sequence[RunRecord], dataset: str, key: str,
          high_resource: Sequence[str]) -> tuple[list[RunRecord], list[str], list[str]]:
    runs = [r.load(dataset) for r in runs]
    languages = list(runs[0].metrics["languages"])
    for r in runs:
        if list(r.metrics["languages"]) != languages:
            raise InputError(f"{r.run_dir}: evaluated on languages {r.metrics['languages']}, "
                             f"others on {languages}")
        if key not in r.metrics["mono"]["macro"]:
            raise InputError(f"{r.run_dir}: metrics.json has no {key} (eval.k differs?)")
    hr = [x for x in high_resource if x in languages]
    if not hr:
        raise InputError(f"experiment.high_resource: none of {list(high_resource)} was "
                         f"evaluated (languages: {', '.join(languages)})")
    return runs, languages, hr


def primary_condition(groups: dict, primary_alpha: float) -> Optional[str]:
    """hybrid at `primary_alpha`, else the first hybrid condition, else None."""
    primary = f"hybrid-a{primary_alpha:g}"
    if primary in groups:
        return primary
    return next((c for c in groups if c.startswith("hybrid-a")), None)


def _comparisons(groups, primary, languages, hr, key, **kw) -> tuple[dict, list]:
    answer: dict[str, list[dict]] = {}
    if primary:
        for setting, ref in REFERENCES.items():
            if ref in groups:
                answer[setting] = compare_conditions(groups[primary], groups[ref], setting,
                                                     languages, hr, key, **kw)
    per_lang = [r for s in answer.values() for r in s if r["scope"] in languages]
    stats.add_holm([r for r in per_lang if r["scope"] in hr], "p_holm")
    stats.add_holm(per_lang, "p_holm_all")
    sweep: list[dict] = []
    for cond in groups:
        if cond.startswith("hybrid-a") and cond != primary:
            for setting, ref in REFERENCES.items():
                if ref in groups:
                    for r in compare_conditions(groups[cond], groups[ref], setting, languages,
                                                hr, key, per_language=False, **kw):
                        sweep.append({"condition": cond, **r})
    return answer, sweep


def analyse(runs: Sequence[RunRecord], *, dataset: str, k: int = 20,
            high_resource: Sequence[str] = ("en", "de", "es", "ru", "zh"),
            primary_alpha: float = 0.5, n_bootstrap: int = 10_000, bootstrap_seed: int = 0,
            resample_seeds: bool = False, missing: Sequence[str] = (),
            config: Optional[dict] = None, model: str = "") -> Analysis:
    """Loads and checks `runs` (InputError when they cannot be compared), then summarises and
    compares them."""
    key = f"map@{k}"
    runs, languages, hr = _load(runs, dataset, key, high_resource)
    groups = by_condition(runs)
    primary = primary_condition(groups, primary_alpha)
    answer, sweep = _comparisons(groups, primary, languages, hr, key, n_bootstrap=n_bootstrap,
                                 seed=bootstrap_seed, resample_seeds=resample_seeds)
    curves = {r.name: read_curve(r.run_dir) for r in runs}
    return Analysis(dataset=dataset, key=key, languages=languages, high_resource=hr, runs=runs,
                    groups=groups, summary=summarize(groups, languages, hr, key),
                    primary=primary, answer=answer, sweep=sweep, curves=curves,
                    timing={r.name: run_timing(r, curves[r.name]) for r in runs},
                    n_bootstrap=n_bootstrap, resample_seeds=resample_seeds,
                    missing=list(missing), config=config, model=model)
