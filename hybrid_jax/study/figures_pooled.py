"""The first edition's figures, drawn from its `Analysis` (pooled.py).

`files(a)` names the PNGs a report has (the report links exactly these), `draw(a, folder)` writes
them."""
from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

from hybrid_jax.evaluation import plots
from hybrid_jax.study.pooled import CONFIDENCE, SETTINGS, Analysis
from hybrid_jax.study.runs import label


def files(a: Analysis) -> dict[str, str]:
    """figure -> file name, for the figures this analysis has data for."""
    out = {"settings": "settings_by_language.png"}
    if a.answer:
        out["answer"] = "answer_differences.png"
    out["curves"] = "loss_curves.png"
    if len(set(a.alphas.values())) > 2 or a.sweep:
        out["alpha"] = "alpha_sweep.png"
    return out


def draw(a: Analysis, folder) -> dict[str, str]:
    folder = pathlib.Path(folder)
    names = files(a)
    plot_settings(a.summary, a.languages, a.high_resource, folder / names["settings"], a.key)
    if "answer" in names:
        primary = label(a.primary or "")
        titles = {"mono": f"{primary} - X-X-mono, monolingual retrieval",
                  "cross": f"{primary} - X-Y, cross-lingual retrieval"}
        plot_answer(a.answer, a.high_resource, titles, folder / names["answer"])
    plot_curves(a, folder / names["curves"])
    if "alpha" in names:
        plot_alpha(a.summary, a.alphas, folder / names["alpha"], a.key)
    return names


def _color(cond: str, i: int):
    fixed = {"zero-shot": "tab:gray", "mono": "tab:blue", "cross": "tab:orange"}
    return fixed.get(cond, ["tab:green", "tab:red", "tab:purple", "tab:brown", "tab:olive"][i % 5])


def _err(v) -> float:
    return v[1] if np.isfinite(v[1]) else 0.0


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
            ax.bar(x + (i - (len(conds) - 1) / 2) * width, [v[0] for v in vals], width,
                   yerr=[_err(v) for v in vals], capsize=2, label=label(cond),
                   color=_color(cond, i))
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
        ax.set_xlabel(f"difference in {rows[0]['metric']} ({CONFIDENCE:.0%} CI)")
        ax.set_title(titles[s], fontsize=10)
    fig.suptitle("hybrid minus reference, seeds pooled (red: high-resource)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(a: Analysis, path) -> None:
    """Left: training loss per run. Right: macro mAP per condition, the zero-shot row beside."""
    plt = plots._plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    styles = ["-", "--", ":", "-."]
    for i, (cond, runs) in enumerate(a.groups.items()):
        for j, r in enumerate(runs):
            curve = a.curves[r.name]
            steps = [s for s in sorted(curve) if "loss" in curve[s]]
            if steps:
                ax.plot(steps, [curve[s]["loss"] for s in steps], styles[j % 4],
                        color=_color(cond, i), label=f"{label(cond)} s{r.seed}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss (metrics.jsonl)")
    if ax.lines:
        ax.legend(fontsize=7)
    conds = list(a.summary)
    x = np.arange(len(SETTINGS))
    width = 0.8 / max(1, len(conds))
    for i, cond in enumerate(conds):
        vals = [a.summary[cond][s]["macro_all"] for s in SETTINGS]
        bx.bar(x + (i - (len(conds) - 1) / 2) * width, [v[0] for v in vals], width,
               yerr=[_err(v) for v in vals], capsize=2, label=label(cond),
               color=_color(cond, i))
    bx.set_xticks(x, [f"{s} (macro)" for s in SETTINGS])
    bx.set_ylim(0, 1)
    bx.set_ylabel(a.key)
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
                        yerr=[_err(v) for v in vals], fmt="o" + ls, color=color, capsize=3,
                        label=f"{setting} ({'all' if scope == 'macro_all' else 'high-resource'})")
    ax.set_xlabel("alpha (share of monolingual batches; 0 = X-Y, 1 = X-X-mono)")
    ax.set_ylabel(key)
    ax.legend(fontsize=7)
    ax.set_title("alpha sweep, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
