"""Sources: LAReQA JSON, plain XQuAD, parallel-pairs JSONL, tfds array_record, downloads."""
import json
import shutil
import sys

import pytest

from hybrid_jax.data import download, examples as examples_lib, lareqa, pairs_jsonl, sentences
from hybrid_jax.errors import InputError

README_CANDIDATES = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244,
                     "ru": 1219, "th": 852, "tr": 1167, "vi": 1209, "zh": 1196}


@pytest.fixture(scope="module")
def xquad_r(shared_data):
    return lareqa.load_lareqa(shared_data / "xquad-r")


def test_xquad_r_counts_match_readme(xquad_r):
    assert xquad_r.languages == sorted(README_CANDIDATES)
    assert {l: len(xquad_r.candidates_in(l)) for l in xquad_r.languages} == README_CANDIDATES
    assert len(xquad_r.candidates) == 13014
    assert all(len(xquad_r.questions_in(l)) == 1190 for l in xquad_r.languages)
    assert len({c.uid for c in xquad_r.candidates}) == 13014  # repeated texts stay distinct
    assert len({c.article for c in xquad_r.candidates}) == 48


def test_xquad_r_positive_and_relevance(xquad_r):
    q = next(q for q in xquad_r.questions if q.qid == "56beb4343aeaaa14008c925b" and q.language == "en")
    text = {c.uid: c.text for c in xquad_r.candidates}
    assert "308" in text[q.answer_uid] and q.answer_uid.startswith("en/Super_Bowl_50/0/")
    rel = xquad_r.relevant_uids(q)
    assert len(rel) == 11 and {u.split("/")[0] for u in rel} == set(README_CANDIDATES)
    # the relevant set is shared by the question's copies in every language
    de = next(x for x in xquad_r.questions if x.qid == q.qid and x.language == "de")
    assert xquad_r.relevant_uids(de) == rel


def test_xquad_plain_split_finds_every_answer(shared_data):
    ds = lareqa.load_xquad_plain(shared_data / "xquad", ["en", "zh", "hi", "ar", "ro"])
    assert all(len(ds.questions_in(l)) == 1190 for l in ds.languages)
    text = {c.uid: c.text for c in ds.candidates}
    for q in ds.questions[:200]:  # the answer sentence holds (the start of) the answer
        assert text[q.answer_uid]
    # English splits close to the human breaks of XQuAD-R (1180 sentences)
    assert abs(len(ds.candidates_in("en")) - 1180) < 30


@pytest.mark.parametrize("text, expected", [
    ("Dr. Smith came. He left! Did he? Yes.", ["Dr. Smith came.", "He left!", "Did he?", "Yes."]),
    ("北京是首都。它很大！你去过吗？", ["北京是首都。", "它很大！", "你去过吗？"]),
    ("यह एक वाक्य है। यह दूसरा है।", ["यह एक वाक्य है।", "यह दूसरा है।"]),
    ("هذه جملة. هل هذه جملة؟ نعم", ["هذه جملة.", "هل هذه جملة؟", "نعم"]),
    ("กรุงเทพเป็นเมืองหลวง  ประเทศไทยสวยงาม", ["กรุงเทพเป็นเมืองหลวง", "ประเทศไทยสวยงาม"]),
    ("In 1990 the U.S. won 3.5 medals. Next.", ["In 1990 the U.S. won 3.5 medals.", "Next."]),
])
def test_sentence_splitter(text, expected):
    assert sentences.split_sentences(text) == expected
    for (b, e), s in zip(sentences.sentence_spans(text), expected):
        assert text[b:e] == s


def _squad(paragraphs, title="T"):
    return {"version": "1.1", "data": [{"title": title, "paragraphs": paragraphs}]}


def _para(sents, qas):
    context, breaks = "", []
    for s in sents:
        breaks.append([len(context), len(context) + len(s)])
        context += s + " "
    return {"context": context.strip(), "sentences": sents, "sentence_breaks": breaks,
            "qas": [{"id": qid, "question": q, "answers": [{"answer_start": start, "text": "x"}]}
                    for qid, q, start in qas]}


def test_mlqa_r_shaped_partial_parallelism(tmp_path):
    # en has q1..q3; de has q1, q2 in its own article; es has q3 only; articles differ per language.
    files = {
        "en": [_squad([_para(["A one.", "A two."], [("q1", "en q1", 0), ("q2", "en q2", 7)])], "EnA"),
               _squad([_para(["B one."], [("q3", "en q3", 0)])], "EnB")],
        "de": [_squad([_para(["De eins.", "De zwei."], [("q1", "de q1", 0), ("q2", "de q2", 9)])], "DeA")],
        "es": [_squad([_para(["Es uno."], [("q3", "es q3", 0)])], "EsB")],
    }
    for lang, docs in files.items():
        merged = {"version": "1.1", "data": [a for d in docs for a in d["data"]]}
        (tmp_path / f"{lang}.json").write_text(json.dumps(merged))
    ds = lareqa.load_lareqa(tmp_path, name="mlqa-r-mini")
    assert ds.languages == ["de", "en", "es"]
    q1_en = next(q for q in ds.questions if q.qid == "q1" and q.language == "en")
    assert ds.relevant_uids(q1_en) == {"en/EnA/0/0", "de/DeA/0/0"}
    q3_es = next(q for q in ds.questions if q.qid == "q3" and q.language == "es")
    assert ds.relevant_uids(q3_es) == {"en/EnB/0/0", "es/EsB/0/0"}
    ex = {e.key: e for e in examples_lib.from_lareqa(ds)}
    assert set(ex["q1"].queries) == {"en", "de"} and set(ex["q3"].passages) == {"en", "es"}
    # same-paragraph negatives: the paragraph's other sentences, in the positive's language
    assert ex["q1"].negatives == {"en": ("A two.",), "de": ("De zwei.",)}
    assert ex["q2"].negatives == {"en": ("A one.",), "de": ("De eins.",)}
    assert ex["q3"].negatives == {}  # one-sentence paragraphs have none
    # linked articles form one split unit: EnA with DeA, EnB with EsB
    from hybrid_jax.data import splits
    units = splits.article_units(ds)
    assert units[("de", "DeA")] == units[("en", "EnA")] != units[("es", "EsB")] == units[("en", "EnB")]


def test_bad_json_and_answer_outside_spans(tmp_path):
    (tmp_path / "en.json").write_text('{"data": [')
    with pytest.raises(InputError, match=r"en\.json: malformed JSON"):
        lareqa.load_lareqa(tmp_path)
    para = _para(["One.", "Two."], [("q1", "q?", 4)])  # offset 4 is the gap between sentences
    (tmp_path / "en.json").write_text(json.dumps(_squad([para])))
    with pytest.raises(InputError, match=r"en\.json.*q1.*answer_start 4 lies outside every sentence span"):
        lareqa.load_lareqa(tmp_path)
    del para["sentence_breaks"]
    (tmp_path / "en.json").write_text(json.dumps(_squad([para])))
    with pytest.raises(InputError, match=r"en\.json.*missing key 'sentence_breaks'"):
        lareqa.load_lareqa(tmp_path)


def test_requested_language_absent(shared_data):
    with pytest.raises(InputError, match=r"xquad-r.*\['xx'\] requested"):
        lareqa.load_lareqa(shared_data / "xquad-r", ["en", "xx"])


def test_pairs_jsonl_roundtrip_and_errors(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"id": "a", "query": {"en": "q", "de": "f"}, "passage": {"en": "p", "fr": "pp"}},
        {"id": "b", "query": {"en": "q2"}, "passage": {"en": "p2"}, "article": "X",
         "negatives": {"en": ["n1", "n2"], "de": "n3"}}]) + "\n")
    ex = pairs_jsonl.load_pairs_jsonl(path)
    assert [e.key for e in ex] == ["a", "b"] and ex[0].article == "a" and ex[1].article == "X"
    assert ex[0].passages == {"en": "p", "fr": "pp"}
    assert ex[0].negatives == {} and ex[1].negatives == {"en": ("n1", "n2"), "de": ("n3",)}
    out = tmp_path / "copy.jsonl"
    pairs_jsonl.write_pairs_jsonl(ex, out)
    assert pairs_jsonl.load_pairs_jsonl(out) == ex
    path.write_text('{"id": "a", "query": {"en": "q"}}\n')
    with pytest.raises(InputError, match=r"pairs\.jsonl:1: 'passage' must be"):
        pairs_jsonl.load_pairs_jsonl(path)
    path.write_text('{"id": "a", "query": {"en": "q"}, "passage": {"en": "p"}}\nnot json\n')
    with pytest.raises(InputError, match=r"pairs\.jsonl:2: malformed JSON"):
        pairs_jsonl.load_pairs_jsonl(path)


def test_checksums_match_shared_sums(shared_data):
    pinned = dict(reversed(line.split()) for line in (shared_data / "SHA256SUMS").read_text().splitlines())
    assert {k: v for k, v in pinned.items() if k.endswith(".json")} == download.SHA256
    assert download.ensure_files(shared_data, "mlqa-r", download=False) == shared_data / "mlqa-r"


def test_download_verification(shared_data, tmp_path):
    shutil.copy(shared_data / "xquad-r" / "en.json", tmp_path / "good.json")
    assert download.ensure_files(shared_data, "xquad-r", ["en", "de"], download=False) == shared_data / "xquad-r"
    # a corrupt local copy is refused
    (tmp_path / "xquad-r").mkdir()
    bad = tmp_path / "xquad-r" / "en.json"
    bad.write_bytes((shared_data / "xquad-r" / "en.json").read_bytes()[:-10] + b"corrupt!!}")
    with pytest.raises(InputError, match=r"en\.json: SHA-256 .* does not match the official xquad-r/en\.json"):
        download.ensure_files(tmp_path, "xquad-r", ["en"])
    bad.unlink()
    with pytest.raises(InputError, match=r"en\.json: missing \(download disabled\)"):
        download.ensure_files(tmp_path, "xquad-r", ["en"], download=False)

    def corrupt_fetch(url, target):
        assert url == "https://github.com/google-research-datasets/lareqa/raw/master/xquad-r/en.json"
        target.write_bytes(b"{}")

    with pytest.raises(InputError, match=r"lareqa/raw/master/xquad-r/en\.json \(downloaded for .*\): SHA-256"):
        download.ensure_files(tmp_path, "xquad-r", ["en"], fetch=corrupt_fetch)
    assert list((tmp_path / "xquad-r").iterdir()) == []  # nothing half-written is left

    def offline(url, target):
        raise OSError("network unreachable")

    with pytest.raises(InputError, match="downloading .* failed .*network unreachable"):
        download.ensure_files(tmp_path, "xquad-r", ["en"], fetch=offline)
    download.ensure_files(tmp_path, "xquad-r", ["en"],
                          fetch=lambda url, target: shutil.copy(tmp_path / "good.json", target))
    assert download.sha256_of(tmp_path / "xquad-r" / "en.json") == download.SHA256["xquad-r/en.json"]


def test_tfds_array_record_roundtrip_without_tensorflow(shared_data, tmp_path):
    from hybrid_jax.data import tfds_builders

    name = tfds_builders.prepare("lareqa", shared_data / "xquad-r", tmp_path)
    version = str(tfds_builders.HybridParallelExamples.VERSION)
    assert list((tmp_path / "hybrid_parallel_examples" / "lareqa" / version).glob("*.array_record-*"))
    read = tfds_builders.read_examples(name, tmp_path)
    expected = examples_lib.from_lareqa(lareqa.load_lareqa(shared_data / "xquad-r"))
    assert read == expected
    assert "tensorflow" not in sys.modules
    with pytest.raises(InputError, match="no prepared tfds dataset"):
        tfds_builders.read_examples(name, tmp_path / "elsewhere")
    (tmp_path / "old" / "hybrid_parallel_examples" / "lareqa" / "1.0.0").mkdir(parents=True)
    with pytest.raises(InputError, match=r"lareqa: prepared at version 1\.0\.0, but this code "
                                         r"reads 1\.1\.0; run .*prepare again"):
        tfds_builders.read_examples(name, tmp_path / "old")
