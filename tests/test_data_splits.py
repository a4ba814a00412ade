"""Article-level folds of XQuAD-R: disjoint, leakage-free, deterministic, configurable."""
import pytest

from hybrid_jax.data import examples as examples_lib, lareqa, splits
from hybrid_jax.errors import InputError


@pytest.fixture(scope="module")
def xquad_r(shared_data):
    return lareqa.load_lareqa(shared_data / "xquad-r")


@pytest.fixture(scope="module")
def folds(xquad_r):
    return {f: splits.split_articles(xquad_r, f) for f in ("train", "dev", "test")}


def test_folds_partition_articles(xquad_r, folds):
    articles = {f: {c.article for c in d.candidates} | {q.article for q in d.questions}
                for f, d in folds.items()}
    assert [len(articles[f]) for f in ("train", "dev", "test")] == [32, 4, 12]
    assert not (articles["train"] & articles["dev"] or articles["train"] & articles["test"]
                or articles["dev"] & articles["test"])
    assert sum(len(d.questions) for d in folds.values()) == len(xquad_r.questions)
    assert sum(len(d.candidates) for d in folds.values()) == len(xquad_r.candidates)
    # each fold keeps every language of its articles
    for d in folds.values():
        assert d.languages == xquad_r.languages
    assert splits.split_articles(xquad_r, "all") is xquad_r


def test_no_test_question_or_positive_in_train_in_any_language(folds):
    train, test = folds["train"], folds["test"]
    train_questions = {q.text for q in train.questions}
    train_sentences = {c.text for c in train.candidates}
    test_text = {c.uid: c.text for c in test.candidates}
    assert not {q.qid for q in train.questions} & {q.qid for q in test.questions}
    assert not train_questions & {q.text for q in test.questions}
    assert not train_sentences & {test_text[q.answer_uid] for q in test.questions}
    # and the training examples built from the fold carry none of them either
    train_examples = examples_lib.from_lareqa(train)
    seen = {t for e in train_examples for t in (*e.queries.values(), *e.passages.values())}
    assert not seen & ({q.text for q in test.questions} | {test_text[q.answer_uid] for q in test.questions})


def test_deterministic_and_seed_dependent(xquad_r, folds):
    again = splits.split_articles(xquad_r, "test")
    assert {q.article for q in again.questions} == {q.article for q in folds["test"].questions}
    other = splits.split_articles(xquad_r, "test", seed=1)
    assert {q.article for q in other.questions} != {q.article for q in folds["test"].questions}


def test_sizes_are_configurable(xquad_r):
    test = splits.split_articles(xquad_r, "test", sizes=(40, 0, 8))
    assert len({q.article for q in test.questions}) == 8
    assert splits.fold_sizes(48) == (32, 4, 12)
    assert splits.fold_sizes(10, (0.5, 0.2, 0.3)) == (5, 2, 3)
    with pytest.raises(InputError, match="split_sizes: counts .* sum to 47, but there are 48 articles"):
        splits.split_articles(xquad_r, "train", sizes=(32, 4, 11))


def test_example_split_matches_dataset_split(xquad_r, folds):
    all_examples = examples_lib.from_lareqa(xquad_r)
    for f, d in folds.items():
        assert splits.split_examples(all_examples, f) == examples_lib.from_lareqa(d)


def test_empty_fold_and_unknown_fold(xquad_r):
    with pytest.raises(InputError, match="fold 'dev' is empty"):
        splits.split_articles(xquad_r, "dev", sizes=(36, 0, 12))
    with pytest.raises(InputError, match="'valid' is not one of"):
        splits.split_articles(xquad_r, "valid")
