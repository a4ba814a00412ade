"""TFDS builders that store parallel training examples as array_record files (no TensorFlow).

Prepare once (`prepare(...)`), then every host reads the same files with `tfds.data_source`
(random access, array_record); the training pipeline (pipeline.py) then runs on grain. One record per ParallelExample:
  key, article                     text
  query_languages, queries         parallel text sequences (language i <-> text i)
  passage_languages, passages      parallel text sequences
  negative_languages, negatives    parallel text sequences, one entry per candidate hard negative
                                   (a language repeats for each of its negatives, in order)
Configs (the source format): `lareqa` (a LAReQA JSON directory: XQuAD-R, MLQA-R),
`xquad_plain` (plain XQuAD directory, own sentence splitting), `pairs_jsonl` (a JSONL file).
The source path is a builder argument (`source=`); readers never need it. A single split 'all'
is written; article folds are applied after reading (splits.split_examples), so fold settings can
change without rebuilding.
"""
from __future__ import annotations

import pathlib

import numpy as np  # noqa: F401  (tfds feature dtypes)
import tensorflow_datasets as tfds
from etils import epath

from hybrid_jax.data.examples import ParallelExample
from hybrid_jax.errors import InputError

NAME = "hybrid_parallel_examples"
SPLIT = "full"


class HybridParallelExamples(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.1.0": "Candidate hard negatives per language.",
                     "1.0.0": "Queries and positive passages."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="lareqa", description="LAReQA JSON directory (<lang>.json)"),
        tfds.core.BuilderConfig(name="xquad_plain", description="plain XQuAD (xquad.<lang>.json)"),
        tfds.core.BuilderConfig(name="pairs_jsonl", description="parallel-pairs JSONL file"),
    ]

    # tfds 4.9.10 locates a builder's code through `importlib_resources` (not installed) for any
    # builder living in a package; the module file is all it needs.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return epath.Path(__file__)

    def __init__(self, *, source=None, languages=None, **kwargs):
        self._source, self._languages = source, languages
        super().__init__(**kwargs)

    def _info(self):
        text = tfds.features.Text()
        seq = tfds.features.Sequence(tfds.features.Text())
        return tfds.core.DatasetInfo(
            builder=self,
            description="Parallel (query, positive passage) examples for hybrid-batch training.",
            features=tfds.features.FeaturesDict({
                "key": text, "article": text, "query_languages": seq, "queries": seq,
                "passage_languages": seq, "passages": seq,
                "negative_languages": seq, "negatives": seq}))

    def _split_generators(self, dl_manager):
        if self._source is None:
            raise InputError(f"{NAME}/{self.builder_config.name}: preparing needs source=<path>")
        return {SPLIT: self._generate_examples(self._read_source())}

    def _read_source(self) -> list[ParallelExample]:
        from hybrid_jax.data import examples as examples_lib, lareqa, pairs_jsonl

        fmt = self.builder_config.name
        if fmt == "pairs_jsonl":
            return pairs_jsonl.load_pairs_jsonl(self._source)
        load = lareqa.load_lareqa if fmt == "lareqa" else lareqa.load_xquad_plain
        return examples_lib.from_lareqa(load(self._source, self._languages))

    def _generate_examples(self, examples):
        for e in examples:
            ql, pl = sorted(e.queries), sorted(e.passages)
            nl = [l for l in sorted(e.negatives) for _ in e.negatives[l]]
            yield e.key, {"key": e.key, "article": e.article,
                          "query_languages": ql, "queries": [e.queries[l] for l in ql],
                          "passage_languages": pl, "passages": [e.passages[l] for l in pl],
                          "negative_languages": nl,
                          "negatives": [t for l in sorted(e.negatives) for t in e.negatives[l]]}


def prepare(fmt: str, source, data_dir, languages=None) -> str:
    """Write the array_record dataset for `source` under `data_dir` (a no-op when it exists);
    returns the tfds name to read it back with."""
    if fmt not in {c.name for c in HybridParallelExamples.BUILDER_CONFIGS}:
        raise InputError(f"tfds config {fmt!r}: expected lareqa, xquad_plain or pairs_jsonl")
    builder = HybridParallelExamples(config=fmt, source=str(source), languages=languages,
                                     data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(file_format="array_record")
    return f"{NAME}/{fmt}"


def data_source(name: str, data_dir):
    """The random-access array_record source of a prepared dataset (e.g. NAME + '/lareqa')."""
    base = pathlib.Path(data_dir) / name.split(":")[0]
    if not base.exists():
        raise InputError(f"{data_dir}: no prepared tfds dataset {name!r} "
                         f"(run hybrid_jax.data.tfds_builders.prepare first)")
    version = name.split(":")[1] if ":" in name else str(HybridParallelExamples.VERSION)
    if not (base / version).is_dir():
        found = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise InputError(f"{base}: prepared at version {', '.join(found) or 'none'}, but this "
                         f"code reads {version}; run hybrid_jax.data.tfds_builders.prepare again")
    return tfds.data_source(name, data_dir=str(data_dir), split=SPLIT, download=False)


def decode(record: dict) -> ParallelExample:
    def texts(values):
        return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]

    negatives: dict[str, list[str]] = {}
    for lang, text in zip(texts(record["negative_languages"]), texts(record["negatives"])):
        negatives.setdefault(lang, []).append(text)
    return ParallelExample(
        texts([record["key"]])[0], texts([record["article"]])[0],
        dict(zip(texts(record["query_languages"]), texts(record["queries"]))),
        dict(zip(texts(record["passage_languages"]), texts(record["passages"]))),
        {l: tuple(v) for l, v in negatives.items()})


def read_examples(name: str, data_dir) -> list[ParallelExample]:
    """All examples of a prepared dataset, sorted by key (tfds shuffles records on write).

    The sampler needs every example's passages up front (for deduplication), so the records are
    read once here; a plain loop over the random-access source is ~7x faster than iterating a
    grain MapDataset over it (whose default read options start 16 threads)."""
    source = data_source(name, data_dir)
    return sorted((decode(source[i]) for i in range(len(source))), key=lambda e: e.key)
