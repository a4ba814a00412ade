"""The study's report, one implementation for every edition: analyse the finished runs, write the
edition's data files and figures, render its sections into markdown, and swap all of it in
atomically; `publish` copies a report into a docs folder.

Output: out_dir/<report_name> and out_dir/<stem>/ (figures and data files). What differs between
editions (the analysis, the sections, the figures, the data files) is the `Edition` record
(editions.py) that the experiment config names."""
from __future__ import annotations

import os
import pathlib
import shutil
from typing import Optional, Sequence

from hybrid_jax.errors import InputError
from hybrid_jax.study.markdown import Page
from hybrid_jax.study.runs import Run, run_info


def render(edition, page: Page) -> str:
    """The edition's sections, top to bottom."""
    return "\n".join(line for section in edition.sections for line in section(page))


def write_report(edition, runs: Sequence[Run], *, out_dir, report_name: str, planned: int,
                 parameters: dict, presentation: Optional[dict] = None) -> pathlib.Path:
    """Writes out_dir/report_name and out_dir/<stem>/ for `runs` (the finished ones of `planned`
    runs); `parameters` go to the edition's analysis, `presentation` (title, see_also, ...) to
    its sections. Returns the report's path."""
    out_dir = pathlib.Path(out_dir)
    stem = pathlib.Path(report_name).stem
    # Built beside the old report and swapped in at the end: a failure leaves the old one whole.
    assets = out_dir / f".{stem}.tmp"
    if assets.exists():
        shutil.rmtree(assets)
    analysis = edition.analyse(runs, **parameters)
    page = Page(analysis, [run_info(r) for r in runs], planned, stem, dict(presentation or {}))
    assets.mkdir(parents=True)
    edition.write_data(page, assets)
    edition.draw(analysis, assets)
    path, tmp = out_dir / report_name, out_dir / f".{report_name}.tmp"
    tmp.write_text(render(edition, page), encoding="utf-8")
    if (out_dir / stem).exists():
        shutil.rmtree(out_dir / stem)
    os.replace(assets, out_dir / stem)
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
