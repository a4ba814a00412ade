"""The third edition's sections (third.py's analysis), one function per section, each a pure
function of the report's `Page`: title and answer, the primary endpoint with the power reached,
S1-S3, the descriptive rows, the scores, the dose-response, the exploratory arms (budgets, data
fractions, the weakened start, from the sibling workdirs). SECTIONS orders the page, with the
sections of sections_third_context.py (the pilot, the paper, runs, cuts, deviations)."""
from __future__ import annotations

from hybrid_jax.evaluation.statistics import seeds as seed_stats
from hybrid_jax.study import figures_third, sections_third_context as context
from hybrid_jax.study.markdown import Page, ci, diff, mean_std, p_value, see_also, table
from hybrid_jax.study.runs import ZERO_SHOT, label

TITLE = "Does hybrid training cost high-resource accuracy? Third edition"
PROTOCOL = "tradeoff3_protocol.md"
FAMILY_HEAD = ["difference", "95% interval", "SE", "power at ±δ", "p (Holm)", "TOST p (Holm)",
               "seeds", "verdict"]


def _cells(r: dict) -> list:
    return [diff(r["diff"]), ci(r), f"{r['se']:.4f}", f"{r['power_at_delta']:.2f}",
            p_value(r["p_holm"]),
            p_value(r["p_tost_holm"]), len(r["seeds"]), f"**{r['verdict']}**"]


def primary_missing(a: dict) -> list[str]:
    """The main grid's unfinished runs that the primary endpoint, S1 or S3 reads: the zero-shot
    model, X-X-mono and the primary hybrid (not the dose-response's other doses)."""
    mine = ("mono-s", f"{a['primary_condition']}-s")
    return [n for n in a["grids"][0]["missing"] if n == ZERO_SHOT or n.startswith(mine)]


def _unfinished_parts(a: dict) -> list[str]:
    """The report's parts that read runs not finished yet."""
    main, *siblings = a["grids"]
    parts = ["the dose-response"] if set(main["missing"]) - set(primary_missing(a)) else []
    parts += ["S2" for g in siblings if g["name"] == "B" and g["missing"]]
    arms = [context.grid_name(g["name"]) for g in siblings if g["name"] != "B" and g["missing"]]
    return parts + ([f"the exploratory arms ({', '.join(arms)})"] if arms else [])


def status(p: Page) -> list[str]:
    a = p.analysis
    L = [f"# {p.presentation.get('title', TITLE)}", ""]
    L += see_also(p.presentation)
    done = sum(len(g["finished"]) for g in a["grids"])
    planned = sum(len(g["planned"]) for g in a["grids"])
    missing, parts = primary_missing(a), _unfinished_parts(a)
    if missing:
        L += [f"**The primary endpoint's runs are not complete: {', '.join(missing)} of the "
              f"main grid have not finished.** Every number below comes from the finished runs "
              f"only and will change; no verdict here is the study's answer yet.", ""]
    elif parts:
        final = "S1, S2 and S3" if "S2" not in parts else "S1 and S3"
        L += [f"**{done} of the {planned} planned runs have finished.** The primary endpoint, "
              f"{final} are final: every run they read has finished. These parts read the "
              f"finished runs only and will change: {', '.join(parts)}.", ""]
    L += [f"The protocol was registered before the grids ran: [{PROTOCOL}]({PROTOCOL}). Every "
          f"comparison of two trained conditions is paired by seed (only the seeds both "
          f"finished; seed s of both drawn together), then question clusters are drawn once for "
          f"both: a two-level bootstrap of {a['n_resamples']:,} resamples. Against the zero-shot "
          f"model only the trained arm's seeds and the questions are resampled. Equivalence: "
          f"TOST at ±δ = ±{a['delta']:g}; Holm within each family. Power at ±δ: the two-sided "
          f"test's power to detect a difference of δ at the SE the row reached.", ""]
    return L


def answer_sentence(a: dict) -> str:
    r = a["primary"]
    langs = ", ".join(a["high_resource"])
    if r is None:
        return ("**No answer yet**: no seed has both X-X-mono and hybrid finished on "
                f"{a['dataset']}.")
    what = (f"hybrid (alpha {a['primary_condition'][len('hybrid-a'):]}) minus X-X-mono, "
            f"monolingual mAP@20 macro over {langs} on {a['dataset']}: {r['diff']:+.4f} "
            f"(95% interval {ci(r)}, p = {p_value(r['p'])}, {len(r['seeds'])} seed pairs)")
    v, d = r["verdict"], a["delta"]
    if v == seed_stats.LOSS:
        inside = " The loss lies inside the ±{:g} margin; it is still a loss.".format(d) \
            if abs(r["diff"]) < d else ""
        return f"**Yes: hybrid training cost monolingual accuracy.** {what}.{inside}"
    if v == seed_stats.GAIN:
        return f"**No, the opposite: hybrid training gained monolingual accuracy.** {what}."
    if v == seed_stats.EQUIVALENT:
        return (f"**No cost beyond ±{d:g}.** {what}; its 90% interval "
                f"[{r['tost_ci_low']:+.4f}, {r['tost_ci_high']:+.4f}] lies inside ±{d:g} "
                f"(TOST p = {p_value(r['p_tost'])}).")
    return (f"**Not answered: inconclusive.** {what}: neither a significant difference nor "
            f"equivalence within ±{d:g} (TOST p = {p_value(r['p_tost'])}); the design reached "
            f"power {r['power_at_delta']:.2f} at ±{d:g}. Inconclusive is not \"no cost\".")


def answer(p: Page) -> list[str]:
    missing = primary_missing(p.analysis)
    caveat = f" (provisional: {len(missing)} of its runs not finished)" if missing else ""
    return [f"## The answer{caveat}", "", answer_sentence(p.analysis), ""]


def primary_section(p: Page) -> list[str]:
    a, r = p.analysis, p.analysis["primary"]
    L = [f"## Primary endpoint: hybrid - X-X-mono, mono mAP@20, macro over "
         f"{', '.join(a['high_resource'])} ({a['dataset']})", ""]
    if r is None:
        return L + ["No seed pair finished yet.", ""]
    L += [table(["means (hybrid vs X-X-mono)"] + FAMILY_HEAD,
                [[f"{r['mean_a']:.4f} vs {r['mean_b']:.4f}"] + _cells(r)]), ""]
    L += [f"Power reached: SE {r['se']:.4f}, so the two-sided test at level {a['alpha']:g} had "
          f"power **{r['power_at_delta']:.2f}** to detect a difference of ±{a['delta']:g}; the "
          f"difference it detects with 80% power (MDE) is **{r['mde']:.4f}**. Seeds paired: "
          f"{', '.join(map(str, r['seeds']))}"
          + (f"; left out (only one arm finished): {', '.join(map(str, r['unpaired']))}"
             if r["unpaired"] else "") + ".", ""]
    L += [sequential_sentence(a.get("sequential"), a["delta"]), ""]
    name = figures_third.files(a).get("answer")
    return L + ([f"![answer]({p.link(name)})", ""] if name else [])


def sequential_sentence(q: dict, delta: float) -> str:
    """What the protocol's sequential rule (statistics.power.sequential_decision) decided,
    and why."""
    rule = (f"The registered sequential rule looks at the power after {q['after']} seed pairs "
            f"and adds seed pairs, up to {q['most']}, while it is below {q['target_power']:.0%}")
    if q["decision"] == "wait":
        return f"{rule}; {q['seed_pairs']} have finished, so it has not been applied yet."
    if q["decision"] == "add":
        return (f"{rule}: with {q['seed_pairs']} seed pairs the power at ±{delta:g} is "
                f"{q['power']:.2f}, so another seed pair is due; this report is provisional.")
    why = (f"the power at ±{delta:g} is {q['power']:.2f}" if q["power"] >= q["target_power"]
           else f"the most it allows have run (power {q['power']:.2f})")
    return f"{rule}: with {q['seed_pairs']} seed pairs {why}, so no more were run."


def _family(title: str, rows: list[dict], first: str, first_cell, empty: str) -> list[str]:
    L = [f"## {title}", ""]
    if not rows:
        return L + [empty, ""]
    return L + [table([first] + FAMILY_HEAD, [[first_cell(r)] + _cells(r) for r in rows]), ""]


def s1_section(p: Page) -> list[str]:
    a = p.analysis
    return _family(f"S1: the primary comparison per language ({a['dataset']}, Holm over "
                   f"{len(a['S1'])})", a["S1"], "language", lambda r: r["scope"],
                   "No seed pair finished yet.")


def s2_section(p: Page) -> list[str]:
    s2 = p.analysis["S2"] or {"rows": [], "present": False, "dataset": "direction B"}
    empty = ("Direction B's grid (workdir -B) is absent." if not s2["present"] else
             "Direction B has no seed with both X-X-mono and hybrid finished yet.")
    return _family(f"S2: direction B, hybrid - X-X-mono, mono mAP@20 on {s2['dataset']} "
                   f"(one Holm family of macro and languages)", s2["rows"], "scope",
                   lambda r: r["scope"], empty)


def s3_section(p: Page) -> list[str]:
    a = p.analysis
    return _family(f"S3: each trained condition - the zero-shot model, mono mAP@20 macro "
                   f"({a['dataset']}, Holm over {len(a['S3'])})", a["S3"], "condition",
                   lambda r: label(r["a"]), "The zero-shot run or the trained runs have not "
                                            "finished yet.")


def _plain_rows(rows: list[dict], first) -> str:
    return table(["comparison", "hybrid", "X-X-mono", "difference", "95% interval", "p",
                  "reading"],
                 [[first(r), f"{r['mean_a']:.4f}", f"{r['mean_b']:.4f}", diff(r["diff"]), ci(r),
                   p_value(r["p"]), r["verdict"]] for r in rows])


def descriptive_section(p: Page) -> list[str]:
    a, d = p.analysis, p.analysis["descriptive"]
    L = ["## Descriptive (uncorrected, no verdicts)", ""]
    if not d["rows"]:
        return L + ["No seed pair finished yet.", ""]
    L += [f"Hybrid - X-X-mono, macro over {', '.join(a['high_resource'])}; rank distance: "
          "lower = less language bias.", "",
          _plain_rows(d["rows"], lambda r: f"{r['setting']} {r['metric']}"), ""]
    if d["unseen"]:
        L += [f"Languages never seen in training ({', '.join(a['unseen_languages'])}):", "",
              _plain_rows(d["unseen"], lambda r: f"{r['scope']} {r['setting']}"), ""]
    return L


def _scores(dataset: str, summary: dict) -> list[str]:
    metrics = list(next(iter(summary.values())))
    body = [[label(c), row[metrics[0]]["macro_hr"][2]] + [mean_std(row[m]["macro_hr"])
                                                          for m in metrics]
            for c, row in summary.items()]
    return [f"## Scores on {dataset} (mean ± std over seeds, zero-shot beside)", "",
            table(["condition", "runs"] + [f"{m} (HR)" for m in metrics], body), ""]


def summary_section(p: Page) -> list[str]:
    """The primary benchmark's scores, then direction B's when it has finished runs."""
    a, b = p.analysis, p.analysis["S2"] or {}
    L = _scores(a["dataset"], a["summary"]) if a["summary"] else []
    return L + (_scores(b["dataset"], b["summary"]) if b.get("summary") else [])


AXIS_TITLES = {"budget": "training steps", "fraction": "share of the training questions",
               "start": "starting model"}


def dose_section(p: Page) -> list[str]:
    a, d = p.analysis, p.analysis["dose"]
    doses = ", ".join(f"{x:g}" for x in d["doses"])
    L = [f"## The alpha dose-response (alpha = {doses}; Holm over {len(d['rows']) or 4} slopes)",
         ""]
    if not d["rows"]:
        return L + [f"Not yet: a slope needs at least two seeds of "
                    f"{', '.join(map(str, d['planned_seeds']))} with all {len(d['doses'])} doses "
                    f"finished; {len(d['seeds'])} have.", ""]
    body = [[r["metric"], " / ".join(f"{m:.4f}" for m in r["dose_means"]),
             diff(r["slope"]), ci(r), f"{r['se']:.4f}", p_value(r["p"]), p_value(r["p_holm"]),
             "yes" if r["significant"] else "no"] for r in d["rows"]]
    partial = (f" Provisional: {len(d['seeds'])} of the {len(d['planned_seeds'])} registered "
               f"seeds have every dose finished." if d["seeds"] != d["planned_seeds"] else "")
    L += [f"Least-squares slope of the per-run macro over {', '.join(a['high_resource'])} "
          f"against alpha (0 = X-Y, 1 = X-X-mono) on seeds {', '.join(map(str, d['seeds']))} "
          f"(every dose finished); paired two-level bootstrap (seeds drawn jointly across "
          f"doses). Rank distance: lower = less language bias.{partial}", "",
          table(["metric", f"means at alpha {doses}", "slope", "95% interval", "SE", "p",
                 "p (Holm)", "significant"], body), ""]
    name = figures_third.files(a).get("dose")
    return L + ([f"![dose-response]({p.link(name)})", ""] if name else [])


def arms_section(p: Page) -> list[str]:
    a = p.analysis
    L = ["## Exploratory arms (descriptive intervals, uncorrected)", "",
         "Hybrid - X-X-mono, mono mAP@20 macro over the high-resource languages on "
         f"{a['dataset']}, paired by seed; the main grid's seeds "
         f"{', '.join(map(str, _arm_seeds(a)))} are the reference point of each axis.", ""]
    body = []
    for r in a["arms"]:
        where = context.grid_name(r["grid"]) if r["grid"] is not None else "-"
        if "missing" in r:
            body.append([AXIS_TITLES[r["axis"]], _point(r["x"]), where, "-", "-", "-", "-", "-",
                         f"missing: {r['missing']}"])
            continue
        zs = "-" if r.get("zero_shot") is None else f"{r['zero_shot']:.4f}"
        body.append([AXIS_TITLES[r["axis"]], _point(r["x"]), where, f"{r['mean_a']:.4f}",
                     f"{r['mean_b']:.4f}", zs, diff(r["diff"]), ci(r),
                     f"{len(r['seeds'])} seeds; {r['verdict']}"])
    L += [table(["axis", "point", "grid", "hybrid", "X-X-mono", "zero-shot", "difference",
                 "95% interval", "reading"], body), ""]
    name = figures_third.files(a).get("arms")
    return L + ([f"![arms]({p.link(name)})", ""] if name else [])


def _point(x) -> str:
    return x if isinstance(x, str) else f"{x:g}"


def _arm_seeds(a: dict) -> list:
    main = next((r for r in a["arms"] if r["grid"] == "" and "seeds" in r), None)
    return main["seeds"] if main else []


# The third edition's page, top to bottom.
SECTIONS = (status, answer, primary_section, s1_section, s2_section, context.paper_section,
            s3_section, context.pilot_section, descriptive_section, summary_section, dose_section,
            arms_section, context.runs_section, context.cuts_section,
            context.deviations_section)
