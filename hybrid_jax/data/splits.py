"""Deterministic article-level train/dev/test folds, so evaluation can use unseen articles.

Unit: an article. In XQuAD-R titles are shared by all languages, so a unit is one title with its
11 translations. In MLQA-R each language has its own articles; articles linked by a shared
question id are one unit (connected components), so no translation of a test question or of its
answer sentence can land in training.
Assignment: units are ordered by SHA-256 of "<seed>/<unit name>" and cut into consecutive
train / dev / test blocks of the requested sizes. `sizes` is either three counts that sum to the
number of units, or three fractions that sum to 1 (default 2/3, 1/12, 1/4: 32 / 4 / 12 of
XQuAD-R's 48 articles). Fold 'all' is the whole dataset (zero-shot evaluation).

One `FoldRule` (from `data.split_seed` / `data.split_sizes`) decides the folds for training, dev
selection and evaluation alike, always on every language of the dataset: units computed on a
subset of MLQA-R's languages would link fewer articles and move questions between folds.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterable, Optional, Sequence

from hybrid_jax.data.lareqa import LareqaDataset, load_lareqa, load_xquad_plain
from hybrid_jax.errors import InputError

FOLDS = ("train", "dev", "test")
DEFAULT_SIZES = (2 / 3, 1 / 12, 1 / 4)


def fold_sizes(n_units: int, sizes=None) -> tuple[int, int, int]:
    sizes = tuple(DEFAULT_SIZES if sizes is None else sizes)
    if len(sizes) != 3 or any(s < 0 for s in sizes):
        raise InputError(f"data.split_sizes: need three non-negative sizes (train, dev, test), got {sizes}")
    if all(float(s).is_integer() and s >= 1 or s == 0 for s in sizes) and sum(sizes) > 1:
        if sum(sizes) != n_units:
            raise InputError(f"data.split_sizes: counts {sizes} sum to {sum(sizes)}, "
                             f"but there are {n_units} articles")
        return tuple(int(s) for s in sizes)
    if abs(sum(sizes) - 1) > 1e-6:
        raise InputError(f"data.split_sizes: fractions {sizes} must sum to 1")
    train, dev = round(n_units * sizes[0]), round(n_units * sizes[1])
    return train, dev, n_units - train - dev


def assign_folds(units: Iterable[str], seed: int = 0, sizes=None) -> dict[str, str]:
    """unit name -> 'train' | 'dev' | 'test'."""
    units = sorted(set(units))
    order = sorted(units, key=lambda u: hashlib.sha256(f"{seed}/{u}".encode()).hexdigest())
    n_train, n_dev, _ = fold_sizes(len(units), sizes)
    return {u: ("train" if i < n_train else "dev" if i < n_train + n_dev else "test")
            for i, u in enumerate(order)}


def article_units(dataset) -> dict[tuple[str, str], str]:
    """(language, title) -> unit name: connected components of articles sharing a question id."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_node_of_qid = {}
    for q in dataset.questions:
        node = (q.language, q.article)
        a, b = find(node), find(first_node_of_qid.setdefault(q.qid, node))
        if a != b:
            parent[a] = b
    for c in dataset.candidates:  # articles without questions are units of their own
        find((c.language, c.article))
    members: dict = {}
    for node in parent:
        members.setdefault(find(node), []).append(node)
    # Name a unit by its smallest title: in XQuAD-R that is simply the shared title.
    return {node: min(t for _, t in group) for group in members.values() for node in group}


def split_articles(dataset, fold: str, seed: int = 0, sizes=None):
    """The questions and candidates of `fold` of a LareqaDataset (see module doc)."""
    if fold == "all":
        return dataset
    _check_fold(fold)
    unit_of = article_units(dataset)
    fold_of = assign_folds(unit_of.values(), seed, sizes)
    keep = {node for node, unit in unit_of.items() if fold_of[unit] == fold}
    out = LareqaDataset(
        f"{dataset.name}:{fold}",
        [q for q in dataset.questions if (q.language, q.article) in keep],
        [c for c in dataset.candidates if (c.language, c.article) in keep])
    if not out.questions:
        raise InputError(f"{dataset.name}: fold {fold!r} is empty (split seed {seed}, sizes {sizes})")
    return out


def split_examples(examples: Sequence, fold: str, seed: int = 0, sizes=None) -> list:
    """The ParallelExamples of `fold`, with `example.article` as the unit."""
    if fold == "all":
        return list(examples)
    _check_fold(fold)
    fold_of = assign_folds((e.article for e in examples), seed, sizes)
    out = [e for e in examples if fold_of[e.article] == fold]
    if not out:
        raise InputError(f"fold {fold!r} is empty (split seed {seed}, sizes {sizes})")
    return out


def _check_fold(fold: str) -> None:
    if fold not in FOLDS:
        raise InputError(f"data.train_fold / fold: {fold!r} is not one of {FOLDS + ('all',)}")


@dataclasses.dataclass(frozen=True)
class FoldRule:
    """How articles are assigned to folds; the same rule must serve training, dev and test."""
    seed: int = 0
    sizes: Optional[tuple] = None

    @classmethod
    def from_config(cls, data_config) -> "FoldRule":
        """From `config.data` (split_seed, split_sizes)."""
        sizes = data_config.split_sizes
        return cls(int(data_config.split_seed), tuple(sizes) if sizes is not None else None)

    def articles(self, dataset: LareqaDataset, fold: str) -> LareqaDataset:
        return split_articles(dataset, fold, self.seed, self.sizes)

    def examples(self, examples: Sequence, fold: str) -> list:
        return split_examples(examples, fold, self.seed, self.sizes)


def load_lareqa_fold(directory, fold: str, rule: FoldRule, *, languages=None, plain: bool = False,
                     name: Optional[str] = None) -> LareqaDataset:
    """`fold` of a LAReQA folder (plain XQuAD when `plain`), split on all of its languages and
    then restricted to `languages` (None: all)."""
    full = (load_xquad_plain(directory) if plain else load_lareqa(directory, name=name))
    out = rule.articles(full, fold)
    if languages:
        languages = list(languages)
        missing = sorted(set(languages) - set(full.languages))
        if missing:
            raise InputError(f"{directory}: language(s) {missing} requested but not in the data "
                             f"(available: {full.languages})")
        keep = set(languages)
        out = LareqaDataset(out.name, [q for q in out.questions if q.language in keep],
                            [c for c in out.candidates if c.language in keep])
    if name:
        out.name = name
    return out
