"""Entry point: python -m hybrid_jax.main --config configs/<file>.py[:variant] --workdir DIR
                [--config.a.b=value ...] [--mode train|evaluate|train_and_evaluate|inspect_data]

Bad input (unknown config key, impossible value, unwritable workdir, malformed data) ends with one
line `error: <message>` on stderr and exit status 2, without a traceback.

Multi-host: pass --distributed (or set HYBRID_JAX_DISTRIBUTED=1) to call
`jax.distributed.initialize()` before anything touches devices; coordinator address, process
count and id come from --coordinator_address/--num_processes/--process_id or the environment
variables jax reads itself (Cloud TPU and SLURM need none of them).
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

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


def parse_flags(argv):
    """absl flag parsing whose errors (an unknown --config.key, a config file that raises) become
    one `error:` line."""
    argv = list(argv)
    if not any(a.startswith(("--verbosity", "-v")) for a in argv[1:]):
        # Library INFO logs (orbax, grain, xla_bridge) drown the progress line.
        argv.insert(1, "--verbosity=-1")
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


def maybe_initialize_distributed() -> None:
    if not (FLAGS.distributed or os.environ.get("HYBRID_JAX_DISTRIBUTED") == "1"):
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
    maybe_initialize_distributed()
    try:
        run(config, FLAGS.workdir, FLAGS.mode)
    except InputError as e:
        _fail(str(e))


def entry():
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    entry()
