"""Does hybrid training trade away accuracy on high-resource languages? The report.

Input: finished runs (hybrid_jax/experiment.py), each a workdir with eval/<dataset>/metrics.json
and per_query.npz. Output: a markdown report with tables, PNG plots, copies of every run's
metrics.json and the comparison rows as JSON.

The work is split in three steps: tradeoff_analysis.analyse (load, summarise, test; returns an
`Analysis`), tradeoff_plots.draw (the figures) and tradeoff_report.render (the markdown, one
function per section). This module writes their output to disk, atomically, and publishes it.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Optional, Sequence

from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import tradeoff_plots, tradeoff_report
from hybrid_jax.evaluation.tradeoff_analysis import (Analysis, RunRecord, analyse, label,
                                                     verdict)

__all__ = ["Analysis", "RunRecord", "analyse", "label", "publish", "verdict", "write_report"]


def _write_data(a: Analysis, folder: pathlib.Path) -> None:
    """metrics/<run>.json (copies of the raw metrics), comparisons.json, summary.json and
    config.json."""
    (folder / "metrics").mkdir(parents=True)
    for r in a.runs:
        shutil.copy(pathlib.Path(r.run_dir) / "eval" / a.dataset / "metrics.json",
                    folder / "metrics" / f"{r.name}.json")
    (folder / "comparisons.json").write_text(json.dumps(
        {"answer": a.answer, "alpha_sweep": a.sweep}, indent=1))
    (folder / "summary.json").write_text(json.dumps(
        {c: {s: {x: dict(zip(("mean", "std", "n_seeds"), v)) for x, v in row.items()}
             for s, row in d.items()} for c, d in a.summary.items()}, indent=1,
        default=lambda v: None))
    if a.config is not None:
        (folder / "config.json").write_text(json.dumps(a.config, indent=1, sort_keys=True))


def write_report(runs: Sequence[RunRecord], *, dataset: str, out_dir,
                 report_name: str = "tradeoff.md",
                 k: int = 20, high_resource: Sequence[str] = ("en", "de", "es", "ru", "zh"),
                 primary_alpha: float = 0.5, n_bootstrap: int = 10_000, bootstrap_seed: int = 0,
                 resample_seeds: bool = False, missing: Sequence[str] = (),
                 config: Optional[dict] = None, model: str = "") -> pathlib.Path:
    """Writes out_dir/report_name and out_dir/<stem>/ (PNGs, metrics/<run>.json,
    comparisons.json, summary.json, config.json). Returns the report's path."""
    out_dir = pathlib.Path(out_dir)
    stem = pathlib.Path(report_name).stem
    final_assets = out_dir / stem
    # Built beside the old report and swapped in at the end: a failure leaves the old one whole.
    assets = out_dir / f".{stem}.tmp"
    if assets.exists():
        shutil.rmtree(assets)
    a = analyse(runs, dataset=dataset, k=k, high_resource=high_resource,
                primary_alpha=primary_alpha, n_bootstrap=n_bootstrap,
                bootstrap_seed=bootstrap_seed, resample_seeds=resample_seeds, missing=missing,
                config=config, model=model)
    _write_data(a, assets)
    tradeoff_plots.draw(a, assets)
    path = out_dir / report_name
    tmp = out_dir / f".{report_name}.tmp"
    tmp.write_text(tradeoff_report.render(a, stem), encoding="utf-8")
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
