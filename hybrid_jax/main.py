"""Entry point: python -m hybrid_jax.main --config configs/<file>.py[:variant] --workdir DIR
                [--config.a.b=value ...] [--mode train|evaluate|train_and_evaluate|inspect_data]

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

import logging
import os
import sys
from typing import Optional

from absl import app, flags
from ml_collections import config_flags

from hybrid_jax import host_memory
from hybrid_jax.errors import InputError

MODES = ("train", "evaluate", "train_and_evaluate", "inspect_data")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration file (configs/*.py[:arg]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and reports.")
flags.DEFINE_enum("mode", "train_and_evaluate", list(MODES), "What to run.")
flags.DEFINE_integer("inspect_batches", 8, "Batches to summarise with --mode inspect_data.")
flags.DEFINE_bool("distributed", False, "Initialise jax.distributed (multi-host runs).")
flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator host:port.")
flags.DEFINE_integer("num_processes", None, "jax.distributed process count.")
flags.DEFINE_integer("process_id", None, "jax.distributed process id.")


def _fail(message: str, status: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


class _LibraryErrorFilter(logging.Filter):
    """Drops orbax's and asyncio's ERROR logs (a failed save logs a traceback from every
    background thread); the failure still reaches the CLI as an exception and becomes one
    `error:` line.  --verbosity=0 (or any --verbosity) shows them again."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        return not ("/orbax/" in path or record.name == "asyncio" or "/asyncio/" in path)


def _quiet_library_errors() -> None:
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, _LibraryErrorFilter) for f in handler.filters):
        handler.addFilter(_LibraryErrorFilter())


def parse_flags(argv):
    """absl flag parsing whose errors (an unknown --config.key, a config file that raises) become
    one `error:` line."""
    argv = list(argv)
    if not any(a.startswith(("--verbosity", "-v")) for a in argv[1:]):
        # Library INFO logs (orbax, grain, xla_bridge) drown the progress line.
        argv.insert(1, "--verbosity=-1")
        _quiet_library_errors()
    try:
        return FLAGS(argv)
    except flags.Error as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        if len(lines) > 1 and "Traceback" in str(e):  # config file raised: first + last line
            _fail(f"{lines[0].rstrip(':')}: {lines[-1]}")
        _fail(str(e))
    except (AttributeError, KeyError) as e:  # ml_collections: override of a key that is absent
        overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        key = str(e).strip("\"'")
        _fail(f"config: no such key {key!r} (overrides given: {', '.join(overrides) or 'none'})")
    except InputError as e:
        _fail(str(e))
    except Exception as e:  # noqa: BLE001 - a config file's get_config() rejecting its argument
        _fail(f"--config: {type(e).__name__}: {e}")


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
    from hybrid_jax import train
    from hybrid_jax.data import inspection

    pretrained = train.load_model(config)
    info = inspection.inspect_batches(config.data, pretrained.tokenizer, FLAGS.inspect_batches,
                                      query_prefix=pretrained.prefixes.get("query", ""),
                                      passage_prefix=pretrained.prefixes.get("passage", ""))
    return inspection.format_inspection(info)


def run(config, workdir: str, mode: str):
    from hybrid_jax import train

    if mode == "inspect_data":
        print(inspect_data(config), flush=True)
        return None
    if mode == "evaluate":
        return train.evaluate_checkpoint(config, workdir)
    return train.train_and_evaluate(config, workdir, evaluate=(mode == "train_and_evaluate"))


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    config = FLAGS.config
    if config is None:
        _fail("--config is required (e.g. --config configs/demo_cpu.py)")
    if FLAGS.mode != "inspect_data" and not FLAGS.workdir:
        _fail("--workdir is required")
    host_memory.single_arena()  # before JAX starts its threads
    maybe_initialize_distributed()
    from hybrid_jax.checkpointing import CheckpointWriteError
    from hybrid_jax.train import TrainingDiverged

    try:
        run(config, FLAGS.workdir, FLAGS.mode)
    except InputError as e:
        _fail(str(e))
    except (TrainingDiverged, CheckpointWriteError) as e:
        _fail(str(e), status=1)
    except OSError as e:  # full disk, read-only or vanished workdir while running
        where = f"{e.filename}: " if e.filename else ""
        _fail(f"{where}{e.strerror or e}", status=1)


def entry():
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    entry()
