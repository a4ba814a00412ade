"""Entry point: python -m hybrid_jax.main --config configs/<file>.py[:variant] --workdir DIR
                [--config.a.b=value ...] [--mode train|evaluate|train_and_evaluate|inspect_data]

Every config field can be overridden: `--config.data.languages=en,de` (tuple fields also take a
JSON list), `--config.eval.datasets='[{"name": ..., "type": ..., "path": ..., "fold": ...}]'`
(docs/training.md, "Command-line overrides").  The flags, error lines and exit statuses are
hybrid_jax.cli's, shared with the other programs.

Bad input (unknown config key, impossible value, unwritable workdir, malformed data, unreadable
checkpoint) ends with one line `error: <message>` on stderr and exit status 2, without a
traceback; a diverged run (non-finite loss) or an OS error while running (full disk) with exit
status 1.  SIGTERM (preemption) finishes the step, saves a checkpoint and exits 0.

Multi-host: pass --distributed (or set HYBRID_JAX_DISTRIBUTED=1) to call
`jax.distributed.initialize()` before anything touches devices; coordinator address, process
count and id come from --coordinator_address/--num_processes/--process_id or the environment
variables jax reads itself (Cloud TPU and SLURM need none of them).  Inside an `srun` step with
several tasks (SLURM_STEP_ID set, SLURM_NTASKS > 1) it is switched on automatically;
HYBRID_JAX_DISTRIBUTED=0 switches that off.
"""
from __future__ import annotations

import os
from typing import Optional

from absl import flags

from hybrid_jax import cli
from hybrid_jax.errors import InputError

MODES = ("train", "evaluate", "train_and_evaluate", "inspect_data")

FLAGS = flags.FLAGS
cli.define_config_flags("configs/demo_cpu.py")
flags.DEFINE_enum("mode", "train_and_evaluate", list(MODES), "What to run.")
flags.DEFINE_integer("inspect_batches", 8, "Batches to summarise with --mode inspect_data.")
flags.DEFINE_bool("distributed", False, "Initialise jax.distributed (multi-host runs).")
flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator host:port.")
flags.DEFINE_integer("num_processes", None, "jax.distributed process count.")
flags.DEFINE_integer("process_id", None, "jax.distributed process id.")

parse_flags = cli.parse_flags


def distributed_requested(environ=None, flag: Optional[bool] = None) -> bool:
    """--distributed, HYBRID_JAX_DISTRIBUTED=1, or an srun step with several tasks (SLURM)."""
    environ = os.environ if environ is None else environ
    flag = FLAGS.distributed if flag is None else flag
    if flag or environ.get("HYBRID_JAX_DISTRIBUTED") == "1":
        return True
    if environ.get("HYBRID_JAX_DISTRIBUTED") == "0":
        return False
    try:
        return "SLURM_STEP_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1
    except ValueError:
        return False


def maybe_initialize_distributed() -> None:
    if not distributed_requested():
        return
    import jax

    kwargs = {k: v for k, v in dict(coordinator_address=FLAGS.coordinator_address,
                                    num_processes=FLAGS.num_processes,
                                    process_id=FLAGS.process_id).items() if v is not None}
    jax.distributed.initialize(**kwargs)


def inspect_data(config) -> str:
    from hybrid_jax.data import inspection
    from hybrid_jax.models.from_config import load_model

    pretrained = load_model(config)
    info = inspection.inspect_batches(config.data, pretrained.tokenizer, FLAGS.inspect_batches,
                                      query_prefix=pretrained.prefixes.get("query", ""),
                                      passage_prefix=pretrained.prefixes.get("passage", ""),
                                      mining_model=pretrained, workdir=FLAGS.workdir,
                                      num_steps=int(config.train.num_steps),
                                      tokenizer_spec=str(config.model.spec))
    return inspection.format_inspection(info)


def run(config, workdir: str, mode: str):
    if mode == "inspect_data":
        print(inspect_data(config), flush=True)
        return None
    if mode == "evaluate":  # evaluation's own entry, not the train loop
        from hybrid_jax import config as schema
        from hybrid_jax.evaluation import entry

        return entry.evaluate_checkpoint(config, schema.check_workdir(workdir))
    from hybrid_jax.train import loop

    return loop.train_and_evaluate(config, workdir, evaluate=(mode == "train_and_evaluate"))


@cli.program
def main(argv):
    del argv
    if FLAGS.config is None:
        raise InputError("--config is required (e.g. --config configs/demo_cpu.py)")
    if FLAGS.mode != "inspect_data" and not FLAGS.workdir:
        raise InputError("--workdir is required")
    maybe_initialize_distributed()
    run(FLAGS.config, FLAGS.workdir, FLAGS.mode)


def entry():
    cli.run(main)


if __name__ == "__main__":
    entry()
