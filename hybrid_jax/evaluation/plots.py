"""PNG plots of a LAReQA evaluation (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import pathlib

import numpy as np


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def language_heatmap(metrics: dict, path, metric: str) -> None:
    """Query language (rows) x candidate language (columns); the diagonal is the mono setting."""
    plt = _plt()
    langs = metrics["languages"]
    mat = np.full((len(langs), len(langs)), np.nan)
    for i, x in enumerate(langs):
        for j, y in enumerate(langs):
            e = metrics["mono"]["per_language"].get(x) if x == y \
                else metrics["cross"]["pairs"].get(f"{x}->{y}")
            if e and metric in e:
                mat[i, j] = e[metric]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(langs), 0.8 + 0.55 * len(langs)))
    im = ax.imshow(mat, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(langs)), langs)
    ax.set_yticks(range(len(langs)), langs)
    ax.set_xlabel("candidate language")
    ax.set_ylabel("question language")
    for i in range(len(langs)):
        for j in range(len(langs)):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if mat[i, j] < 0.6 else "black")
    fig.colorbar(im, ax=ax, label=metric)
    ax.set_title(f"{metric}: question x candidate language")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def settings_bars(metrics: dict, path, metric: str) -> None:
    """Per question language: mono, cross (mean over candidate languages) and multi."""
    plt = _plt()
    langs = metrics["languages"]
    series = {
        "mono": metrics["mono"]["per_language"],
        "cross": metrics["cross"]["per_query_language"],
        "multi": metrics["multi"]["per_language"],
    }
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * len(langs), 3.5))
    x = np.arange(len(langs))
    for i, (name, per) in enumerate(series.items()):
        vals = [per.get(lang, {}).get(metric, np.nan) for lang in langs]
        ax.bar(x + (i - 1) * width, vals, width, label=name)
    ax.set_xticks(x, langs)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.legend(ncols=3, fontsize=8)
    ax.set_title(f"{metric} per question language and setting")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rank_distance_bars(metrics: dict, path) -> None:
    plt = _plt()
    per = metrics["rank_distance"]["per_language"]
    langs = list(per)
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * max(1, len(langs)), 3.2))
    ax.bar(langs, [per[lang]["rank_distance"] for lang in langs], color="tab:red")
    macro = metrics["rank_distance"]["macro"]
    if macro is not None:
        ax.axhline(macro, color="black", lw=1, ls="--", label=f"macro {macro:.1f}")
        ax.legend(fontsize=8)
    ax.set_ylabel("rank distance (lower = less bias)")
    ax.set_title("language bias in the multi setting")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lareqa_plots(metrics: dict, directory, metric: str) -> list[pathlib.Path]:
    d = pathlib.Path(directory)
    paths = [d / "heatmap_language_pairs.png", d / "settings_by_language.png",
             d / "rank_distance.png"]
    language_heatmap(metrics, paths[0], metric)
    settings_bars(metrics, paths[1], metric)
    rank_distance_bars(metrics, paths[2])
    return paths
