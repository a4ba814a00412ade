"""A synthetic corpus of mMARCO's shape, written in mMARCO's layout (readers/mmarco.py), so the
real reader, the prepare step and its benchmark run without downloading anything.

N questions in L languages. Texts are Zipf-distributed word ids over a 30k-word vocabulary; each
language spells word w its own way (its own script), so the copies of a text in all languages are
word-for-word translations and tokenize to different ids. Question q's positive is passage q; its
K negatives are random other passages of a collection of N * (1 + K) passages, a `duplicates`
share of which repeat an earlier passage's text exactly (as MS MARCO's collection does).
"""
from __future__ import annotations

import contextlib
import pathlib

import numpy as np

from hybrid_jax.data.store.readers.mmarco import CODES, TRIPLES

NAMES = {code: name for name, code in CODES.items()}
LATIN = ("bcdfghjklmnprstvwz", "aeiou")
# (consonants, vowels) per language; a syllable is consonant + vowel (two consonants
# where the script writes no vowels), a word 1-4 syllables.
LETTERS = {"de": (LATIN[0], "aeiouäöü"), "fr": (LATIN[0], "aeiouéè"), "es": (LATIN[0], "aeioué"),
           "pt": (LATIN[0], "aeiouã"), "it": (LATIN[0], "aeiouà"),
           "ru": ("бвгдклмнпрстфхж", "аеиоуыя"), "el": ("βγδκλμνπρστφχ", "αεηιου"),
           "ar": ("بتثجحخدذرزسشصضطعغفقكلمنهو", ""), "hi": ("कखगघचजटडतदनपबमयरलवसह", "ािीुूेो"),
           "th": ("กขคงจชดตทนบปพมยรลวสห", "ะาิีุู")}
IDEOGRAPHS = {"zh": 0x4E00, "ja": 0x4E00}   # words of 1-2 common characters
VOCABULARY = 30_000
BLOCK = 10_000


def spelling(lang: str, seed: int) -> np.ndarray:
    """The language's word for each word id, shorter words for smaller (more frequent) ids."""
    rng = np.random.default_rng([seed, *lang.encode()])
    if lang in IDEOGRAPHS:
        pieces, longest = [chr(IDEOGRAPHS[lang] + i) for i in range(2500)], 2
    else:
        consonants, vowels = LETTERS.get(lang, LATIN)
        pieces, longest = [c + v for c in consonants for v in (vowels or consonants)], 4
    parts = rng.integers(0, len(pieces), (VOCABULARY, longest)).tolist()
    sizes = rng.integers(1, longest + 1, VOCABULARY).tolist()
    words = ["".join(pieces[p] for p in row[:n]) for row, n in zip(parts, sizes)]
    return np.array(sorted(words, key=len))


def _texts(rng, count: int, low: int, high: int) -> list[np.ndarray]:
    lengths = rng.integers(low, high + 1, count)
    words = (rng.zipf(1.05, int(lengths.sum())) - 1) % VOCABULARY
    return np.split(words, np.cumsum(lengths)[:-1])


def write_mmarco_like(root, questions: int, languages=("en", "de", "es", "fr", "it", "pt", "ru",
                                                       "zh", "ar"), negatives: int = 1, *,
                      seed: int = 0, duplicates: float = 0.01) -> pathlib.Path:
    """Write queries/, collections/ and the id-triples file under `root`; returns `root`."""
    root = pathlib.Path(root)
    (root / "queries").mkdir(parents=True, exist_ok=True)
    (root / "collections").mkdir(parents=True, exist_ok=True)
    words = {l: spelling(l, seed) for l in languages}
    name = {l: NAMES.get(l, l) for l in languages}
    passages = questions * (1 + negatives)
    with contextlib.ExitStack() as stack:
        def files(kind, pattern):
            return {l: stack.enter_context((root / kind / pattern.format(name[l])).open(
                "w", encoding="utf-8")) for l in languages}
        _write(files("queries", "{}_queries.train.tsv"), words, questions, (3, 10), seed, 0)
        _write(files("collections", "{}_collection.tsv"), words, passages, (30, 80), seed, 1,
               duplicates)
    rng = np.random.default_rng([seed, 2])
    q = np.repeat(np.arange(questions), negatives)
    neg = (q + rng.integers(1, passages, len(q))) % passages   # never the question's positive
    with (root / TRIPLES[0]).open("w") as f:
        f.writelines(f"{a}\t{a}\t{b}\n" for a, b in zip(q.tolist(), neg.tolist()))
    return root


def _write(out: dict, words: dict, count: int, lengths, seed: int, kind: int,
           duplicates: float = 0.0) -> None:
    copy_of: dict[int, np.ndarray] = {}
    for start in range(0, count, BLOCK):
        rng = np.random.default_rng([seed, kind, start])
        texts = _texts(rng, min(BLOCK, count - start), *lengths)
        for i in np.flatnonzero(rng.random(len(texts)) < duplicates).tolist():
            if start + i > 0:   # an exact copy of an earlier text of this block or the last
                j = int(rng.integers(0, start + i))
                texts[i] = texts[j - start] if j >= start else copy_of.get(j, texts[i])
        copy_of = {start + i: t for i, t in enumerate(texts)}
        for lang, f in out.items():
            spelled = words[lang]
            f.writelines(f"{start + i}\t{' '.join(spelled[t])}\n" for i, t in enumerate(texts))


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write a synthetic corpus in mMARCO's layout.")
    parser.add_argument("--out", required=True, help="directory to write")
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--languages", default="en,de,es,fr,it,pt,ru,zh,ar")
    parser.add_argument("--negatives", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_mmarco_like(args.out, args.questions, tuple(args.languages.split(",")), args.negatives,
                      seed=args.seed)


if __name__ == "__main__":
    main()
