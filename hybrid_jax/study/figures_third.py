"""The third edition's figures, drawn from third.analyse()'s output.

`files(a)` names the PNGs the report links (exactly those), `draw(a, folder)` writes them:
answer.png (the primary endpoint, S1 and S2 with their intervals), dose_response.png (the macro
per alpha with the fitted slope), arms.png (the primary difference along steps, data fraction
and start)."""
from __future__ import annotations

import pathlib

import numpy as np

from hybrid_jax.evaluation import plots


def files(a: dict) -> dict[str, str]:
    out = {}
    if a["primary"] is not None:
        out["answer"] = "answer.png"
    if a["dose"]["rows"]:
        out["dose"] = "dose_response.png"
    if any("diff" in r for r in a["arms"]):
        out["arms"] = "arms.png"
    return out


def draw(a: dict, folder) -> dict[str, str]:
    folder = pathlib.Path(folder)
    names = files(a)
    drawers = {"answer": plot_answer, "dose": plot_dose, "arms": plot_arms}
    for what, name in names.items():
        drawers[what](a, folder / name)
    return names


def _forest(ax, rows: list[dict], labels: list[str], delta: float, title: str) -> None:
    y = np.arange(len(rows))
    d = np.array([r["diff"] for r in rows])
    err = np.array([[r["diff"] - r["ci_low"] for r in rows], [r["ci_high"] - r["diff"]
                                                             for r in rows]])
    ax.axvspan(-delta, delta, color="tab:green", alpha=0.12, label=f"±delta = {delta:g}")
    ax.axvline(0, color="black", lw=0.8)
    ax.errorbar(d, y, xerr=err, fmt="o", color="tab:blue", capsize=3, label="95% interval")
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("hybrid - X-X-mono, mono mAP@20")
    ax.legend(fontsize=7, loc="lower right")


def plot_answer(a: dict, path) -> None:
    """The primary (macro) and S1 rows on the primary benchmark; S2's rows beside when B ran."""
    plt = plots._plt()
    panels = [(a["dataset"], [a["primary"]] + a["S1"])]
    if a["S2"] and a["S2"]["rows"]:
        panels.append((a["S2"]["dataset"], a["S2"]["rows"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 3.8), squeeze=False)
    for ax, (ds, rows) in zip(axes[0], panels):
        _forest(ax, rows, [f"{r['scope']}: {r['verdict']}" for r in rows], a["delta"], ds)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_dose(a: dict, path) -> None:
    """Per metric: the macro at each alpha (mean over the seeds) and the fitted line."""
    plt = plots._plt()
    rows = a["dose"]["rows"]
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 3.4), squeeze=False)
    for ax, r in zip(axes[0], rows):
        x = np.array(r["doses"])
        ax.plot(x, r["dose_means"], "o", color="tab:blue", label="mean over seeds")
        ax.plot(x, r["intercept"] + r["slope"] * x, "-", color="tab:orange",
                label=f"slope {r['slope']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]")
        ax.set_title(r["metric"] + (" (lower = less bias)" if not r["higher_is_better"] else ""),
                     fontsize=9)
        ax.set_xlabel("alpha (0 = X-Y, 1 = X-X-mono)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_arms(a: dict, path) -> None:
    """The primary difference with its interval along each axis that has a finished point."""
    plt = plots._plt()
    axes_with = [ax for ax in ("budget", "fraction", "start")
                 if any("diff" in r and r["axis"] == ax for r in a["arms"])]
    fig, axes = plt.subplots(1, len(axes_with), figsize=(4.2 * len(axes_with), 3.6),
                             squeeze=False)
    for ax, axis in zip(axes[0], axes_with):
        pts = [r for r in a["arms"] if r["axis"] == axis and "diff" in r]
        x = np.arange(len(pts)) if axis == "start" else np.array([r["x"] for r in pts], float)
        ax.axhspan(-a["delta"], a["delta"], color="tab:green", alpha=0.12,
                   label=f"±delta = {a['delta']:g}")
        ax.axhline(0, color="black", lw=0.8)
        ax.errorbar(x, [r["diff"] for r in pts],
                    yerr=[[r["diff"] - r["ci_low"] for r in pts],
                          [r["ci_high"] - r["diff"] for r in pts]],
                    fmt="o-" if axis != "start" else "o", capsize=3, color="tab:blue")
        if axis == "budget":   # budgets grow by factors: equal factors, equal distances
            ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(r["x"]) if axis == "start" else f"{r['x']:g}" for r in pts])
        ax.minorticks_off()
        ax.set_xlabel({"budget": "training steps", "fraction": "share of training questions",
                       "start": "starting model"}[axis])
        ax.set_ylabel("hybrid - X-X-mono, mono mAP@20")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
