"""Shared command-line behaviour: bad input ends the program with one clear line, no traceback."""
from __future__ import annotations

import sys

from hybrid_jax.errors import InputError


def run_or_exit(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
