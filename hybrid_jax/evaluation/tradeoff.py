"""Issue 7's analysis: does hybrid training trade away accuracy on high-resource languages?

Input: finished runs (hybrid_jax/experiment.py), each a workdir with eval/<dataset>/metrics.json
and per_query.npz. Output: a markdown report with tables, PNG plots, copies of every run's
metrics.json and the comparison rows as JSON.

* Per condition (zero-shot, X-X-mono, X-Y, hybrid at each alpha): mono, cross and multi mAP@k per
  question language and macro over the high-resource languages and over all languages, and rank
  distance, as mean +- sample std over seeds. Per language: mono = X vs X's candidates; cross = X
  vs each other language's candidates, mean over the targets (metrics.json
  cross.per_query_language); multi = X vs the pooled candidates of all languages.
* The answer: hybrid - X-X-mono on mono retrieval and hybrid - X-Y on cross retrieval, per
  language: paired bootstrap over questions (a question and its translations resampled together),
  per-query scores averaged over seeds (hybrid_jax.compare / evaluation.stats), 95% percentile
  CI, two-sided bootstrap p, Holm-adjusted over the family of the high-resource tests of both
  comparisons (and separately over all languages' tests). Verdict at Holm p < 0.05.
* The paper's published numbers beside ours, labelled as theirs.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from typing import Optional, Sequence

import numpy as np

from hybrid_jax import compare
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import per_query, plots, stats
from hybrid_jax.evaluation.report import table

SETTINGS = ("mono", "cross", "multi")
LEVEL = 0.05

# arXiv 2408.10536 (hybrid batch training), XQuAD-R mAP and rank distance, as published: their
# models, their training data, their evaluation protocol -- not ours.
PAPER = {
    "XLM-R": {"mono": dict(mono=.792, cross=.674, multi=.547, rank_distance=410),
              "cross": dict(mono=.755, cross=.700, multi=.593, rank_distance=295),
              "hybrid": dict(mono=.798, cross=.705, multi=.593, rank_distance=287)},
    "LaBSE": {"mono": dict(mono=.808, cross=.752, multi=.652, rank_distance=262),
              "cross": dict(mono=.801, cross=.762, multi=.679, rank_distance=225),
              "hybrid": dict(mono=.817, cross=.767, multi=.682, rank_distance=221)},
}


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


def _ms(t) -> str:
    mean, std, n = t
    if not np.isfinite(mean):
        return "-"
    big = abs(mean) >= 10
    f = (lambda v: f"{v:.1f}") if big else (lambda v: f"{v:.3f}")
    return f"{f(mean)} ± {f(std)}" if n > 1 and np.isfinite(std) else f(mean)


# ----------------------------------------------------------------------------- comparisons


def _views(lang: str, setting: str, views: Sequence[str]) -> list[str]:
    if setting == "mono":
        return [f"mono/{lang}"] if f"mono/{lang}" in views else []
    return [v for v in views if v.startswith(f"cross/{lang}->")]


def compare_conditions(a: list[RunRecord], b: list[RunRecord], setting: str,
                       languages: Sequence[str], high_resource: Sequence[str], key: str, *,
                       per_language: bool = True, n_bootstrap: int = 10_000, seed: int = 0,
                       resample_seeds: bool = False) -> list[dict]:
    """Rows of A - B on `setting` ('mono' or 'cross'): per question language (when
    `per_language`), and the macro over the high-resource and over all languages. Uses
    hybrid_jax.compare's row builder (seeds pooled, questions resampled as clusters)."""
    la = [compare.per_question_scores(r.groups, key) for r in a]
    lb = [compare.per_question_scores(r.groups, key) for r in b]
    views = sorted(la[0])
    kw = dict(n_resamples=n_bootstrap, seed=seed, resample_seeds=resample_seeds)
    rows = []

    def add(scope, sel, stratify):
        if not sel:
            return
        r = compare.paired_row(la, lb, sel, stratify, **kw)
        if r:
            rows.append({"setting": setting, "scope": scope, "metric": key, **r})

    if per_language:
        for x in languages:
            add(x, _views(x, setting, views), "view" if setting == "cross" else None)
    add("macro_hr", [v for x in high_resource for v in _views(x, setting, views)], "view")
    add("macro_all", [v for x in languages for v in _views(x, setting, views)], "view")
    return rows


def verdict(row: dict, p_key: str = "p_holm") -> str:
    p = row.get(p_key, row["p_bootstrap"])
    if p is None or not np.isfinite(p) or p >= LEVEL:
        return "no significant difference"
    return "significant gain" if row["diff"] > 0 else "significant loss"


def add_holm(rows: Sequence[dict], key: str) -> None:
    for r, p in zip(rows, stats.holm([r["p_bootstrap"] for r in rows])):
        r[key] = float(p)


# ----------------------------------------------------------------------------- plots


def _color(cond: str, i: int):
    fixed = {"zero-shot": "tab:gray", "mono": "tab:blue", "cross": "tab:orange"}
    return fixed.get(cond, ["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:olive"][i % 5])


def plot_settings(summary: dict, languages: Sequence[str], high_resource: Sequence[str], path,
                  key: str) -> None:
    plt = plots._plt()
    conds = list(summary)
    fig, axes = plt.subplots(4, 1, figsize=(max(8.0, 2 + 0.9 * len(languages)), 12), sharex=True)
    x = np.arange(len(languages) + 2)
    names = list(languages) + ["macro HR", "macro all"]
    width = 0.8 / max(1, len(conds))
    for ax, setting in zip(axes, SETTINGS + ("rank_distance",)):
        for i, cond in enumerate(conds):
            row = summary[cond][setting]
            vals = [row[lg] for lg in languages] + [row["macro_hr"], row["macro_all"]]
            means = [v[0] for v in vals]
            errs = [v[1] if np.isfinite(v[1]) else 0.0 for v in vals]
            ax.bar(x + (i - (len(conds) - 1) / 2) * width, means, width, yerr=errs, capsize=2,
                   label=label(cond), color=_color(cond, i))
        ax.set_ylabel(key if setting != "rank_distance" else "rank distance (lower = better)")
        ax.set_title(setting if setting != "rank_distance" else "rank distance (multi)")
        if setting != "rank_distance":
            ax.set_ylim(0, 1)
    axes[0].legend(ncols=min(4, len(conds)), fontsize=8)
    axes[-1].set_xticks(x, [f"{n}*" if n in high_resource else n for n in names])
    fig.suptitle(f"{key} by question language, mean ± std over seeds (* high-resource)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_answer(rows_by_setting: dict[str, list[dict]], high_resource: Sequence[str],
                titles: dict[str, str], path) -> None:
    plt = plots._plt()
    settings = [s for s in rows_by_setting if rows_by_setting[s]]
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4.5), squeeze=False)
    for ax, s in zip(axes[0], settings):
        rows = rows_by_setting[s]
        y = np.arange(len(rows))[::-1]
        for yi, r in zip(y, rows):
            hr = r["scope"] in high_resource or r["scope"] == "macro_hr"
            ax.errorbar(r["diff"], yi, xerr=[[r["diff"] - r["ci_low"]], [r["ci_high"] - r["diff"]]],
                        fmt="o", color="tab:red" if hr else "tab:gray", capsize=3)
        ax.axvline(0, color="black", lw=1)
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        ax.set_yticks(y, [r["scope"].replace("macro_", "macro ") for r in rows])
        ax.set_xlabel("difference in " + rows[0]["metric"] + " (95% CI)")
        ax.set_title(titles[s], fontsize=10)
    fig.suptitle("hybrid minus reference, seeds pooled (red: high-resource)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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


def plot_curves(groups: dict[str, list[RunRecord]], summary: dict, path, key: str) -> None:
    """Left: training loss per run. Right: macro mAP per condition, the zero-shot row beside."""
    plt = plots._plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = ["-", "--", ":", "-."]
    for i, (cond, runs) in enumerate(groups.items()):
        for j, r in enumerate(runs):
            curve = read_curve(r.run_dir)
            steps = [s for s in sorted(curve) if "loss" in curve[s]]
            if steps:
                ax.plot(steps, [curve[s]["loss"] for s in steps], styles[j % 4],
                        color=_color(cond, i), label=f"{label(cond)} s{r.seed}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss (metrics.jsonl)")
    if ax.lines:
        ax.legend(fontsize=7)
    conds = list(summary)
    x = np.arange(len(SETTINGS))
    width = 0.8 / max(1, len(conds))
    for i, cond in enumerate(conds):
        vals = [summary[cond][s]["macro_all"] for s in SETTINGS]
        bx.bar(x + (i - (len(conds) - 1) / 2) * width, [v[0] for v in vals], width,
               yerr=[v[1] if np.isfinite(v[1]) else 0 for v in vals], capsize=2,
               label=label(cond), color=_color(cond, i))
    bx.set_xticks(x, [f"{s} (macro)" for s in SETTINGS])
    bx.set_ylim(0, 1)
    bx.set_ylabel(key)
    bx.set_title("after training vs the zero-shot starting model")
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_alpha(summary: dict, alphas: dict[str, float], path, key: str) -> None:
    plt = plots._plt()
    conds = sorted([c for c in summary if c in alphas], key=lambda c: alphas[c])
    fig, ax = plt.subplots(figsize=(6, 4))
    for setting, color in zip(SETTINGS, ("tab:blue", "tab:orange", "tab:green")):
        for scope, ls in (("macro_all", "-"), ("macro_hr", "--")):
            vals = [summary[c][setting][scope] for c in conds]
            ax.errorbar([alphas[c] for c in conds], [v[0] for v in vals],
                        yerr=[v[1] if np.isfinite(v[1]) else 0 for v in vals], fmt="o" + ls,
                        color=color, capsize=3,
                        label=f"{setting} ({'all' if scope == 'macro_all' else 'high-resource'})")
    ax.set_xlabel("alpha (share of monolingual batches; 0 = X-Y, 1 = X-X-mono)")
    ax.set_ylabel(key)
    ax.legend(fontsize=7)
    ax.set_title("alpha sweep, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- report


def _p(v) -> str:
    return "-" if v is None or not np.isfinite(v) else (f"{v:.4f}" if v >= 1e-4 else f"{v:.1e}")


def _ci(r) -> str:
    return f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"


def _timing(r: RunRecord) -> dict:
    path = pathlib.Path(r.run_dir) / "timing.json"
    t = json.loads(path.read_text()) if path.is_file() else {}
    curve = read_curve(r.run_dir)
    steps = [s for s in sorted(curve) if "loss" in curve[s]]
    rates = [curve[s]["steps_per_sec"] for s in steps if "steps_per_sec" in curve[s]]
    return {"wall_seconds": t.get("wall_seconds"), "sessions": len(t.get("sessions", [])),
            "steps": steps[-1] if steps else 0,
            "first_loss": curve[steps[0]]["loss"] if steps else None,
            "final_loss": curve[steps[-1]]["loss"] if steps else None,
            "steps_per_sec": float(np.mean(rates)) if rates else None,
            "eval_seconds": r.metrics.get("seconds")}


def _fmt_s(s) -> str:
    if s is None:
        return "-"
    m, sec = divmod(int(round(s)), 60)
    return f"{m}m{sec:02d}s" if m else f"{sec}s"


def _how_it_was_run(runs, config: Optional[dict]) -> list[str]:
    """The budget (from the experiment's config), the grid's total wall time, and what a larger
    accelerator run would change."""
    total = sum(_timing(r)["wall_seconds"] or 0.0 for r in runs)
    lines = ["## How it was run", ""]
    if config:
        t, d, o, e = (config.get(s, {}) for s in ("train", "data", "optim", "eval"))
        lines.append(
            f"Every trained run: {t.get('num_steps')} steps of global batch "
            f"{d.get('global_batch_size')} ({d.get('global_batch_size', 1) - 1} in-batch "
            f"negatives per query), queries cut at {d.get('query_max_length')} and passages at "
            f"{d.get('passage_max_length')} tokens, AdamW lr {o.get('learning_rate')} "
            f"(warm-up {o.get('warmup_steps')}, {o.get('schedule')} decay), weight decay "
            f"{o.get('weight_decay')}, word-embedding table "
            f"{'frozen' if o.get('freeze_word_embeddings') else 'trained'}, model "
            f"`{config.get('model', {}).get('spec')}`; evaluation encodes up to "
            f"{e.get('max_length')} tokens with {e.get('search')} search.")
    lines += ["", f"Total wall time of these {len(runs)} runs (training, evaluation, model "
              f"loading and compilation, every session): **{total / 3600:.2f} h** "
              f"({_fmt_s(total)}).", "",
              "A GPU/TPU run (configs/xlmr_base.py, configs/labse.py: batch 100, passages up to "
              "128 tokens, bfloat16 matmuls, the paper's learning rate, `hf:` weights) changes "
              "three things this CPU budget cannot: 99 instead of 15 in-batch negatives per "
              "query (a harder contrastive task, closer to the paper), untruncated answer "
              "sentences, and many more steps. The same driver runs it: "
              "`--config.model.spec=hf:<dir> --config.data.global_batch_size=100 ...` on "
              "configs/tradeoff.py; the comparison and its statistics are unchanged.", ""]
    return lines


def write_report(runs: Sequence[RunRecord], *, dataset: str, out_dir,
                 report_name: str = "tradeoff.md",
                 k: int = 20, high_resource: Sequence[str] = ("en", "de", "es", "ru", "zh"),
                 primary_alpha: float = 0.5, n_bootstrap: int = 10_000, bootstrap_seed: int = 0,
                 resample_seeds: bool = False, missing: Sequence[str] = (),
                 config: Optional[dict] = None, model: str = "") -> pathlib.Path:
    """Writes out_dir/report_name and out_dir/<stem>/ (PNGs, metrics/<run>.json,
    comparisons.json, summary.json). Returns the report's path."""
    out_dir = pathlib.Path(out_dir)
    stem = pathlib.Path(report_name).stem
    final_assets = out_dir / stem
    # Built beside the old report and swapped in at the end: a failure leaves the old one whole.
    assets = out_dir / f".{stem}.tmp"
    if assets.exists():
        shutil.rmtree(assets)
    runs = [r.load(dataset) for r in runs]
    key = f"map@{k}"
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
    (assets / "metrics").mkdir(parents=True)
    for r in runs:
        shutil.copy(pathlib.Path(r.run_dir) / "eval" / dataset / "metrics.json",
                    assets / "metrics" / f"{r.name}.json")
    groups = by_condition(runs)
    summary = summarize(groups, languages, hr, key)
    primary = f"hybrid-a{primary_alpha:g}"
    if primary not in groups:
        hybrids = [c for c in groups if c.startswith("hybrid-a")]
        primary = hybrids[0] if hybrids else None
    kw = dict(n_bootstrap=n_bootstrap, seed=bootstrap_seed, resample_seeds=resample_seeds)

    # -- the comparisons
    answer: dict[str, list[dict]] = {}
    refs = {"mono": "mono", "cross": "cross"}  # setting -> reference condition
    if primary:
        for setting, ref in refs.items():
            if ref in groups:
                answer[setting] = compare_conditions(groups[primary], groups[ref], setting,
                                                     languages, hr, key, **kw)
    per_lang = [r for s in answer.values() for r in s if r["scope"] in languages]
    add_holm([r for r in per_lang if r["scope"] in hr], "p_holm")        # the question's family
    add_holm(per_lang, "p_holm_all")                                     # all languages' family
    sweep: list[dict] = []
    for cond in groups:
        if cond.startswith("hybrid-a") and cond != primary:
            for setting, ref in refs.items():
                if ref in groups:
                    for r in compare_conditions(groups[cond], groups[ref], setting, languages,
                                                hr, key, per_language=False, **kw):
                        sweep.append({"condition": cond, **r})

    # -- plots
    pngs = {}
    plot_settings(summary, languages, hr, assets / "settings_by_language.png", key)
    pngs["settings"] = "settings_by_language.png"
    titles = {"mono": f"{label(primary or '')} - X-X-mono, monolingual retrieval",
              "cross": f"{label(primary or '')} - X-Y, cross-lingual retrieval"}
    if answer:
        plot_answer(answer, hr, titles, assets / "answer_differences.png")
        pngs["answer"] = "answer_differences.png"
    plot_curves(groups, summary, assets / "loss_curves.png", key)
    pngs["curves"] = "loss_curves.png"
    alphas = {c: runs_[0].alpha for c, runs_ in groups.items() if runs_[0].alpha is not None}
    if len(set(alphas.values())) > 2 or sweep:
        plot_alpha(summary, alphas, assets / "alpha_sweep.png", key)
        pngs["alpha"] = "alpha_sweep.png"

    # -- JSON next to the report
    (assets / "comparisons.json").write_text(json.dumps(
        {"answer": answer, "alpha_sweep": sweep}, indent=1))
    (assets / "summary.json").write_text(json.dumps(
        {c: {s: {x: dict(zip(("mean", "std", "n_seeds"), v)) for x, v in row.items()}
             for s, row in d.items()} for c, d in summary.items()}, indent=1,
        default=lambda v: None))
    if config is not None:
        (assets / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))

    # -- markdown
    link = lambda f: f"{stem}/{f}"  # noqa: E731
    seeds = sorted({r.seed for r in runs if r.seed is not None})
    L = ["# Does hybrid training trade away accuracy on high-resource languages?", "",
         f"Dataset `{dataset}` ({len(languages)} languages: {', '.join(languages)}; "
         f"{runs[0].metrics['multi']['micro'].get('n_queries')} questions in the multi setting). "
         f"Metric {key} (LAReQA, docs/evaluation.md). High-resource languages: "
         f"{', '.join(hr)}. Conditions: {', '.join(label(c) for c in groups)}; seeds "
         f"{', '.join(map(str, seeds)) or '-'}; every trained run starts from the same model "
         f"as the zero-shot row.", ""]
    if missing:
        L += [f"**Partial grid**: {len(missing)} planned run(s) not finished yet "
              f"({', '.join(missing)}); the numbers below use the finished runs only.", ""]

    # The answer
    L += ["## The answer", ""]
    if not answer:
        L += ["Not available yet: it needs a hybrid condition and its X-X-mono / X-Y "
              "references.", ""]
    else:
        how = ("seeds also resampled" if resample_seeds else
               "per-query scores averaged over seeds")
        L += [f"{label(primary)} minus the reference, per high-resource question language. "
              f"Paired bootstrap over questions ({n_bootstrap} resamples; a question and its "
              f"translations move together; {how}), 95% percentile interval, two-sided p "
              f"Holm-adjusted over the {len([r for r in per_lang if r['scope'] in hr])} "
              f"high-resource tests of both comparisons. Verdict at Holm p < {LEVEL}. Cross = "
              f"questions in the language against each other language's candidates (macro over "
              f"targets).", ""]
        rows = []
        for setting, ref in (("mono", "X-X-mono"), ("cross", "X-Y")):
            for r in answer.get(setting, []):
                if r["scope"] in hr:
                    rows.append([r["scope"], f"{setting}: vs {ref}", f"{r['mean_a']:.4f}",
                                 f"{r['mean_b']:.4f}", f"{r['diff']:+.4f}", _ci(r),
                                 _p(r["p_bootstrap"]), _p(r.get("p_holm")), verdict(r)])
            for r in answer.get(setting, []):
                if r["scope"] in ("macro_hr", "macro_all"):
                    rows.append([r["scope"].replace("macro_hr", "macro (high-resource)").replace(
                        "macro_all", "macro (all)"), f"{setting}: vs {ref}",
                        f"{r['mean_a']:.4f}", f"{r['mean_b']:.4f}", f"{r['diff']:+.4f}", _ci(r),
                        _p(r["p_bootstrap"]), "(not in family)", verdict(r, "p_bootstrap")])
        L += [table(["language", "comparison", "hybrid", "reference", "difference", "95% CI",
                     "p", "p Holm", "verdict"], rows), ""]
        L += ["In words:", ""]
        for setting, what, ref in (("mono", "monolingual", "X-X-mono"),
                                   ("cross", "cross-lingual", "X-Y")):
            for r in answer.get(setting, []):
                if r["scope"] in hr:
                    L.append(f"- **{r['scope']}**, {what} retrieval: {label(primary)} scores "
                             f"{abs(r['diff']):.4f} {'higher' if r['diff'] > 0 else 'lower'} than "
                             f"{ref} (95% CI {_ci(r)}, Holm p = {_p(r.get('p_holm'))}): "
                             f"**{verdict(r)}**.")
        if not resample_seeds:
            L += ["", f"The intervals reflect question sampling given these {len(seeds)} "
                  "seed(s) (per-query scores averaged over seeds); seed-to-seed variation is "
                  "not in them (experiment.resample_seeds=True puts it in): compare with the "
                  "± std columns below."]
        if len(seeds) < 3:
            L += ["", f"Caution: only {len(seeds)} seed(s)."]
        L += ["", f"![differences]({link(pngs['answer'])})", ""]
        L += ["### Every language", "",
              "The same comparisons for all languages (Holm over all "
              f"{len(per_lang)} per-language tests).", ""]
        rows = [[r["scope"] + ("*" if r["scope"] in hr else ""), s, f"{r['diff']:+.4f}", _ci(r),
                 _p(r["p_bootstrap"]), _p(r.get("p_holm_all")), verdict(r, "p_holm_all")]
                for s, rs in answer.items() for r in rs if r["scope"] in languages]
        L += [table(["language", "setting", "hybrid - reference", "95% CI", "p", "p Holm (all)",
                     "verdict"], rows), ""]

    # Summary tables
    L += ["## Results by condition", "",
          f"Mean ± sample std over seeds (zero-shot: one evaluation). Macro (HR) = mean over "
          f"{', '.join(hr)}; macro (all) = over all {len(languages)} languages. Rank distance: "
          f"multi setting, lower = less language bias.", ""]
    rows = []
    for cond, d in summary.items():
        rows.append([label(cond), len(groups[cond])]
                    + [_ms(d[s][scope]) for s in SETTINGS for scope in ("macro_hr", "macro_all")]
                    + [_ms(d["rank_distance"]["macro_all"])])
    L += [table(["condition", "seeds", "mono HR", "mono all", "cross HR", "cross all",
                 "multi HR", "multi all", "rank distance"], rows), ""]
    for setting in SETTINGS + ("rank_distance",):
        title = f"{key}, {setting}" if setting != "rank_distance" else "rank distance (multi)"
        L += [f"### {title} per question language", ""]
        rows = [[x + ("*" if x in hr else "")] + [_ms(summary[c][setting][x]) for c in summary]
                for x in languages]
        L += [table(["language"] + [label(c) for c in summary], rows), ""]
    L += [f"![settings]({link(pngs['settings'])})", ""]

    if sweep:
        L += ["## Alpha sweep", "", "Each hybrid alpha minus the reference on macro scores "
              "(raw bootstrap p, not corrected). alpha = 1 is the X-X-mono run, alpha = 0 the "
              "X-Y run.", ""]
        rows = [[label(r["condition"]), f"{r['setting']} vs "
                 f"{'X-X-mono' if r['setting'] == 'mono' else 'X-Y'}",
                 "high-resource" if r["scope"] == "macro_hr" else "all",
                 f"{r['diff']:+.4f}", _ci(r),
                 _p(r["p_bootstrap"])] for r in sweep]
        L += [table(["condition", "comparison", "languages", "difference", "95% CI", "p"],
                    rows), ""]
    if "alpha" in pngs:
        L += [f"![alpha]({link(pngs['alpha'])})", ""]

    # Paper
    L += ["## Published numbers (theirs, not ours)", "",
          "arXiv 2408.10536, XQuAD-R mAP as published: **their** models (XLM-R, LaBSE), training "
          "data, batch size 100 on an A100, and evaluation protocol. Our runs use a different "
          f"model ({model or 'see config.json'}), a CPU-sized step budget, and only the "
          "held-out test articles. Compare directions of differences, not absolute values.", ""]
    rows = []
    for theirs, d in PAPER.items():  # not `model`: that names our model below
        for cond in ("mono", "cross", "hybrid"):
            v = d[cond]
            rows.append([f"paper: {theirs}", label(cond if cond != "hybrid" else "hybrid-a0.5"),
                         f"{v['mono']:.3f}", f"{v['cross']:.3f}", f"{v['multi']:.3f}",
                         str(v["rank_distance"])])
    for cond, d in summary.items():
        rows.append([f"ours: {model} ({dataset})", label(cond)]
                    + [_ms(d[s]["macro_all"]) for s in SETTINGS]
                    + [_ms(d["rank_distance"]["macro_all"])])
    L += [table(["source", "condition", "mono", "cross", "multi", "rank distance"], rows), ""]
    deltas = []
    for theirs, d in PAPER.items():
        deltas.append([f"paper: {theirs}", f"{d['hybrid']['mono'] - d['mono']['mono']:+.3f}",
                       f"{d['hybrid']['cross'] - d['cross']['cross']:+.3f}", "none given"])
    mono_all = next((r for r in answer.get("mono", []) if r["scope"] == "macro_all"), None)
    cross_all = next((r for r in answer.get("cross", []) if r["scope"] == "macro_all"), None)
    if mono_all or cross_all:
        deltas.append(["ours (macro, all languages)",
                       f"{mono_all['diff']:+.3f} {_ci(mono_all)}" if mono_all else "-",
                       f"{cross_all['diff']:+.3f} {_ci(cross_all)}" if cross_all else "-",
                       "bootstrap 95% CI"])
    L += [table(["source", "hybrid - X-X-mono (mono)", "hybrid - X-Y (cross)", "uncertainty"],
                deltas), ""]

    L += _how_it_was_run(runs, config)

    # Runs
    L += ["## Runs", "", "Wall time from each run's timing.json (all invocations, including "
          "model loading, compilation and the final evaluation); steps/s is the training "
          "rate logged in metrics.jsonl.", ""]
    rows = []
    for cond, rs in groups.items():
        for r in rs:
            t = _timing(r)
            rows.append([r.name, label(cond), "-" if r.seed is None else r.seed, t["steps"],
                         "-" if t["first_loss"] is None else f"{t['first_loss']:.3f}",
                         "-" if t["final_loss"] is None else f"{t['final_loss']:.3f}",
                         "-" if t["steps_per_sec"] is None else f"{t['steps_per_sec']:.2f}",
                         _fmt_s(t["eval_seconds"]), _fmt_s(t["wall_seconds"]), t["sessions"],
                         f"[metrics.json]({link('metrics/' + r.name + '.json')})"])
    L += [table(["run", "condition", "seed", "steps", "first loss", "final loss", "steps/s",
                 "eval", "wall time", "sessions", "metrics"], rows), "",
          f"![curves]({link(pngs['curves'])})", "",
          f"Machine-readable: [comparisons.json]({link('comparisons.json')}), "
          f"[summary.json]({link('summary.json')})"
          + (f", [config.json]({link('config.json')})" if config is not None else "") + ".", ""]
    path = out_dir / report_name
    tmp = out_dir / f".{report_name}.tmp"
    tmp.write_text("\n".join(L), encoding="utf-8")
    if final_assets.exists():
        shutil.rmtree(final_assets)
    os.replace(assets, final_assets)
    os.replace(tmp, path)
    return path


def publish(out_dir, report_name: str, dest) -> pathlib.Path:
    """Copies out_dir/report_name and out_dir/<stem>/ into dest (replacing an older copy)."""
    out_dir, dest = pathlib.Path(out_dir), pathlib.Path(dest)
    src = out_dir / report_name
    if not src.is_file():
        raise InputError(f"{src}: no report to publish")
    stem = pathlib.Path(report_name).stem
    dest.mkdir(parents=True, exist_ok=True)
    if (dest / stem).exists():
        shutil.rmtree(dest / stem)
    shutil.copytree(out_dir / stem, dest / stem)
    shutil.copy(src, dest / report_name)
    return dest / report_name
