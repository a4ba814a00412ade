"""The third edition's context sections (sections_third_context.py) and what the page says is
final (sections_third.status / answer): the pilot's tables read from the sibling workdirs, the
paper's deltas beside ours, CPU-hours per grid, and which parts still read unfinished runs."""
import json

import pytest

from hybrid_jax.errors import InputError
from hybrid_jax.study import paper, pilot_table, sections_third, third_grids
from hybrid_jax.study import sections_third_context as context
from hybrid_jax.study.markdown import Page


def _run(mono_curve, cross=None, multi=None) -> dict:
    """A run_curve-shaped run: dev mono at steps 0, 5, 10 (cross and multi given or flat)."""
    curve = [dict(step=s, mono=m, cross=(cross or [0.5] * 3)[i], multi=(multi or [0.3] * 3)[i])
             for i, (s, m) in enumerate(zip((0, 5, 10), mono_curve))]
    return {"name": "r", "curve": curve, "best_step": 10, "logit_scale": None,
            "wall_seconds": 1.0}


def _entry(setting, seed, mono_curve, multi_rise) -> dict:
    runs = {"mono": _run(mono_curve),
            "hybrid": _run([0.7] * 3, multi=[0.3, 0.3, 0.3 + multi_rise])}
    return {"direction": "A", "setting": setting, "seed": seed, "runs": runs,
            "criteria": pilot_table.criteria(runs, 0.01)}


def _write_table(folder, name, entries, clear_rise=0.01):
    folder.mkdir(parents=True)
    (folder / name).write_text(json.dumps({"planned": 4, "finished": len(entries),
                                           "clear_rise": clear_rise, "settings": entries}))


TABLES = ("pilot:tables.json", "pilot-seeds:seeds.json")


@pytest.fixture
def pilot(tmp_path):
    """W = tmp/grid; W-pilot holds seed 0 of `base` and `fast`; W-pilot-seeds holds seed 0 of
    `fast` again (other numbers: the first read is kept) and its seed 1, whose mono dips."""
    _write_table(tmp_path / "grid-pilot" / "report", "tables.json",
                 [_entry("base", 0, [0.70, 0.71, 0.72], 0.05),
                  _entry("fast", 0, [0.70, 0.72, 0.74], 0.10)])
    _write_table(tmp_path / "grid-pilot-seeds" / "report", "seeds.json",
                 [_entry("fast", 0, [0.70, 0.60, 0.60], 0.0),
                  _entry("fast", 1, [0.70, 0.69, 0.73], 0.005)], clear_rise=0.5)
    return tmp_path / "grid"


def test_read_pilot_keeps_each_seed_once_in_table_order(pilot):
    got = third_grids.read_pilot(pilot, TABLES)
    assert [(e["setting"], e["seed"]) for e in got["entries"]] == [("base", 0), ("fast", 0),
                                                                   ("fast", 1)]
    assert got["entries"][1]["criteria"]["a"] is True      # the pilot's seed 0, not the rerun
    assert got["clear_rise"] == 0.01 and got["missing"] == []
    absent = third_grids.read_pilot(pilot, TABLES + ("pilot-more:x.json",))
    assert absent["missing"] == ["grid-pilot-more/report/x.json"]


def test_read_pilot_names_a_broken_table(pilot):
    (pilot.with_name("grid-pilot") / "report" / "tables.json").write_text('{"settings": 3}')
    with pytest.raises(InputError, match="grid-pilot/report/tables.json: not a pilot table"):
        third_grids.read_pilot(pilot, TABLES)


def _page(analysis, **presentation) -> Page:
    return Page(analysis, [], 0, "tradeoff", presentation)


def test_pilot_section_shows_the_criteria_and_the_registered_setting(pilot):
    got = dict(third_grids.read_pilot(pilot, TABLES), registered="fast")
    text = "\n".join(context.pilot_section(_page({"pilot": got})))
    assert "at least 0.01 above the start's" in text
    assert "| A | base | 0 | 0.7000 -> 0.7200 | +0.0100 | **pass** |" in text
    assert "| A | fast | 1 | 0.7000 -> 0.7300 | -0.0100 | **fail** |" in text
    assert "Over its 2 seeds (0, 1), `fast` met (a) on 1 and (b) on 1." in text
    none = "\n".join(context.pilot_section(_page(
        {"pilot": third_grids.read_pilot(pilot.with_name("other"), TABLES)})))
    assert "not beside this grid (other-pilot/report/tables.json" in none


def _row(scope, d) -> dict:
    return {"scope": scope, "diff": d, "ci_low": d - 0.004, "ci_high": d + 0.004}


def test_paper_section_sets_ours_beside_theirs():
    a = {"dataset": "xquad-r", "S1": [_row("en", -0.01), _row("de", 0.002)],
         "S2": {"dataset": "mlqa-r", "rows": [_row("macro", 0.0), _row("zh", 0.001)]}}
    text = "\n".join(context.paper_section(_page(a)))
    assert "| paper: XLM-R | +0.006 | +0.014 | +0.007 | +0.011 | -0.003 |" in text
    assert "| ours | -0.010 [-0.014, -0.006] | +0.002 [-0.002, +0.006] | - | - | - |" in text
    assert "| ours | - | - | - | +0.001 [-0.003, +0.005] |" in text   # mlqa-r: en, de, es, zh
    assert paper.published_deltas("xquad-r-test") is paper.PAPER_DELTAS["xquad-r"]
    assert paper.published_deltas("xquad-rx") is None
    assert context.paper_section(_page({"dataset": "other", "S1": [_row("en", 0.0)],
                                        "S2": None})) == []


def _grids(main_missing=(), b_missing=(), arm_missing=()) -> list[dict]:
    def grid(name, planned, missing):
        return {"name": name, "workdir": f"w-{name}", "present": True, "dataset": "d",
                "planned": planned, "finished": [n for n in planned if n not in missing],
                "missing": list(missing),
                "runs": [{"wall_seconds": 1800.0, "code": "git abc"}]}
    main = ["zero-shot", "mono-s0", "hybrid-a0.5-s0", "cross-s0", "hybrid-a0.25-s0"]
    return [grid("", main, main_missing), grid("B", ["mono-s0"], b_missing),
            grid("weak", ["mono-s0"], arm_missing)]


@pytest.mark.parametrize("missing,status,answer", [
    (dict(main_missing=["hybrid-a0.5-s0"]),
     "**The primary endpoint's runs are not complete: hybrid-a0.5-s0", "(provisional: 1 of"),
    (dict(main_missing=["cross-s0"], arm_missing=["mono-s0"]),
     "S1, S2 and S3 are final: every run they read has finished. These parts read the finished "
     "runs only and will change: the dose-response, the exploratory arms (weak).", None),
    (dict(b_missing=["mono-s0"]), "S1 and S3 are final", None),
    ({}, None, None)])
def test_status_says_which_parts_are_final(missing, status, answer):
    a = {"grids": _grids(**missing), "primary_condition": "hybrid-a0.5", "n_resamples": 10,
         "delta": 0.007, "primary": None, "high_resource": ["en"], "dataset": "d"}
    page = _page(a)
    text = "\n".join(sections_third.status(page))
    if status:
        assert status in text
    else:
        assert "**" not in text
    heading = sections_third.answer(page)[0]
    assert (answer in heading) if answer else heading == "## The answer"


def test_runs_section_gives_cpu_hours_per_grid():
    a = {"grids": _grids()}
    text = "\n".join(context.runs_section(_page(a, cpu_cores=2, compute_note="Pauses: none.")))
    assert "CPU-hours are wall hours x 2 cores" in text and "Pauses: none." in text
    assert "| main | w- | d | 5 of 5 | 0.50 h | 1.0 | git abc |" in text
    assert "CPU-hours" not in "\n".join(context.runs_section(_page(a)))
