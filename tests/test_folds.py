"""One fold rule for training and evaluation: under any split seed / sizes, no dev or test question
(or its answer sentence in any language) is a training example, for XQuAD-R and MLQA-R."""
import pytest

from hybrid_jax.data import pipeline, splits
from hybrid_jax.evaluation import run as eval_run

SETTINGS = [(0, None), (1, None), (3, (0.5, 0.25, 0.25)), (7, (0.6, 0.1, 0.3))]


def _training(dataset_dir, seed, sizes):
    cfg = pipeline.default_config()
    cfg.update(dict(dataset_dir=str(dataset_dir), train_fold="train", split_seed=seed,
                    split_sizes=sizes))
    examples = pipeline.load_training_examples(cfg)
    texts = {t for e in examples for t in (*e.queries.values(), *e.passages.values())}
    return cfg, {e.key for e in examples}, texts


@pytest.mark.parametrize("name,languages", [("xquad-r", None), ("xquad-r", ("de", "zh")),
                                            ("mlqa-r", None), ("mlqa-r", ("de", "es"))])
def test_eval_folds_hold_no_training_question_or_answer(shared_data, name, languages):
    full = eval_run.load_dataset({"name": name, "type": name, "path": str(shared_data / name)})
    text_of = {c.uid: c.text for c in full.candidates}
    for seed, sizes in SETTINGS:
        cfg, train_qids, train_texts = _training(shared_data / name, seed, sizes)
        rule = splits.FoldRule.from_config(cfg)
        for fold in ("dev", "test"):
            spec = {"name": f"{name}-{fold}", "type": name, "path": str(shared_data / name),
                    "fold": fold, "languages": languages}
            held_out = eval_run.load_dataset(spec, rule)
            assert held_out.questions, (seed, sizes, fold)
            if languages:
                assert set(held_out.languages) == set(languages)
            qids = {q.qid for q in held_out.questions}
            assert not qids & train_qids, (seed, sizes, fold, len(qids & train_qids))
            # the answer sentences in every language, not only the loaded ones
            answers = {text_of[q.answer_uid] for q in full.questions if q.qid in qids}
            assert not answers & train_texts, (seed, sizes, fold)


def test_mlqa_r_units_do_not_depend_on_loaded_languages(shared_data):
    """Folds cut on a language subset would link fewer articles (MLQA-R titles differ per
    language): the subset's fold must equal the full fold restricted to those languages."""
    path = str(shared_data / "mlqa-r")
    rule = splits.FoldRule(seed=2)
    full = eval_run.load_dataset({"name": "m", "type": "mlqa-r", "path": path, "fold": "test"},
                                 rule)
    sub = eval_run.load_dataset({"name": "m", "type": "mlqa-r", "path": path, "fold": "test",
                                 "languages": ["de", "hi"]}, rule)
    assert {(q.qid, q.language) for q in sub.questions} == {
        (q.qid, q.language) for q in full.questions if q.language in ("de", "hi")}


def test_mlqa_r_official_counts(shared_data):
    ds = eval_run.load_dataset({"name": "mlqa-r", "type": "mlqa-r",
                                "path": str(shared_data / "mlqa-r")})
    assert (len(ds.questions), len(ds.candidates)) == (4199, 20534)
