"""A small rule-based sentence splitter for plain XQuAD paragraphs (no sentence breaks given).

Rule: a sentence ends after a run of terminal punctuation (plus closing quotes/brackets) when
  * the mark is a full-width/script terminator that needs no following space: CJK `。！？`,
    Devanagari danda `।` / double danda `॥`, Arabic `؟` `۔`, Thai/Lao/Burmese/Khmer/Ethiopic
    sentence marks `๚ ။ ។ ።`, fullwidth `．！？`; or
  * the mark is `.`, `!`, `?`, `…` or Arabic `؟` followed by whitespace, and the token before a
    `.` is not a known abbreviation, an initial (single letter) or a number (`3.` in "1,3. 000").
Thai writes no sentence punctuation: a run of 2+ spaces between Thai characters ends a sentence,
and so does a single space after a Thai character when the next character is also Thai (Thai
separates sentences, and long clauses, with a space; this over-splits a little, which only yields
shorter candidates). Whitespace between sentences belongs to neither. Spans are [start, end).
"""
from __future__ import annotations

import re

_NO_SPACE_TERMINATORS = "。！？｡．\u0964\u0965\u06d4\u0e5a\u104b\u17d4\u1362"
_SPACE_TERMINATORS = ".!?…\u061f"
_CLOSERS = "\"'”’»)]}」』）》"
_ABBREVIATIONS = frozenset("""
mr mrs ms dr prof st jr sr vs etc e.g i.e no nos vol fig approx ca cf inc ltd co corp dept
gen col lt sgt rev hon jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k a.m p.m
bzw usw z.b d.h ggf sog nr hr sra srta av núm pág
""".split())
_END = re.compile(
    rf"[{re.escape(_NO_SPACE_TERMINATORS)}]+[{re.escape(_CLOSERS)}]*"
    rf"|[{re.escape(_SPACE_TERMINATORS)}]+[{re.escape(_CLOSERS)}]*(?=\s)"
    rf"|(?<=[\u0e00-\u0e7f])(?=\s+[\u0e00-\u0e7f])")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) character spans of the sentences of `text` (whitespace trimmed)."""
    spans, start = [], 0
    for m in _END.finditer(text):
        end = m.end()
        if m.group().startswith(".") and _is_abbreviation(text, m.start()):
            continue
        if _span_nonempty(text, start, end):
            spans.append(_trim(text, start, end))
        start = end
    if _span_nonempty(text, start, len(text)):
        spans.append(_trim(text, start, len(text)))
    return spans


def split_sentences(text: str) -> list[str]:
    return [text[b:e] for b, e in sentence_spans(text)]


def _is_abbreviation(text: str, dot: int) -> bool:
    word = re.search(r"(\S+)$", text[:dot])
    if word is None:
        return False
    token = word.group(1).lstrip("(\"'“‘«").lower()
    return (token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())
            or token.isdigit() and _next_is_lower_or_digit(text, dot))


def _next_is_lower_or_digit(text: str, dot: int) -> bool:
    rest = text[dot + 1:].lstrip()
    return bool(rest) and (rest[0].islower() or rest[0].isdigit())


def _span_nonempty(text, start, end) -> bool:
    return bool(text[start:end].strip())


def _trim(text, start, end) -> tuple[int, int]:
    while text[start].isspace():
        start += 1
    while text[end - 1].isspace():
        end -= 1
    return start, end
