"""The first edition's sections (pooled-seed comparisons, pooled.py), one function per section,
each a pure function of the report's `Page`: every number in the text comes from the runs, their
config or paper.py."""
from __future__ import annotations

from typing import Optional

from hybrid_jax.study import figures_pooled
from hybrid_jax.study.markdown import (Page, and_list, ci, count, duration, mean_std, p_value,
                                      runs_table, table)
from hybrid_jax.study.paper import ACCELERATOR, ACCELERATOR_CONFIGS, PAPER, PAPER_BATCH
from hybrid_jax.study.pooled import (CONFIDENCE, LEVEL, SETTINGS, Analysis, negatives_per_query,
                                     uncorrected_verdict, verdict)
from hybrid_jax.study.runs import label

CI = f"{CONFIDENCE:.0%}"
RUNS_TABLE = ("run", "condition", "seed", "steps", "first loss", "final loss", "steps/s", "eval",
              "wall time", "sessions", "metrics")


def negatives_phrase(config: Optional[dict]) -> str:
    """'15 in-batch negatives per query', with the hard negatives when the run had them."""
    n = negatives_per_query(config)
    if n is None:
        return "in-batch negatives per query: batch size unknown"
    in_batch, hard = n
    if not hard:
        return f"{in_batch} in-batch negatives per query"
    return f"{in_batch} in-batch and {hard} hard negatives per query"


# ----------------------------------------------------------------------------- sections


def header(p: Page) -> list[str]:
    a = p.analysis
    L = ["# Does hybrid training trade away accuracy on high-resource languages?", "",
         f"Dataset `{a.dataset}` ({len(a.languages)} languages: {', '.join(a.languages)}; "
         f"{a.n_multi_queries} questions in the multi setting). "
         f"Metric {a.key} (LAReQA, docs/evaluation.md). High-resource languages: "
         f"{', '.join(a.high_resource)}. Conditions: {', '.join(label(c) for c in a.groups)}; "
         f"seeds {', '.join(map(str, a.seeds)) or '-'}; every trained run starts from the same "
         f"model as the zero-shot row.", ""]
    if a.missing:
        L += [f"**Partial grid**: {len(a.missing)} planned run(s) not finished yet "
              f"({', '.join(a.missing)}); the numbers below use the finished runs only.", ""]
    return L


def _answer_rows(a: Analysis) -> list[list]:
    """The high-resource rows of each comparison (in the Holm family), then its macro rows."""
    macro = {"macro_hr": "macro (high-resource)", "macro_all": "macro (all)"}
    rows = []
    for setting, ref in (("mono", "X-X-mono"), ("cross", "X-Y")):
        def cells(r):
            return [f"{setting}: vs {ref}", f"{r['mean_a']:.4f}", f"{r['mean_b']:.4f}",
                    f"{r['diff']:+.4f}", ci(r), p_value(r["p_bootstrap"])]

        for r in a.answer.get(setting, []):
            if r["scope"] in a.high_resource:
                rows.append([r["scope"]] + cells(r) + [p_value(r.get("p_holm")), verdict(r)])
        for r in a.answer.get(setting, []):
            if r["scope"] in macro:
                rows.append([macro[r["scope"]]] + cells(r)
                            + ["(not in family)", uncorrected_verdict(r)])
    return rows


def _answer_words(a: Analysis) -> list[str]:
    L = []
    for setting, what, ref in (("mono", "monolingual", "X-X-mono"),
                               ("cross", "cross-lingual", "X-Y")):
        for r in a.answer.get(setting, []):
            if r["scope"] in a.high_resource:
                L.append(f"- **{r['scope']}**, {what} retrieval: {label(a.primary)} scores "
                         f"{abs(r['diff']):.4f} {'higher' if r['diff'] > 0 else 'lower'} than "
                         f"{ref} ({CI} CI {ci(r)}, Holm p = {p_value(r.get('p_holm'))}): "
                         f"**{verdict(r)}**.")
    return L


def answer(p: Page) -> list[str]:
    a, link = p.analysis, p.link
    L = ["## The answer", ""]
    if not a.answer:
        return L + ["Not available yet: it needs a hybrid condition and its X-X-mono / X-Y "
                    "references.", ""]
    how = "seeds also resampled" if a.resample_seeds else "per-query scores averaged over seeds"
    both = "both comparisons" if len(a.answer) == 2 else "the one comparison"
    L += [f"{label(a.primary)} minus the reference, per high-resource question language. "
          f"Paired bootstrap over questions ({a.n_bootstrap} resamples; a question and its "
          f"translations move together; {how}), {CI} percentile interval, two-sided p "
          f"Holm-adjusted over the {len(a.family)} high-resource tests of {both}. Verdict at "
          f"Holm p < {LEVEL}. Cross = questions in the language against each other language's "
          f"candidates (macro over targets).", ""]
    L += [table(["language", "comparison", "hybrid", "reference", "difference", f"{CI} CI",
                 "p", "p Holm", "verdict"], _answer_rows(a)), ""]
    L += [f"The macro rows are extra tests outside the Holm family: their verdicts rest on the "
          f"uncorrected p. \"No significant difference\" means these data cannot tell the two "
          f"apart at p < {LEVEL}; it is not evidence that there is no difference (read the "
          f"interval).", ""]
    L += ["In words:", ""] + _answer_words(a)
    if not a.resample_seeds:
        L += ["", f"The intervals reflect question sampling given these {len(a.seeds)} "
              "seed(s) (per-query scores averaged over seeds); seed-to-seed variation is "
              "not in them (experiment.resample_seeds=True puts it in): compare with the "
              "± std columns below."]
    if len(a.seeds) < 3:
        L += ["", f"Caution: only {len(a.seeds)} seed(s)."]
    L += ["", f"![differences]({link(figures_pooled.files(a)['answer'])})", ""]
    return L + every_language(a)


def every_language(a: Analysis) -> list[str]:
    hr = a.high_resource
    rows = [[r["scope"] + ("*" if r["scope"] in hr else ""), r["setting"], f"{r['diff']:+.4f}",
             ci(r), p_value(r["p_bootstrap"]), p_value(r.get("p_holm_all")),
             verdict(r, "p_holm_all")] for r in a.per_language]
    return ["### Every language", "",
            "The same comparisons for all languages (Holm over all "
            f"{len(a.per_language)} per-language tests).", "",
            table(["language", "setting", "hybrid - reference", f"{CI} CI", "p",
                   "p Holm (all)", "verdict"], rows), ""]


def results(p: Page) -> list[str]:
    a, link = p.analysis, p.link
    L = ["## Results by condition", "",
         f"Mean ± sample std over seeds (zero-shot: one evaluation). Macro (HR) = mean over "
         f"{', '.join(a.high_resource)}; macro (all) = over all {len(a.languages)} languages. "
         f"Rank distance: multi setting, lower = less language bias.", ""]
    rows = [[label(cond), len(a.groups[cond])]
            + [mean_std(d[s][scope]) for s in SETTINGS for scope in ("macro_hr", "macro_all")]
            + [mean_std(d["rank_distance"]["macro_all"])] for cond, d in a.summary.items()]
    L += [table(["condition", "seeds", "mono HR", "mono all", "cross HR", "cross all",
                 "multi HR", "multi all", "rank distance"], rows), ""]
    for setting in SETTINGS + ("rank_distance",):
        title = f"{a.key}, {setting}" if setting != "rank_distance" else "rank distance (multi)"
        L += [f"### {title} per question language", ""]
        rows = [[x + ("*" if x in a.high_resource else "")]
                + [mean_std(a.summary[c][setting][x]) for c in a.summary] for x in a.languages]
        L += [table(["language"] + [label(c) for c in a.summary], rows), ""]
    return L + [f"![settings]({link(figures_pooled.files(a)['settings'])})", ""]


def sweep(p: Page) -> list[str]:
    a, link = p.analysis, p.link
    L = []
    if a.sweep:
        L += ["## Alpha sweep", "", "Each hybrid alpha minus the reference on macro scores "
              "(raw bootstrap p, not corrected). alpha = 1 is the X-X-mono run, alpha = 0 the "
              "X-Y run.", ""]
        rows = [[label(r["condition"]),
                 f"{r['setting']} vs {'X-X-mono' if r['setting'] == 'mono' else 'X-Y'}",
                 "high-resource" if r["scope"] == "macro_hr" else "all",
                 f"{r['diff']:+.4f}", ci(r), p_value(r["p_bootstrap"])] for r in a.sweep]
        L += [table(["condition", "comparison", "languages", "difference", f"{CI} CI", "p"],
                    rows), ""]
    if "alpha" in figures_pooled.files(a):
        L += [f"![alpha]({link(figures_pooled.files(a)['alpha'])})", ""]
    return L


def paper(p: Page) -> list[str]:
    a = p.analysis
    L = ["## Published numbers (theirs, not ours)", "",
         f"arXiv 2408.10536, XQuAD-R mAP as published: **their** models ({', '.join(PAPER)}), "
         f"training data, batch size {PAPER_BATCH} on an A100, and evaluation protocol. Our runs "
         f"use a different model ({a.model or 'see config.json'}), a CPU-sized step budget, and "
         f"only the held-out test articles. Compare directions of differences, not absolute "
         f"values.", ""]
    rows = []
    for theirs, d in PAPER.items():  # not `model`: that names our model below
        for cond in ("mono", "cross", "hybrid"):
            v = d[cond]
            rows.append([f"paper: {theirs}", label(cond if cond != "hybrid" else "hybrid-a0.5"),
                         f"{v['mono']:.3f}", f"{v['cross']:.3f}", f"{v['multi']:.3f}",
                         str(v["rank_distance"])])
    for cond, d in a.summary.items():
        rows.append([f"ours: {a.model} ({a.dataset})", label(cond)]
                    + [mean_std(d[s]["macro_all"]) for s in SETTINGS]
                    + [mean_std(d["rank_distance"]["macro_all"])])
    L += [table(["source", "condition", "mono", "cross", "multi", "rank distance"], rows), ""]
    deltas = [[f"paper: {theirs}", f"{d['hybrid']['mono'] - d['mono']['mono']:+.3f}",
               f"{d['hybrid']['cross'] - d['cross']['cross']:+.3f}", "none given"]
              for theirs, d in PAPER.items()]
    macro = {s: next((r for r in a.answer.get(s, []) if r["scope"] == "macro_all"), None)
             for s in ("mono", "cross")}
    if any(macro.values()):
        deltas.append(["ours (macro, all languages)"]
                      + [f"{r['diff']:+.3f} {ci(r)}" if r else "-" for r in macro.values()]
                      + [f"bootstrap {CI} CI"])
    return L + [table(["source", "hybrid - X-X-mono (mono)", "hybrid - X-Y (cross)",
                       "uncertainty"], deltas), ""]


def _accelerator(config: Optional[dict]) -> str:
    """What the paper-sized configs would change about these runs, from the runs' config."""
    acc = ACCELERATOR
    t, d = ((config or {}).get(s, {}) for s in ("train", "data"))
    n = negatives_per_query(config)
    changes = []
    if n is None or n[0] < acc["global_batch_size"] - 1:
        changes.append(f"{acc['global_batch_size'] - 1}"
                       + (f" instead of {n[0]}" if n is not None else "")
                       + " in-batch negatives per query (a harder contrastive task, closer to "
                       "the paper)")
    if d.get("hard_negatives", 0) < acc["hard_negatives"]:
        changes.append("a hard negative per pair (the paper's triplets)")
    if d.get("passage_max_length", 0) < acc["passage_max_length"]:
        changes.append("untruncated answer sentences")
    if t.get("num_steps", 0) < acc["num_steps"]:
        changes.append("many more steps")
    setting = (f"{ACCELERATOR_CONFIGS}: batch {acc['global_batch_size']}, "
               f"{acc['hard_negatives']} same-paragraph hard negative per pair, passages up to "
               f"{acc['passage_max_length']} tokens, bfloat16 matmuls, the paper's learning "
               f"rate, the lowest-dev-loss checkpoint, `hf:` weights")
    if not changes:
        return (f"These runs already have the batch, passage length and step budget of the "
                f"GPU/TPU configs ({setting}).")
    return (f"A GPU/TPU run ({setting}) changes {count(len(changes), 'thing')} this CPU budget "
            f"cannot: {and_list(changes)}. The same driver runs it: `--config.model.spec=hf:<dir> "
            f"--config.data.global_batch_size={acc['global_batch_size']} ...` on "
            f"configs/tradeoff.py; the comparison and its statistics are unchanged.")


def how_it_was_run(p: Page) -> list[str]:
    """The budget (from the experiment's config), the grid's total wall time, and what a larger
    accelerator run would change."""
    a = p.analysis
    total, config = a.total_wall_seconds, a.config
    lines = ["## How it was run", ""]
    if config:
        t, d, o, e = (config.get(s, {}) for s in ("train", "data", "optim", "eval"))
        lines.append(
            f"Every trained run: {t.get('num_steps')} steps of global batch "
            f"{d.get('global_batch_size')} ({negatives_phrase(config)}), queries cut at "
            f"{d.get('query_max_length')} and passages at {d.get('passage_max_length')} tokens, "
            f"AdamW lr {o.get('learning_rate')} (warm-up {o.get('warmup_steps')}, "
            f"{o.get('schedule')} decay), weight decay {o.get('weight_decay')}, word-embedding "
            f"table {'frozen' if o.get('freeze_word_embeddings') else 'trained'}, model "
            f"`{config.get('model', {}).get('spec')}`; evaluation encodes up to "
            f"{e.get('max_length')} tokens with {e.get('search')} search.")
    return lines + ["", f"Total wall time of these {len(a.runs)} runs (training, evaluation, "
                    f"model loading and compilation, every session): **{total / 3600:.2f} h** "
                    f"({duration(total)}).", "", _accelerator(config), ""]


def runs(p: Page) -> list[str]:
    a, link = p.analysis, p.link
    L = ["## Runs", "", "Wall time from each run's timing.json (all invocations, including "
         "model loading, compilation and the final evaluation); steps/s is the training "
         "rate logged in metrics.jsonl.", ""]
    rows = [a.timing[r.name] for rs in a.groups.values() for r in rs]
    return L + [runs_table(rows, RUNS_TABLE, link), "",
                f"![curves]({link(figures_pooled.files(a)['curves'])})", "",
                f"Machine-readable: [comparisons.json]({link('comparisons.json')}), "
                f"[summary.json]({link('summary.json')})"
                + (f", [config.json]({link('config.json')})" if a.config is not None else "")
                + ".", ""]


# The first edition's page, top to bottom.
SECTIONS = (header, answer, results, sweep, paper, how_it_was_run, runs)
