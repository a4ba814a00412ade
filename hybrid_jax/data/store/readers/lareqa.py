"""`lareqa:<dir>` (XQuAD-R / MLQA-R `<lang>.json`) and `xquad_plain:<dir>` (xquad.<lang>.json).

The examples are exactly hybrid_jax/data/examples.from_lareqa's on the whole folder: the same
order, each example's unit its split unit name (splits.article_units), and its negatives in a
language the other sentences of the positive's paragraph in sentence order. So the fold rule on
units.txt and the sampler see what they see today. These folders are small: read whole.
"""
from __future__ import annotations

from hybrid_jax.data import examples as examples_lib
from hybrid_jax.data.lareqa import load_lareqa, load_xquad_plain
from hybrid_jax.data.store.readers.base import READERS, Record, submit_all


@READERS.register("lareqa")
def read_lareqa(path: str, writer, options) -> None:
    submit_all(writer, _records(load_lareqa(path), path), options)


@READERS.register("xquad_plain")
def read_xquad_plain(path: str, writer, options) -> None:
    submit_all(writer, _records(load_xquad_plain(path), path), options)


def _records(dataset, path: str):
    for e in examples_lib.from_lareqa(dataset):
        yield Record(e.key, e.article, e.queries, e.passages, e.negatives,
                     f"{path}: question {e.key}")
