"""Dev-selected checkpoints: score the model on the dev fold every `train.select_every` steps and
keep the best step's params beside the latest checkpoint (`ckpt:<workdir>@best` loads them).

  train.select = 'loss'  the contrastive loss (in-batch negatives, plus the run's hard negatives
                         when they do not need mining) on `train.select_batches` fixed dev
                         batches of `train.select_batch_size` pairs (0: the training batch
                         size), drawn by the run's own sampler from the dev articles: the
                         paper's rule (lowest validation loss); deterministic (no dropout).
                         The dev batches are the same at every selection, so the scores of one
                         run are comparable; across batch sizes they are not
  train.select = 'map'   mean of mono, cross and multi macro mAP@k on the dev articles
                         (LAReQA formats only); each of the three is logged too
                         (select/mono, select/cross, select/multi)
  train.select = 'none'  no selection (default): the final evaluation uses the last step

With `train.select_per_query` (select='map' only) each scoring's per-query dev scores of the mono
setting (the rows of `pool=<Y>` in language Y, per_query.py) go to
<workdir>/select/step_<n>/per_query.npz: the data a power analysis needs from a pilot.

With `train.select_at_start` the starting model is scored too, before the first update (step 0),
and is a candidate like any other step: when no trained step beats it, the selected step is 0 and
the final evaluation scores the starting weights.

The dev fold is cut by the run's own fold rule (data.split_seed / split_sizes), so it is disjoint
from the training and test articles.  Scores and the selected step go to metrics.jsonl
(select/score, select/best_step) and <workdir>/best/<step>/meta.json (checkpoints.BestKeeper).
"""
from __future__ import annotations

import copy
import pathlib

import jax
import numpy as np

from hybrid_jax.errors import InputError
from hybrid_jax.train import losses
from hybrid_jax.train.checkpoints import BestKeeper

DEV_SEED = 0  # the same dev batches for every run and seed of a grid
MAP_SETTINGS = ("mono", "cross", "multi")  # what train.select='map' averages (and logs apart)


class DevScorer:
    """The dev fold of a run and how to score a model on it: lower is better."""

    def __init__(self, config, pretrained):
        self.config, self.metric = config, str(config.train.select)
        self.parts: dict[str, float] = {}  # 'map': the last score's mono / cross / multi mAP@k
        if self.metric == "loss":
            self.batches = dev_loss_batches(config, pretrained)
        else:
            self.spec = {"name": "dev", "type": "lareqa", "path": config.data.dataset_dir,
                         "fold": "dev", "languages": tuple(config.data.languages)}

    def score(self, bundle, loss_params, per_query_dir=None) -> float:
        """`per_query_dir` (select='map'): where this scoring's mono per-query table goes."""
        if self.metric == "loss":
            scale = float(losses.logit_scale(loss_params, self.config.loss))
            return dev_loss(bundle, self.batches, scale, bool(self.config.loss.symmetric))
        from hybrid_jax.data.splits import FoldRule
        from hybrid_jax.evaluation import run as eval_run

        cfg = dict(eval_run.resolve_config(self.config.eval), plots=False, progress=False,
                   cache=False, save_embeddings=False)
        out = eval_run.evaluate(bundle, [self.spec], "", cfg, write=False,
                                folds=FoldRule.from_config(self.config.data))
        m = out["datasets"]["dev"]
        if per_query_dir is not None and jax.process_index() == 0:
            save_mono_tables(pathlib.Path(per_query_dir), out["per_query"]["dev"])
        k = int(cfg["k"])
        self.parts = {s: float(m[s]["macro"][f"map@{k}"]) for s in MAP_SETTINGS}
        return -float(np.mean([self.parts[s] for s in MAP_SETTINGS]))


def save_mono_tables(directory: pathlib.Path, groups: dict) -> None:
    """per_query.npz of the mono rows only (a few KB where all settings take MBs)."""
    from hybrid_jax.evaluation import per_query

    mono = {}
    for name, table in groups.items():
        if name.startswith("pool="):
            keep = table["lang"] == name[len("pool="):]
            mono[name] = per_query.select(table, keep)
    directory.mkdir(parents=True, exist_ok=True)
    per_query.save(directory / "per_query.npz", mono)


def dev_loss_batches(config, pretrained, workdir=None) -> list[dict]:
    """`train.select_batches` tokenized global batches of the dev fold (one host's view: every
    process scores the whole dev set on its own devices), from the training batches' own path
    (pipeline.make_batch_source: the prepared corpus the run reads, found in `workdir`'s cache or
    wherever this process resolved it)."""
    from hybrid_jax.data import pipeline

    dev = copy.deepcopy(config.data)
    dev.train_fold, dev.seed, dev.train_fraction = "dev", DEV_SEED, 1.0
    dev.global_batch_size = int(config.train.select_batch_size) or int(dev.global_batch_size)
    if dev.negative_source == "mined":
        dev.hard_negatives = 0  # mined negatives exist for the training fold only
    steps = int(config.train.select_batches)
    try:
        source = pipeline.make_batch_source(
            dev, pretrained.tokenizer, (pretrained.prefixes.get("query", ""),
                                        pretrained.prefixes.get("passage", "")),
            num_steps=steps, workdir=workdir, tokenizer_spec=str(config.model.spec))
    except InputError as e:
        if not str(e).startswith(("data.global_batch_size", "data.languages")):
            raise
        raise InputError(f"train.select='loss': the dev fold cannot fill a batch of "
                         f"{dev.global_batch_size} ({e}); set a smaller "
                         f"train.select_batch_size, give it more articles (data.split_sizes) "
                         f"or use train.select='map'") from e
    return [source[step] for step in range(steps)]


def dev_loss(bundle, batches: list[dict], scale: float, symmetric: bool = False) -> float:
    """Mean training loss (losses.contrastive_loss on one device) over the dev batches: each
    query against its batch's passages and valid hard negatives, without dropout."""
    q_fn, p_fn = bundle.apply_fn("query"), bundle.apply_fn("passage")
    total = 0.0
    for b in batches:
        q = q_fn(bundle.params, b["query_ids"], b["query_mask"])
        p = p_fn(bundle.params, b["passage_ids"], b["passage_mask"])
        negatives = {}
        if "negative_ids" in b:
            ids, mask = b["negative_ids"], b["negative_mask"]
            negatives = dict(negative_emb=p_fn(bundle.params, ids.reshape(-1, ids.shape[-1]),
                                               mask.reshape(-1, mask.shape[-1])),
                             negative_valid=b["negative_valid"])
        loss, _ = losses.contrastive_loss(q, p, scale=scale, symmetric=symmetric, **negatives)
        total += float(loss)
    return total / len(batches)


class Selector:
    """The run's dev scorer and best keeper together: `offer` is one selection round."""

    def __init__(self, config, pretrained, workdir: str):
        self.scorer = DevScorer(config, pretrained)
        self.keeper = BestKeeper(workdir, self.scorer.metric)
        self.per_query_root = (pathlib.Path(workdir) / "select"
                               if config.train.get("select_per_query", False) else None)

    def offer(self, step: int, bundle, trainable, writer) -> None:
        """Scores `bundle` (the current params), keeps `trainable` if best, logs both."""
        where = self.per_query_root and self.per_query_root / f"step_{step}"
        score = self.scorer.score(bundle, trainable.get("loss", {}), where)
        kept = self.keeper.offer(step, score, trainable)
        parts = {f"select/{s}": v for s, v in self.scorer.parts.items()}
        writer.write(step, {"select/score": score, "select/best_step": self.keeper.step,
                            "select/best_score": self.keeper.score, **parts})
        if jax.process_index() == 0:
            shown = -score if self.scorer.metric == "map" else score
            apart = "".join(f", {s} {v:.4f}" for s, v in self.scorer.parts.items())
            print(f"step {step}: dev {self.scorer.metric} {shown:.4f}{apart}"
                  + (" (best so far, kept)" if kept else
                     f" (best: step {self.keeper.step})"), flush=True)
