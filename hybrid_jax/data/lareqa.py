"""LAReQA-style retrieval data: questions, candidate sentences and cross-language relevance.

Two SQuAD-derived sources share one in-memory shape, `LareqaDataset`:
  * LAReQA JSON (XQuAD-R, MLQA-R): `<lang>.json`, SQuAD JSON plus `sentences` and
    `sentence_breaks` per paragraph (`load_lareqa`);
  * plain XQuAD: `xquad.<lang>.json`, sentences split by `sentences.split_sentences`
    (`load_xquad_plain`).
A question's positive in language L is the sentence of L's paragraph whose span holds the answer
start; its relevant set (LAReQA) is that sentence in every language where the question id exists.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Iterable, Sequence

from hybrid_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class Candidate:
    uid: str  # "<lang>/<title>/<para_idx>/<sent_idx>", unique across languages
    language: str
    text: str
    # "<title>/<para_idx>/<sent_idx>". Parallel copies share it only where the translations were
    # segmented into the same number of sentences, which XQuAD-R does not guarantee (th has 852
    # sentences, de 1276); the training sampler therefore dedupes through the question ids that
    # link translations (see sampler.py).
    sentence_key: str
    article: str


@dataclasses.dataclass(frozen=True)
class Question:
    qid: str  # shared across languages
    language: str
    text: str
    article: str
    answer_uid: str  # Candidate.uid (same language) whose sentence holds the answer


@dataclasses.dataclass
class LareqaDataset:
    name: str
    questions: list[Question]
    candidates: list[Candidate]

    @property
    def languages(self) -> list[str]:
        return sorted({q.language for q in self.questions} | {c.language for c in self.candidates})

    @functools.cached_property
    def _answers_by_qid(self) -> dict[str, frozenset[str]]:
        out: dict[str, set[str]] = {}
        for q in self.questions:
            out.setdefault(q.qid, set()).add(q.answer_uid)
        return {k: frozenset(v) for k, v in out.items()}

    def relevant_uids(self, question: Question) -> frozenset[str]:
        """LAReQA relevance: the answer sentence of the same qid in every language it exists in."""
        return self._answers_by_qid[question.qid]

    def questions_in(self, language: str) -> list[Question]:
        return [q for q in self.questions if q.language == language]

    def candidates_in(self, language: str) -> list[Candidate]:
        return [c for c in self.candidates if c.language == language]


# ----------------------------------------------------------------------------------------------
# Loaders

def load_lareqa(directory, languages: Sequence[str] | None = None,
                name: str | None = None) -> LareqaDataset:
    """Read `<directory>/<lang>.json` for each language (all `*.json` there when None)."""
    directory = pathlib.Path(directory)
    files = _language_files(directory, languages, prefix="", suffix=".json")
    questions, candidates = [], []
    for lang, path in files.items():
        for title, p_idx, paragraph, where in _paragraphs(path):
            sentences, spans = _given_sentences(paragraph, where)
            _add_paragraph(lang, title, p_idx, paragraph, sentences, spans, where,
                           questions, candidates)
    return _finish(name or directory.name, questions, candidates)


def load_xquad_plain(directory, languages: Sequence[str] | None = None) -> LareqaDataset:
    """Read plain XQuAD `<directory>/xquad.<lang>.json`, splitting paragraphs into sentences
    with the rule-based `sentences.split_sentences` (same candidate shape as XQuAD-R)."""
    from hybrid_jax.data.sentences import sentence_spans

    directory = pathlib.Path(directory)
    files = _language_files(directory, languages, prefix="xquad.", suffix=".json")
    questions, candidates = [], []
    for lang, path in files.items():
        for title, p_idx, paragraph, where in _paragraphs(path):
            context = _field(paragraph, "context", str, where)
            spans = sentence_spans(context)
            sentences = [context[b:e] for b, e in spans]
            _add_paragraph(lang, title, p_idx, paragraph, sentences, spans, where,
                           questions, candidates)
    return _finish(f"{directory.name}-plain", questions, candidates)


# ----------------------------------------------------------------------------------------------
# Helpers

def _language_files(directory: pathlib.Path, languages, prefix: str, suffix: str):
    if not directory.is_dir():
        raise InputError(f"{directory}: data directory does not exist")
    available = {p.name[len(prefix):-len(suffix)]: p for p in sorted(directory.glob(f"{prefix}*{suffix}"))}
    if languages is None:
        if not available:
            raise InputError(f"{directory}: no {prefix}<lang>{suffix} files")
        return available
    missing = [l for l in languages if l not in available]
    if missing:
        raise InputError(f"{directory}: language(s) {missing} requested but no "
                         f"{prefix}<lang>{suffix} file for them (available: {sorted(available)})")
    return {l: available[l] for l in sorted(set(languages))}


def _paragraphs(path: pathlib.Path) -> Iterable[tuple[str, int, dict, str]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: malformed JSON ({e})") from e
    data = _field(doc, "data", list, str(path)) if isinstance(doc, dict) else None
    if data is None:
        raise InputError(f"{path}: expected a JSON object with a 'data' list")
    for a_idx, article in enumerate(data):
        where = f"{path}: data[{a_idx}]"
        title = _field(article, "title", str, where)
        for p_idx, paragraph in enumerate(_field(article, "paragraphs", list, where)):
            yield title, p_idx, paragraph, f"{where} ({title!r}) paragraphs[{p_idx}]"


def _field(obj, key: str, kind, where: str):
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(f"{where}: missing key {key!r}")
    if not isinstance(obj[key], kind):
        raise InputError(f"{where}: {key!r} should be a {kind.__name__}, got {type(obj[key]).__name__}")
    return obj[key]


def _given_sentences(paragraph: dict, where: str):
    sentences = _field(paragraph, "sentences", list, where)
    spans = _field(paragraph, "sentence_breaks", list, where)
    if len(sentences) != len(spans):
        raise InputError(f"{where}: {len(sentences)} sentences but {len(spans)} sentence_breaks")
    try:
        spans = [(int(b), int(e)) for b, e in spans]
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: sentence_breaks must be [start, end] pairs ({e})") from e
    return sentences, spans


def _add_paragraph(lang, title, p_idx, paragraph, sentences, spans, where, questions, candidates):
    uids = [f"{lang}/{title}/{p_idx}/{s}" for s in range(len(sentences))]
    # Identical sentence texts in one paragraph stay distinct candidates (keyed by index).
    for s, text in enumerate(sentences):
        candidates.append(Candidate(uids[s], lang, text, f"{title}/{p_idx}/{s}", title))
    for q_idx, qa in enumerate(_field(paragraph, "qas", list, where)):
        q_where = f"{where} qas[{q_idx}]"
        qid = _field(qa, "id", str, q_where)
        answers = _field(qa, "answers", list, q_where)
        if not answers:
            raise InputError(f"{q_where} (id {qid}): no answers")
        start = _field(answers[0], "answer_start", int, f"{q_where} answers[0]")
        # Spans are [start, end); an answer starting on the gap after a sentence is not inside it.
        hits = [s for s, (b, e) in enumerate(spans) if b <= start < e]
        if not hits:
            raise InputError(f"{q_where} (id {qid}): answer_start {start} lies outside every "
                             f"sentence span {spans}")
        questions.append(Question(qid, lang, _field(qa, "question", str, q_where), title,
                                  uids[hits[0]]))


def _finish(name, questions, candidates) -> LareqaDataset:
    seen = set()
    for q in questions:
        if (q.qid, q.language) in seen:
            raise InputError(f"{name}: question id {q.qid!r} appears twice in language {q.language!r}")
        seen.add((q.qid, q.language))
    return LareqaDataset(name, questions, candidates)
