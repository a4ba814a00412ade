"""The second edition's report: analysis (tradeoff2_analysis), figures (tradeoff2_plots) and
markdown (tradeoff2_report) written to disk atomically, beside the analysis as JSON.

Output: out_dir/<report_name> and out_dir/<stem>/ (PNGs, analysis.json)."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
from typing import Optional, Sequence

from hybrid_jax import code_version
from hybrid_jax.evaluation import tradeoff2_plots, tradeoff2_report
from hybrid_jax.evaluation.tradeoff2_analysis import Run, analyse


def run_info(r: Run) -> dict:
    path = pathlib.Path(r.run_dir) / "timing.json"
    t = json.loads(path.read_text()) if path.is_file() else {}
    versions = code_version.recorded(pathlib.Path(r.run_dir))
    return {"name": r.name, "condition": r.condition, "seed": r.seed,
            "wall_seconds": t.get("wall_seconds"), "sessions": len(t.get("sessions", [])),
            "code": " then ".join(code_version.label(v) for v in versions) or "unrecorded"}


def write_report(runs: Sequence[Run], *, benchmarks: Sequence[str], out_dir, planned: int,
                 report_name: str = "tradeoff.md", presentation: Optional[dict] = None,
                 **analysis_kw) -> pathlib.Path:
    """`presentation`: tradeoff2_report.render's title, see_also, deviations, machine and
    cpu_cores (what the report says around the figures; no figure depends on them)."""
    out_dir = pathlib.Path(out_dir)
    stem = pathlib.Path(report_name).stem
    assets = out_dir / f".{stem}.tmp"  # swapped in at the end: a failure keeps the old report
    if assets.exists():
        shutil.rmtree(assets)
    assets.mkdir(parents=True)
    a = analyse(runs, benchmarks=benchmarks, **analysis_kw)
    info = [run_info(r) for r in runs]
    (assets / "analysis.json").write_text(json.dumps({"analysis": a, "runs": info}, indent=1))
    tradeoff2_plots.draw(a, assets)
    path, tmp = out_dir / report_name, out_dir / f".{report_name}.tmp"
    tmp.write_text(tradeoff2_report.render(a, info, planned, stem, **(presentation or {})),
                   encoding="utf-8")
    if (out_dir / stem).exists():
        shutil.rmtree(out_dir / stem)
    os.replace(assets, out_dir / stem)
    os.replace(tmp, path)
    return path
