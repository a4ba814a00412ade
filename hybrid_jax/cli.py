"""The command-line harness every hybrid_jax program shares.

* Flag parsing (`parse_flags`, the absl `flags_parser`) whose errors are one line: an unknown
  `--config.<key>` names the full key and the closest existing one, a config file that raises
  gives its first and last traceback line.  Tuple fields of a config accept a JSON or Python
  literal, or bare comma-separated words: `--config.data.languages=en,de`,
  `--config.eval.datasets='[{"name": "xquad-r-test", "type": "xquad-r", ...}]'` (whose entries
  are checked here, not after training: OVERRIDE_CHECKS).
* Library logs: absl's verbosity drops to -1 (orbax, grain, xla_bridge INFO drown the progress
  line) and orbax's / asyncio's ERROR tracebacks are filtered, unless --verbosity is given.
* `program`: the CPU host tuning of hybrid_jax.platform.cpu (opt-out:
  HYBRID_JAX_CPU_TUNING=off), then the program body, whose exceptions end the process with one
  line `error: <message>` on stderr:

      InputError (bad flag, config key or value, data file, workdir, checkpoint)   exit 2
      TrainingDiverged, CheckpointWriteError, OSError while running (full disk)    exit 1

  `run_or_exit(fn, ...)` applies the same mapping to one call.

    @cli.program
    def main(argv): ...

    if __name__ == "__main__":
        cli.run(main)
"""
from __future__ import annotations

import ast
import difflib
import functools
import json
import logging
import os
import re
import sys
from typing import Callable, NoReturn, Optional

from absl import app, flags

from hybrid_jax.platform import cpu
from hybrid_jax.errors import InputError

FLAGS = flags.FLAGS
EXIT_INPUT, EXIT_FAILED = 2, 1
# (module, class) of failures while running that end with exit status 1.  Looked up among the
# modules already imported: an exception of a class never imported cannot have been raised, and a
# program that never trains (encode, export) does not pay for importing jax on its error path.
RUN_FAILURES = (("hybrid_jax.train.guards", "TrainingDiverged"),
                ("hybrid_jax.train.checkpoints", "CheckpointWriteError"))


def fail(message: str, status: int = EXIT_INPUT) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def error_of(exc: BaseException) -> Optional[tuple[str, int]]:
    """(message, exit status) of an exception the harness reports in one line; None for the
    others (bugs keep their traceback)."""
    if isinstance(exc, InputError):
        return str(exc), EXIT_INPUT
    for module, name in RUN_FAILURES:
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return str(exc), EXIT_FAILED
    if isinstance(exc, OSError):  # full disk, read-only or vanished workdir while running
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}", EXIT_FAILED
    return None


def run_or_exit(fn, *args, **kwargs):
    """fn(*args, **kwargs); an exception `error_of` knows ends the process with its line."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - filtered by error_of, the rest re-raised
        known = error_of(e)
        if known is None:
            raise
        fail(*known)


def program(main: Callable) -> Callable:
    """An absl main(argv) under the harness: no stray positional arguments, the CPU host tuning
    that must precede JAX's backend (platform.cpu.tune_process), exceptions mapped by
    `error_of`."""

    @functools.wraps(main)
    def wrapped(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        cpu.tune_process()
        return run_or_exit(main, argv)

    return wrapped


def run(main: Callable) -> None:
    """app.run with the harness's flag parsing."""
    app.run(main, flags_parser=parse_flags)


def define_config_flags(example: str, workdir: bool = True) -> None:
    """--config (a configs/*.py file, locked: unknown keys are errors) and --workdir; defined
    once per process, whichever program module is imported first."""
    from ml_collections import config_flags

    if "config" not in FLAGS:
        config_flags.DEFINE_config_file(
            "config", None, f"Configuration file (e.g. {example}[:variant]); override any field "
                            f"with --config.<section>.<key>=<value>.", lock_config=True)
    if workdir and "workdir" not in FLAGS:
        flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and reports.")


# -- flag parsing ---------------------------------------------------------------------------------

class _LibraryErrorFilter(logging.Filter):
    """Drops orbax's and asyncio's ERROR logs (a failed save logs a traceback from every
    background thread); the failure still reaches the harness as an exception and becomes one
    `error:` line.  --verbosity=0 (or any --verbosity) shows them again."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        return not ("/orbax/" in path or record.name == "asyncio" or "/asyncio/" in path)


def quiet_library_logs() -> None:
    from absl import logging as absl_logging

    handler = absl_logging.get_absl_handler()
    if not any(isinstance(f, _LibraryErrorFilter) for f in handler.filters):
        handler.addFilter(_LibraryErrorFilter())


def parse_tuple(argument) -> tuple:
    """A tuple field's command-line value: '' -> (); a JSON or Python literal (a list or tuple
    gives its items, anything else one item); otherwise comma-separated words ('en,de')."""
    if argument is None:
        return ()
    if not isinstance(argument, str):
        return tuple(argument) if isinstance(argument, (list, tuple)) else (argument,)
    text = argument.strip()
    if not text:
        return ()
    for load in (json.loads, ast.literal_eval):
        try:
            value = load(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    return tuple(word.strip() for word in text.split(","))


@functools.lru_cache(maxsize=None)
def _use_tuple_parser() -> None:
    # ml_collections picks a field's parser by its type; repeated flags (--config.x=a
    # --config.x=b) are joined only for subclasses of its TupleParser.
    from ml_collections.config_flags import config_flags, tuple_parser

    class TupleParser(tuple_parser.TupleParser):
        def parse(self, argument):
            return parse_tuple(argument)

    config_flags.register_flag_parser_for_type(tuple, TupleParser())


_OVERRIDE = re.compile(r"^--?(?:no)?config\.([^=]+)")


def _config_argument(argv) -> Optional[str]:
    for i, a in enumerate(argv):
        if re.match(r"^--?config=", a):
            return a.split("=", 1)[1]
        if a in ("--config", "-config") and i + 1 < len(argv):
            return argv[i + 1]
    return None


def missing_key(config, key: str) -> Optional[str]:
    """Why `key` (a.b.c) is not a field of `config`, with the closest existing key; None when
    it is one."""
    from ml_collections import ConfigDict

    parts = key.split(".")
    node = config
    for i, part in enumerate(parts):
        if not isinstance(node, ConfigDict):
            return f"no such key {key} ({'.'.join(parts[:i])} is a value, not a section)"
        if part not in node:
            keys = sorted(node.keys())
            close = difflib.get_close_matches(part, keys, n=1, cutoff=0.6)
            if close:
                guess = ".".join(parts[:i] + close + parts[i + 1:])
                return f"no such key {key} (did you mean {guess}?)"
            where = ".".join(parts[:i]) or "the config"
            return f"no such key {key} (keys of {where}: {', '.join(keys)})"
        node = node[part]
    return None


def _unknown_override(argv) -> Optional[str]:
    """The first `--config.<key>` of argv that the config file does not have, described."""
    path = _config_argument(argv)
    if path is None or "config" not in FLAGS:
        return None
    try:
        config = FLAGS["config"].parser.parse(path)
    except Exception:  # noqa: BLE001 - the original error is reported instead
        return None
    for a in argv[1:]:
        m = _OVERRIDE.match(a)
        if m:
            why = missing_key(config, m.group(1))
            if why:
                return why
    return None


DATASET_SPEC_EXAMPLE = ('[{"name": "xquad-r-test", "type": "xquad-r", '
                        '"path": "../shared/data/xquad-r", "fold": "test"}]')


def check_dataset_specs(specs) -> None:
    """An `--config.eval.datasets` value: each entry an object naming at least its name (the
    eval/<name>/ folder), type and path; found here rather than after training."""
    from hybrid_jax.evaluation.datasets import check_spec

    for spec in specs:
        try:
            check_spec(spec)
        except InputError as e:
            raise InputError(f"config: {e}; give a JSON list of objects, e.g. "
                             f"--config.eval.datasets='{DATASET_SPEC_EXAMPLE}'") from e


# Overrides whose parsed value needs more than its type to be usable.
OVERRIDE_CHECKS = {"eval.datasets": check_dataset_specs}


def _check_overrides(argv) -> None:
    config = FLAGS["config"].value if "config" in FLAGS else None
    for a in argv[1:] if config is not None else ():
        m = _OVERRIDE.match(a)
        if m and m.group(1) in OVERRIDE_CHECKS:
            node = config
            for part in m.group(1).split("."):
                node = node[part]
            OVERRIDE_CHECKS[m.group(1)](node)


def parse_flags(argv) -> list[str]:
    """absl flag parsing whose errors (an unknown --config.key, a bad value, a config file that
    raises) become one `error:` line and exit status 2."""
    argv = list(argv)
    if not any(a.startswith(("--verbosity", "-v")) for a in argv[1:]):
        argv.insert(1, "--verbosity=-1")
        quiet_library_logs()
    _use_tuple_parser()
    saved_argv, sys.argv = sys.argv, argv  # ml_collections reads --config.* from sys.argv
    try:
        rest = FLAGS(argv)
        _check_overrides(argv)
        return rest
    except flags.Error as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        if len(lines) > 1 and "Traceback" in str(e):  # config file raised: first + last line
            fail(f"{lines[0].rstrip(':')}: {lines[-1]}")
        fail(str(e))
    except (AttributeError, KeyError) as e:  # ml_collections: override of a key that is absent
        fail(f"config: {_unknown_override(argv) or f'no such key {e}'.splitlines()[0]}")
    except InputError as e:
        fail(str(e))
    except Exception as e:  # noqa: BLE001 - a config file's get_config() rejecting its argument
        fail(f"--config: {type(e).__name__}: {e}")
    finally:
        sys.argv = saved_argv
