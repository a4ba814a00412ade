"""Which public dataset a data folder holds, and its licence, for the model card of an export.

A folder is named as XQuAD, XQuAD-R or MLQA-R only when its files are byte-identical copies of
the official ones (the SHA-256 sums the downloader pins), so a renamed or edited folder is never
credited with a licence it may not carry; anything else is reported as unknown.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os

from hybrid_jax.data.download import SHA256

# As stated by each dataset's source (and ../shared/data/README.md, which keeps verified copies).
LICENCES = {
    "xquad": ("XQuAD", "CC BY-SA 4.0", "https://github.com/google-deepmind/xquad"),
    "xquad-r": ("XQuAD-R (LAReQA)", "CC BY-SA 4.0",
                "https://github.com/google-research-datasets/lareqa"),
    "mlqa-r": ("MLQA-R (LAReQA)", "CC BY-NC 4.0 (non-commercial use only)",
               "https://github.com/google-research-datasets/lareqa, commit 354d67d"),
}


@dataclasses.dataclass(frozen=True)
class DataSource:
    path: str
    dataset: str | None          # a key of LICENCES, or None when not recognised
    licence_files: tuple[str, ...]  # LICENSE* / LICENCE* files found beside the data

    def describe(self) -> str:
        files = (f"; licence file(s) in the folder: {', '.join(self.licence_files)}"
                 if self.licence_files else "")
        if not os.path.exists(self.path):
            return (f"`{self.path}`: not found from the directory the export ran in, so not "
                    f"identified: its licence is unknown here, check the data's source")
        if self.dataset is None:
            what = ("not a verified copy of XQuAD, XQuAD-R or MLQA-R: its licence is unknown "
                    "here, check the data's source")
            return f"`{self.path}`: {what}{files}"
        name, licence, source = LICENCES[self.dataset]
        return f"`{self.path}`: {name}, {licence} ({source}){files}"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def identify(path: str) -> DataSource:
    """The dataset a folder holds: every file in it that bears an official file name of a
    dataset must match that file's checksum, and at least one must (a language subset counts)."""
    if not os.path.isdir(path):
        return DataSource(path, None, ())
    names = sorted(os.listdir(path))
    licence_files = tuple(n for n in names if n.upper().startswith(("LICENSE", "LICENCE")))
    digests: dict[str, str] = {}
    for dataset in LICENCES:
        expected = {key.split("/", 1)[1]: digest for key, digest in SHA256.items()
                    if key.startswith(dataset + "/")}
        present = [n for n in names if n in expected]
        if not present:
            continue
        for n in present:
            if n not in digests:
                digests[n] = _sha256(os.path.join(path, n))
        if all(digests[n] == expected[n] for n in present):
            return DataSource(path, dataset, licence_files)
    return DataSource(path, None, licence_files)
