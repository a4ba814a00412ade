"""The finished runs of a grid as the analyses read them: one `Run` per run workdir, its
evaluations (eval/<dataset>/ and eval_steps/step_<n>/eval/<dataset>/: metrics.json and
per_query.npz), its training curve and its timing, plus the conditions' names and order."""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Optional, Sequence

import numpy as np

from hybrid_jax import code_version
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import per_query
from hybrid_jax.evaluation.statistics import tables
from hybrid_jax.evaluation.statistics.seeds import mean_std

ZERO_SHOT = "zero-shot"


@dataclasses.dataclass
class Run:
    name: str
    condition: str            # 'zero-shot' | 'mono' | 'cross' | 'hybrid-a<alpha>'
    seed: Optional[int]
    alpha: Optional[float]    # share of monolingual batches (mono 1, cross 0); None: zero-shot
    run_dir: pathlib.Path
    _cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def folder(self, dataset: str, step: Optional[int] = None) -> pathlib.Path:
        base = pathlib.Path(self.run_dir)
        if step is not None:
            base = base / "eval_steps" / f"step_{step}"
        return base / "eval" / dataset

    def has(self, dataset: str, step: Optional[int] = None) -> bool:
        return (self.folder(dataset, step) / "per_query.npz").is_file()

    def metrics(self, dataset: str, step: Optional[int] = None) -> dict:
        """metrics.json of one evaluation (read once)."""
        k = ("metrics", dataset, step)
        if k not in self._cache:
            path = self.folder(dataset, step) / "metrics.json"
            try:
                self._cache[k] = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise InputError(f"{path}: unreadable ({e})") from e
        return self._cache[k]

    def groups(self, dataset: str, step: Optional[int] = None) -> dict:
        """per_query.npz of one evaluation (read once)."""
        k = ("groups", dataset, step)
        if k not in self._cache:
            self._cache[k] = per_query.load(self.folder(dataset, step) / "per_query.npz")
        return self._cache[k]

    def tables(self, dataset: str, key: str, step: Optional[int] = None) -> dict:
        """tables.per_question_scores of one evaluation (computed once)."""
        k = ("tables", dataset, key, step)
        if k not in self._cache:
            self._cache[k] = tables.per_question_scores(self.groups(dataset, step), key)
        return self._cache[k]

    def curve_steps(self, dataset: str) -> list[int]:
        d = pathlib.Path(self.run_dir) / "eval_steps"
        steps = sorted(int(p.name[len("step_"):]) for p in d.glob("step_*")) if d.is_dir() else []
        return [s for s in steps if self.has(dataset, s)]


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
    return ({ZERO_SHOT: 0, "mono": 1, "cross": 2}.get(condition, 4), 0.0)


def by_condition(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """condition -> its runs by seed; conditions in report order (zero-shot, X-X-mono, X-Y,
    hybrid by alpha)."""
    out: dict[str, list[Run]] = {}
    for r in sorted(runs, key=lambda r: (_order(r.condition), r.seed or 0)):
        out.setdefault(r.condition, []).append(r)
    return out


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


def summarize(groups: dict[str, list[Run]], dataset: str, languages: Sequence[str],
              high_resource: Sequence[str], metrics: dict[str, tuple],
              missing=math.nan) -> dict:
    """condition -> name -> {lang | 'macro_hr' | 'macro_all': (mean, std, n_seeds)} for each
    `metrics` name -> (setting, key) (language_value's). Macros are taken per run (mean over the
    languages), then mean +- std over seeds; `missing` fills what one or no value cannot give."""
    out = {}
    for cond, runs in groups.items():
        ms = [r.metrics(dataset) for r in runs]
        out[cond] = {}
        for name, (setting, key) in metrics.items():
            per = [{x: language_value(m, setting, x, key) for x in languages} for m in ms]
            row = {x: mean_std([p[x] for p in per], missing) for x in languages}
            for scope, langs in (("macro_hr", high_resource), ("macro_all", languages)):
                row[scope] = mean_std([float(np.mean([p[x] for x in langs])) for p in per],
                                      missing)
            out[cond][name] = row
    return out


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


def run_info(r: Run) -> dict:
    """Name, condition, seed, wall time and sessions (timing.json), and the code that made it."""
    path = pathlib.Path(r.run_dir) / "timing.json"
    t = json.loads(path.read_text()) if path.is_file() else {}
    versions = code_version.recorded(pathlib.Path(r.run_dir))
    return {"name": r.name, "condition": r.condition, "seed": r.seed,
            "wall_seconds": t.get("wall_seconds"), "sessions": len(t.get("sessions", [])),
            "code": " then ".join(code_version.label(v) for v in versions) or "unrecorded"}
