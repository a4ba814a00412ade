"""Locate XQuAD / XQuAD-R / MLQA-R files in a data directory; fetch missing ones from the official
addresses and accept a file only if its SHA-256 matches the pinned checksum.

Layout (same as ../shared/data): <data_dir>/xquad-r/<lang>.json, <data_dir>/mlqa-r/<lang>.json and
<data_dir>/xquad/xquad.<lang>.json.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
import urllib.request
from typing import Callable, Sequence

from hybrid_jax.errors import InputError

# Copied from ../shared/data/SHA256SUMS (verified copies of the official files).
SHA256 = {
    "xquad/xquad.ar.json": "abdabd7afed5c635d99cca0f3f0d0c9d9ed0bc77451e963c2e4e0638c29e486d",
    "xquad/xquad.de.json": "990b5d746746ed65ed4702ea5f35f99ffa4e2f1c390c07d003642acd937916f9",
    "xquad/xquad.el.json": "821cf0f88e73fa258fd2f548b19b6ec39f7025059e16f6f9fc8cd797c9c3663e",
    "xquad/xquad.en.json": "e4c57d1c9143aaa1c5d265ba5987a65f4e69528d2a98f29d6e75019b10344f29",
    "xquad/xquad.es.json": "dcbae93ec3a9f4b9e78fd834a171d6f96c1a875e10e15b7530b7e4ef4971e37e",
    "xquad/xquad.hi.json": "df2cce3532b37e9beb8979704b5c9a4bf874358f105395a298b89427b43b9d24",
    "xquad/xquad.ro.json": "94f8d54e93ad2b7dd2e76dd921a666b5b8eff2d4379df9f179c42b445f09643f",
    "xquad/xquad.ru.json": "208d5b1aa154c52b1b5c5eda16281e455e8fd198cdb9af3f469f0d6037d973bf",
    "xquad/xquad.th.json": "5cdda11d0e1e075f7872abf4e6ae830388ce7f617964d542308e9ae4257e0f43",
    "xquad/xquad.tr.json": "92179a564774b7696100d144c1e10870d0a966b6fccbdd254a65b9d2ab1971cc",
    "xquad/xquad.vi.json": "f619a1eb11fb42d3ab0834259e488a65f585447ef6154437bfb7199d85161a04",
    "xquad/xquad.zh.json": "691d0b3359bc6b8faa8de931dfdfe21d50a65861ae348e32a0d1a0190b0c8835",
    "xquad-r/ar.json": "c52922d3b8ac1ae03ed5ac38647ad59870dca3dda2beefe18ecdc30729acb69d",
    "xquad-r/de.json": "16fb0f4bf4916154b585a20c24c66074591c9718a1affe764ff4697572328949",
    "xquad-r/el.json": "163fd43ee785a30eb534ae2061e9eaa766a7ee4e8ffce5e4b422480c150f64b6",
    "xquad-r/en.json": "7b0954f39297c27a31fef610f0883337dd2907fa8699151dc922afdd0fa12ffe",
    "xquad-r/es.json": "f8e836b2d91009c4363e04315f7ede363eedbbb49c67dda60de6c4aa782f58de",
    "xquad-r/hi.json": "ea45ba8ae4513d1533b222bebdc02a90bc319c055d3aeea68584a053d2e92872",
    "xquad-r/ru.json": "7f4dff853538b9a5fcc28c070b8bb983a5c5d190ac747b8e005a1ada9cab18f1",
    "xquad-r/th.json": "c3a041864c3a9fb0b4dd91cfdf99cf36b411b3e704c58a303c97bc6dc786cfe4",
    "xquad-r/tr.json": "f3e8c13002bbce154a4578f535f7533cb70f3da08840e6b62735935baec7bd94",
    "xquad-r/vi.json": "e35926bf5cc6fc6ecbdfca49467aabeb454f08d152d7818143a906bd31dde995",
    "xquad-r/zh.json": "80c2cde7b9c2fb134c303cbb52f2ba396ead9eb0014aec43993543d2ba9e93ed",
    "mlqa-r/ar.json": "2132fbc03208535c0fe01f2e2c5121d06f9c2aa799af93b0a719dbc105bdf137",
    "mlqa-r/de.json": "ce9454dc5aa6f2d85c23cd6e49cb367fbb7c4c6e62d7f71e355c6b5dae4d0886",
    "mlqa-r/en.json": "fedd9a5cc0848dda80caf84aa36f482adaae230526a3f6e9e86926a93ef3b1e4",
    "mlqa-r/es.json": "70ecba276b8c96a692b120693a595d076ce94ad21d4b28311538a9fcbfe0f9d7",
    "mlqa-r/hi.json": "4dd0fb3c06f737a5481d705bc1dcac7876712a5815c9265908fbb3a0696cb654",
    "mlqa-r/vi.json": "9d3baff6ba03e6793b25594217265ea59a136b9733833dca8a9582a84a78ff85",
    "mlqa-r/zh.json": "57f01d2fff50cf3392805635b01445339f225ad5bf28ba8443b12f8dbd1e69dc",
}
URLS = {
    "xquad": "https://github.com/google-deepmind/xquad/raw/master/xquad.{lang}.json",
    "xquad-r": "https://github.com/google-research-datasets/lareqa/raw/master/xquad-r/{lang}.json",
    # MLQA-R was later removed from the repository's head: the last commit that has it.
    "mlqa-r": "https://github.com/google-research-datasets/lareqa/raw/"
              "354d67d1cd066854cdfbf5ad0e6105528976141d/mlqa-r/{lang}.json",
}
FILE_NAMES = {"xquad": "xquad.{lang}.json", "xquad-r": "{lang}.json", "mlqa-r": "{lang}.json"}
XQUAD_R_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh")
XQUAD_LANGUAGES = XQUAD_R_LANGUAGES + ("ro",)
MLQA_R_LANGUAGES = ("ar", "de", "en", "es", "hi", "vi", "zh")
LANGUAGES = {"xquad": XQUAD_LANGUAGES, "xquad-r": XQUAD_R_LANGUAGES, "mlqa-r": MLQA_R_LANGUAGES}


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path, relative: str, shown: str | None = None) -> None:
    """Raise InputError unless `path` has the pinned checksum of `relative` (e.g. 'xquad-r/en.json');
    `shown` names the file in the message (default: the path)."""
    expected = SHA256.get(relative)
    if expected is None:
        raise InputError(f"{relative}: no pinned checksum (known files: xquad/, xquad-r/, "
                         f"mlqa-r/)")
    actual = sha256_of(path)
    if actual != expected:
        raise InputError(f"{shown or path}: SHA-256 {actual} does not match the official {relative} "
                         f"({expected}); the file is corrupt or not the official release -- "
                         f"delete it to re-download")


def _urlopen_to(url: str, target: pathlib.Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, target.open("wb") as out:
        while block := response.read(1 << 20):
            out.write(block)


def ensure_files(data_dir, corpus: str = "xquad-r", languages: Sequence[str] | None = None,
                 download: bool = True,
                 fetch: Callable[[str, pathlib.Path], None] = _urlopen_to) -> pathlib.Path:
    """Make `<data_dir>/<corpus>/` hold verified files for `languages`; return that directory.

    Present files are verified; missing ones are downloaded (when `download`) into a temporary
    file, verified, then moved into place, so a failed or corrupt download leaves nothing behind.
    """
    if corpus not in URLS:
        raise InputError(f"data corpus {corpus!r}: expected one of {sorted(URLS)}")
    known = LANGUAGES[corpus]
    languages = list(known if languages is None else languages)
    unknown = [l for l in languages if l not in known]
    if unknown:
        raise InputError(f"data.languages: {unknown} not in {corpus} (has {list(known)})")
    folder = pathlib.Path(data_dir) / corpus
    for lang in languages:
        name = FILE_NAMES[corpus].format(lang=lang)
        relative, target = f"{corpus}/{name}", folder / name
        if not target.exists():
            if not download:
                raise InputError(f"{target}: missing (download disabled)")
            folder.mkdir(parents=True, exist_ok=True)
            url = URLS[corpus].format(lang=lang)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
            os.close(fd)
            tmp = pathlib.Path(tmp)
            try:
                try:
                    fetch(url, tmp)
                except OSError as e:
                    raise InputError(f"{target}: missing, and downloading {url} failed ({e})") from e
                verify(tmp, relative, shown=f"{url} (downloaded for {target})")
                tmp.replace(target)
            finally:
                tmp.unlink(missing_ok=True)
        else:
            verify(target, relative)
    return folder
