"""Reading a stage's results in the check's own process: pytest's junit XML, bench.json, the
grid's plan and its runs' files; and packing the grid's results into archive parts."""
from __future__ import annotations

import json
import pathlib
import re
import tarfile
import xml.etree.ElementTree as ET


def junit_counts(path: pathlib.Path) -> dict:
    root = ET.parse(path).getroot()
    cases = list(root.iter("testcase"))
    failed, errors, skipped, durations = [], [], 0, {}
    for c in cases:
        node = f"{c.get('classname', '')}::{c.get('name', '')}"
        durations[node] = round(float(c.get("time") or 0.0), 2)
        if c.find("failure") is not None:
            failed.append({"test": node, "message": (c.find("failure").get("message") or "")[:300]})
        if c.find("error") is not None:
            errors.append({"test": node, "message": (c.find("error").get("message") or "")[:300]})
        if c.find("skipped") is not None:
            skipped += 1
    return {"tests": len(cases), "passed": len(cases) - len(failed) - len(errors) - skipped,
            "failed": len(failed), "errors": len(errors), "skipped": skipped,
            "failures": failed + errors, "durations_s": durations}


def bench_figures(path: pathlib.Path) -> dict:
    sections = json.loads(path.read_text()).get("sections", {})
    out = {}
    peak = sections.get("peak") or {}
    if peak:
        out["peak"] = {k: peak.get(k) for k in ("dtype", "n", "flops_per_s", "median_s")}
    step = sections.get("step") or {}
    for k in ("devices", "batch", "query_len", "passage_len", "hard_negatives", "step_s",
              "steps_per_s", "examples_per_s", "model_flops_per_s", "fraction_of_matmul_peak",
              "first_step_s", "compile_s", "compiles_after_first_step", "setup_s", "max_rss_mb"):
        if k in step:
            out[k] = step[k]
    if "fraction_of_matmul_peak" in out:
        out["mfu_target_0.4_met"] = out["fraction_of_matmul_peak"] >= 0.4
    return out


def _headline(metrics: dict) -> dict:
    def macro(setting):
        return ((metrics.get(setting) or {}).get("macro") or {}).get("map@20")
    return {"mono": macro("mono"), "cross": macro("cross"), "multi": macro("multi"),
            "rank_distance": (metrics.get("rank_distance") or {}).get("macro"),
            "eval_s": metrics.get("seconds")}


_PLAN_LINE = re.compile(r"^\[experiment\] ([A-Za-z0-9_.-]+): (to do|finished|half-done)")


def parse_plan(text: str) -> list[str]:
    """Run names, in order, from `python -m hybrid_jax.study --dry_run` output."""
    return [m.group(1) for m in map(_PLAN_LINE.match, text.splitlines()) if m]


def _timing(run_dir: pathlib.Path) -> dict:
    path = run_dir / "timing.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def finished_runs(workdir: pathlib.Path) -> dict:
    """{run name: wall seconds} of the grid's finished runs."""
    runs = workdir / "runs"
    out = {}
    for run_dir in sorted(runs.iterdir()) if runs.is_dir() else []:
        t = _timing(run_dir)
        if t.get("finished"):
            out[run_dir.name] = float(t.get("wall_seconds") or 0.0)
    return out


def grid_figures(workdir: pathlib.Path, planned: list[str]) -> dict:
    """Per run: wall seconds, steps, last logged steps/s and loss, and mAP@20 (mono / cross /
    multi) and rank distance per evaluated dataset, read from the runs' own files."""
    runs = {}
    for run_dir in sorted((workdir / "runs").iterdir()) if (workdir / "runs").is_dir() else []:
        t = _timing(run_dir)
        entry = {"wall_s": t.get("wall_seconds"), "num_steps": t.get("num_steps"),
                 "finished": bool(t.get("finished")),
                 "status": (t.get("sessions") or [{}])[-1].get("status")}
        for m in sorted(run_dir.glob("eval/*/metrics.json")):
            entry[m.parent.name] = _headline(json.loads(m.read_text()))
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file():
            rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            rates = [r["steps_per_sec"] for r in rows if "steps_per_sec" in r]
            losses = [r["loss"] for r in rows if "loss" in r]
            if losses:
                entry["final_loss"] = losses[-1]
            if rates:
                entry["steps_per_s_last_log"] = rates[-1]
        runs[run_dir.name] = entry
    finished = [n for n in planned if runs.get(n, {}).get("finished")]
    return {"finished": finished, "not_finished": [n for n in planned if n not in finished],
            "failed": [n for n, e in runs.items() if e["status"] == "failed"], "runs": runs}


# Result files of the grid worth keeping (checkpoints and embedding caches are not).
_GRID_KEEP = re.compile(r"(\.json|\.jsonl|\.md|\.png|\.csv|per_query\.npz)$")
_GRID_SKIP = re.compile(r"(^|/)(checkpoints|best|cache|tensorboard)(/|$)")
# Uncompressed bytes per part, in parts of the compressed limit: xz packs the runs' files ~6x
# (their per-query arrays of question ids repeat across files, which xz's window finds and gzip's
# does not); a part that still comes out over the limit is written again with fewer files.
RAW_PER_PART_BYTE = 3


def _grid_files(workdir: pathlib.Path) -> list[pathlib.Path]:
    """The files to keep, small ones first, then final per-query scores, then the budget
    curve's: a grid that does not fit its parts loses curve points first."""
    found = workdir.rglob("*") if workdir.is_dir() else []
    files = [p for p in found if p.is_file() and _GRID_KEEP.search(p.name)
             and not _GRID_SKIP.search(p.relative_to(workdir).as_posix())]

    def rank(p):
        rel = p.relative_to(workdir).as_posix()
        return (p.name == "per_query.npz") + ("/eval_steps/" in rel), rel
    return sorted(files, key=rank)


def _write_part(dest: pathlib.Path, workdir: pathlib.Path, files: list) -> int:
    with tarfile.open(dest, "w:xz", preset=6) as tar:
        for p in files:
            tar.add(p, arcname=f"grid/{p.relative_to(workdir).as_posix()}")
    return dest.stat().st_size


def pack_grid(workdir: pathlib.Path, out: pathlib.Path, pattern: str, part_bytes: int,
              max_parts: int | None = None) -> dict:
    """The grid's result files as xz tar parts `pattern.format(i)` (1, 2, ...) in `out`, each
    under `part_bytes`, at most `max_parts` (None: as many as needed); unpack them all into one
    folder."""
    todo, parts = _grid_files(workdir), []

    def count_within(raw_budget: float) -> int:
        """How many of `todo`, from the first, fit `raw_budget` uncompressed bytes (>= 1)."""
        take, raw = 0, 0
        while take < len(todo) and (take == 0 or raw + todo[take].stat().st_size <= raw_budget):
            raw += todo[take].stat().st_size
            take += 1
        return take

    while todo and (max_parts is None or len(parts) < max_parts):
        take = count_within(RAW_PER_PART_BYTE * part_bytes)
        dest = out / pattern.format(len(parts) + 1)
        size = _write_part(dest, workdir, todo[:take])
        while size > part_bytes and take > 1:
            # fewer files, in proportion to how far over the limit the part came out
            raw = sum(p.stat().st_size for p in todo[:take])
            take = min(take - 1, count_within(0.95 * raw * part_bytes / size))
            size = _write_part(dest, workdir, todo[:take])
        parts.append({"name": dest.name, "files": take, "bytes": size})
        todo = todo[take:]
    return {"parts": parts, "files": sum(p["files"] for p in parts),
            "left_out": [p.relative_to(workdir).as_posix() for p in todo]}
