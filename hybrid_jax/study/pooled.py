"""The first edition's analysis as data: everything its report, figures and JSON files show.

The first edition's design: seeds pooled per query, one query-level bootstrap
(evaluation/statistics/paired.py). `analyse(runs, ...)` reads finished runs (runs.Run:
eval/<dataset>/metrics.json and per_query.npz, plus metrics.jsonl and timing.json when
present), checks that they are comparable and returns an `Analysis`:

* summary: per condition (zero-shot, X-X-mono, X-Y, hybrid at each alpha), mono, cross and multi
  mAP@k per question language and macro over the high-resource and over all languages, and rank
  distance, as (mean, sample std, n seeds) over seeds. Per language: mono = X vs X's candidates;
  cross = X vs each other language's candidates, mean over the targets (metrics.json
  cross.per_query_language); multi = X vs the pooled candidates of all languages.
* answer: hybrid - X-X-mono on mono retrieval and hybrid - X-Y on cross retrieval, per language and
  macro: paired bootstrap over questions (a question and its translations resampled together),
  per-query scores averaged over seeds (statistics/paired.py), two-sided bootstrap p, Holm-adjusted
  over the family of the high-resource tests of both comparisons (`p_holm`) and separately over
  all languages' tests (`p_holm_all`). The macro rows are outside both families.
* sweep: every other hybrid alpha against the same references, macro rows only.
* per run: training curve and timing.
Nothing here writes files or renders markdown.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from hybrid_jax.errors import InputError
from hybrid_jax.evaluation.statistics import paired, tables
from hybrid_jax.study.runs import Run, by_condition, read_curve, run_info, summarize

SETTINGS = ("mono", "cross", "multi")
LEVEL = 0.05         # verdicts: significant at p < LEVEL
CONFIDENCE = 0.95    # bootstrap percentile intervals
REFERENCES = {"mono": "mono", "cross": "cross"}  # setting -> the condition hybrid is tested against


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


# ----------------------------------------------------------------------------- comparisons


def compare_conditions(a: list[Run], b: list[Run], dataset: str, setting: str,
                       languages: Sequence[str], high_resource: Sequence[str], key: str, *,
                       per_language: bool = True, n_bootstrap: int = 10_000, seed: int = 0,
                       resample_seeds: bool = False) -> list[dict]:
    """Rows of A - B on `setting` ('mono' or 'cross'): per question language (when
    `per_language`), and the macro over the high-resource and over all languages (seeds pooled,
    questions resampled as clusters)."""
    la = [r.tables(dataset, key) for r in a]
    lb = [r.tables(dataset, key) for r in b]
    kw = dict(n_resamples=n_bootstrap, seed=seed, resample_seeds=resample_seeds,
              confidence=CONFIDENCE)
    scopes = [(x, [x]) for x in languages] if per_language else []
    rows = []
    for scope, langs in scopes + [("macro_hr", high_resource), ("macro_all", languages)]:
        r = tables.scope_row(la, lb, setting, langs, **kw)
        if r:
            rows.append({"setting": setting, "scope": scope, "metric": key, **r})
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


def run_timing(r: Run, dataset: str, curve: dict[int, dict]) -> dict:
    """runs.run_info and the training curve's steps, losses and rate, and the evaluation's
    time."""
    steps = [s for s in sorted(curve) if "loss" in curve[s]]
    rates = [curve[s]["steps_per_sec"] for s in steps if "steps_per_sec" in curve[s]]
    return {**run_info(r), "steps": steps[-1] if steps else 0,
            "first_loss": curve[steps[0]]["loss"] if steps else None,
            "final_loss": curve[steps[-1]]["loss"] if steps else None,
            "steps_per_sec": float(np.mean(rates)) if rates else None,
            "eval_seconds": r.metrics(dataset).get("seconds")}


# ----------------------------------------------------------------------------- the analysis


@dataclasses.dataclass
class Analysis:
    dataset: str
    key: str                          # the metric, 'map@<k>'
    languages: list[str]              # evaluated question languages
    high_resource: list[str]          # the requested high-resource languages that were evaluated
    runs: list[Run]             # loaded
    groups: dict[str, list[Run]]
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
        return self.runs[0].metrics(self.dataset)["multi"]["micro"].get("n_queries")

    @property
    def total_wall_seconds(self) -> float:
        return sum(t["wall_seconds"] or 0.0 for t in self.timing.values())


def _load(runs: Sequence[Run], dataset: str, key: str,
          high_resource: Sequence[str]) -> tuple[list[Run], list[str], list[str]]:
    runs = list(runs)
    for r in runs:
        if r.metrics(dataset).get("type") != "lareqa":
            raise InputError(f"{r.folder(dataset) / 'metrics.json'}: not a LAReQA evaluation")
    languages = list(runs[0].metrics(dataset)["languages"])
    for r in runs:
        m = r.metrics(dataset)
        if list(m["languages"]) != languages:
            raise InputError(f"{r.run_dir}: evaluated on languages {m['languages']}, "
                             f"others on {languages}")
        if key not in m["mono"]["macro"]:
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


def _comparisons(groups, dataset, primary, languages, hr, key, **kw) -> tuple[dict, list]:
    answer: dict[str, list[dict]] = {}
    if primary:
        for setting, ref in REFERENCES.items():
            if ref in groups:
                answer[setting] = compare_conditions(groups[primary], groups[ref], dataset,
                                                     setting, languages, hr, key, **kw)
    per_lang = [r for s in answer.values() for r in s if r["scope"] in languages]
    paired.add_holm([r for r in per_lang if r["scope"] in hr], "p_holm")
    paired.add_holm(per_lang, "p_holm_all")
    sweep: list[dict] = []
    for cond in groups:
        if cond.startswith("hybrid-a") and cond != primary:
            for setting, ref in REFERENCES.items():
                if ref in groups:
                    for r in compare_conditions(groups[cond], groups[ref], dataset, setting,
                                                languages, hr, key, per_language=False, **kw):
                        sweep.append({"condition": cond, **r})
    return answer, sweep


def analyse(runs: Sequence[Run], *, dataset: str, k: int = 20,
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
    answer, sweep = _comparisons(groups, dataset, primary, languages, hr, key,
                                 n_bootstrap=n_bootstrap, seed=bootstrap_seed,
                                 resample_seeds=resample_seeds)
    curves = {r.name: read_curve(r.run_dir) for r in runs}
    return Analysis(dataset=dataset, key=key, languages=languages, high_resource=hr, runs=runs,
                    groups=groups, summary=summarize(groups, dataset, languages, hr,
                                      {s: (s, key) for s in SETTINGS + ("rank_distance",)}),
                    primary=primary, answer=answer, sweep=sweep, curves=curves,
                    timing={r.name: run_timing(r, dataset, curves[r.name]) for r in runs},
                    n_bootstrap=n_bootstrap, resample_seeds=resample_seeds,
                    missing=list(missing), config=config, model=model)
