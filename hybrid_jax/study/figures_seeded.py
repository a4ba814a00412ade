"""The second edition's figures, drawn from seeded.analyse()'s output.

`files(a)` names the PNGs the report links (exactly those), `draw(a, folder)` writes them."""
from __future__ import annotations

import pathlib

import numpy as np

from hybrid_jax.evaluation import plots

REFERENCE_LABEL = {"mono": "X-X-mono", "cross": "X-Y"}


def files(a: dict) -> dict[str, str]:
    out = {}
    for ds, b in a["benchmarks"].items():
        if any(rows for name, rows in b["families"].items() if name != "S3"):
            out[f"answer:{ds}"] = f"answer_{ds}.png"
        if b["curves"]:
            out[f"curves:{ds}"] = f"budget_curves_{ds}.png"
    if len(a.get("sweep") or ()) > 2:
        out["sweep"] = "alpha_sweep.png"
    return out


def draw(a: dict, folder) -> dict[str, str]:
    folder = pathlib.Path(folder)
    names = files(a)
    for what, name in names.items():
        kind, _, ds = what.partition(":")
        if kind == "answer":
            plot_answer(a["benchmarks"][ds], a["delta"], ds, folder / name)
        elif kind == "curves":
            plot_curves(a["benchmarks"][ds], a["delta"], ds, folder / name)
        else:
            plot_sweep(a["sweep"], a["key"], folder / name)
    return names


def plot_answer(b: dict, delta: float, ds: str, path) -> None:
    """Per family (hybrid - X-X-mono on mono, hybrid - X-Y on cross): each high-resource
    language's difference with its 95% interval, the +-delta band shaded."""
    plt = plots._plt()
    fams = [(n, rows) for n, rows in b["families"].items() if n != "S3" and rows]
    fig, axes = plt.subplots(1, len(fams), figsize=(5.5 * len(fams), 3.8), squeeze=False)
    for ax, (name, rows) in zip(axes[0], fams):
        y = np.arange(len(rows))
        d = np.array([r["diff"] for r in rows])
        err = np.array([[r["diff"] - r["ci_low"] for r in rows],
                        [r["ci_high"] - r["diff"] for r in rows]])
        ax.axvspan(-delta, delta, color="tab:green", alpha=0.12, label=f"±delta = {delta:g}")
        ax.axvline(0, color="black", lw=0.8)
        ax.errorbar(d, y, xerr=err, fmt="o", color="tab:blue", capsize=3, label="95% interval")
        ax.set_yticks(y, [f"{r['scope']}: {r['verdict']}" for r in rows], fontsize=7)
        ax.invert_yaxis()
        ref = REFERENCE_LABEL.get(rows[0]["b"], rows[0]["b"])
        ax.set_title(f"{ds} [{name}]: hybrid - {ref}, {rows[0]['setting']} {rows[0]['metric']}",
                     fontsize=9)
        ax.set_xlabel("difference (seeds and questions resampled)")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(b: dict, delta: float, ds: str, path) -> None:
    """hybrid - reference against the step: the macro over the high-resource languages with its
    95% interval, each language as a thin line."""
    plt = plots._plt()
    refs = [r for r in ("mono", "cross") if any(c["b"] == r for c in b["curves"])]
    fig, axes = plt.subplots(1, len(refs), figsize=(6 * len(refs), 4), squeeze=False)
    for ax, ref in zip(axes[0], refs):
        rows = [c for c in b["curves"] if c["b"] == ref]
        ax.axhspan(-delta, delta, color="tab:green", alpha=0.12, label=f"±delta = {delta:g}")
        ax.axhline(0, color="black", lw=0.8)
        for lang in b["high_resource"]:
            pts = sorted((c["step"], c["diff"]) for c in rows if c["scope"] == lang)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=0.8, alpha=0.7, label=lang)
        macro = sorted((c for c in rows if c["scope"] == "macro"), key=lambda c: c["step"])
        ax.errorbar([c["step"] for c in macro], [c["diff"] for c in macro],
                    yerr=[[c["diff"] - c["ci_low"] for c in macro],
                          [c["ci_high"] - c["diff"] for c in macro]],
                    fmt="o-", color="black", lw=2, capsize=3, label="macro HR, 95% interval")
        setting = rows[0]["setting"]
        ax.set_title(f"{ds}: hybrid - {REFERENCE_LABEL[ref]}, {setting} {rows[0]['metric']}",
                     fontsize=9)
        ax.set_xlabel("training step (checkpoints of one schedule)")
        ax.set_ylabel("difference")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sweep(rows: list[dict], key: str, path) -> None:
    """Macro (high-resource) mono / cross / multi and rank distance against alpha, mean +- std
    over seeds."""
    plt = plots._plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    alphas = [r["alpha"] for r in rows]
    for setting, color in zip(("mono", "cross", "multi"), ("tab:blue", "tab:orange",
                                                           "tab:green")):
        ax.errorbar(alphas, [r[setting] for r in rows],
                    yerr=[r[f"{setting}_std"] or 0.0 for r in rows], fmt="o-", color=color,
                    capsize=3, label=setting)
    ax.set_ylabel(f"{key}, macro over the high-resource languages")
    bx.errorbar(alphas, [r["rank_distance"] for r in rows],
                yerr=[r["rank_distance_std"] or 0.0 for r in rows], fmt="o-", color="tab:red",
                capsize=3)
    bx.set_ylabel("rank distance (macro, lower = less language bias)")
    for x in (ax, bx):
        x.set_xlabel("alpha (share of monolingual batches; 0 = X-Y, 1 = X-X-mono)")
    ax.legend(fontsize=8)
    ax.set_title("alpha sweep, mean ± std over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
