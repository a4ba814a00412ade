"""Training data formats by name (`config.data.format`): each reads the examples of one fold.

    @data_format("my_format", negative_sources=("from_data",))
    def load_my_format(cfg) -> list[ParallelExample]:   # the examples of fold cfg.train_fold
        ...

A format registered in a new module is usable as soon as that module is imported. The built-in
ones are defined here, so they are registered whenever the pipeline looks one up.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

from hybrid_jax.data import examples as examples_lib
from hybrid_jax.data import pairs_jsonl, splits
from hybrid_jax.registry import Registry

FORMATS = Registry("data.format")


@dataclasses.dataclass(frozen=True)
class Format:
    load: Callable                    # cfg (config.data) -> examples of fold cfg.train_fold
    negative_sources: tuple = ()      # non-mined negative sources its examples carry
    # The format whose negatives it carries, when that depends on the data (a tfds dataset is
    # prepared from another format); None: the format itself.
    carried_from: Callable | None = None

    def source_of(self, cfg) -> str:
        return self.carried_from(cfg) if self.carried_from else str(cfg.format)

    def carries(self, cfg, source: str) -> bool:
        name = self.source_of(cfg)
        fmt = self if not self.carried_from else (FORMATS.get(name) if name in FORMATS else None)
        return fmt is not None and source in fmt.negative_sources


def data_format(name: str, *, negative_sources: tuple = (), carried_from=None):
    """Decorator: register `load(cfg)` as data format `name`."""
    def add(load):
        FORMATS.register(name)(Format(load, tuple(negative_sources), carried_from))
        return load
    return add


def formats_carrying(source: str) -> tuple[str, ...]:
    return tuple(n for n in FORMATS.names() if source in FORMATS.get(n).negative_sources)


def _lareqa_examples(cfg, plain: bool) -> list[examples_lib.ParallelExample]:
    where = pathlib.Path(cfg.dataset_dir)
    if cfg.download:
        from hybrid_jax.data import download
        download.ensure_files(where.parent, where.name, cfg.languages or None)
    # All languages: the sampler restricts to cfg.languages after the split.
    dataset = splits.load_lareqa_fold(where, cfg.train_fold, splits.FoldRule.from_config(cfg),
                                      plain=plain)
    return examples_lib.from_lareqa(dataset)


@data_format("lareqa", negative_sources=("same_paragraph",))
def load_lareqa(cfg):
    """A LAReQA JSON folder (<lang>.json: XQuAD-R, MLQA-R)."""
    return _lareqa_examples(cfg, plain=False)


@data_format("xquad_plain", negative_sources=("same_paragraph",))
def load_xquad_plain(cfg):
    """A plain XQuAD folder (xquad.<lang>.json), sentences split here."""
    return _lareqa_examples(cfg, plain=True)


@data_format("pairs_jsonl", negative_sources=("from_data",))
def load_pairs(cfg):
    """A parallel-pairs JSONL file."""
    examples = pairs_jsonl.load_pairs_jsonl(pathlib.Path(cfg.dataset_dir))
    return splits.FoldRule.from_config(cfg).examples(examples, cfg.train_fold)


def tfds_source_format(cfg) -> str:
    """'lareqa' for tfds_name 'hybrid_parallel_examples/lareqa[:version]'."""
    parts = str(cfg.tfds_name).split(":")[0].split("/")
    return parts[1] if len(parts) > 1 else parts[0]


@data_format("tfds", carried_from=tfds_source_format)
def load_tfds(cfg):
    """An array_record dataset prepared by tfds_builders.prepare (read without TensorFlow)."""
    from hybrid_jax.data import tfds_builders  # tensorflow_datasets: imported only when used

    examples = tfds_builders.read_examples(cfg.tfds_name, pathlib.Path(cfg.dataset_dir))
    return splits.FoldRule.from_config(cfg).examples(examples, cfg.train_fold)
