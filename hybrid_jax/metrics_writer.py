"""Training metrics to `metrics.jsonl` and TensorBoard event files (tensorboardX, no TensorFlow).

metrics.jsonl is the record the rest of the project reads (one JSON object per logged step); the
event files under tensorboard/ carry the same scalars, one `Event` per logged step.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys

# Two writers opened by one process within the same second would get the same tensorboardX file
# name, and tensorboardX truncates an existing file: a per-process serial keeps the names apart.
_serial = itertools.count()

# tensorboardX writes from a background thread and only flushes every `flush_secs`; a short period
# keeps a live TensorBoard close to the run without flushing on every step.
_FLUSH_SECS = 10


@contextlib.contextmanager
def _torch_hidden():
    """tensorboardX imports torch where it is installed, only to accept torch tensors; scalars
    need none of it, and torch costs a training process ~0.7 s and ~230 MiB.  A None entry in
    sys.modules makes that optional import fail as if torch were absent."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


class MetricsWriter:
    """Appends one JSON line per logged step and a scalar summary per metric.

    Only process 0 should write (pass `enabled=False` elsewhere).
    """

    def __init__(self, workdir, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        with _torch_hidden():
            from tensorboardX import FileWriter

        os.makedirs(workdir, exist_ok=True)
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self._jsonl = open(self.jsonl_path, "a")
        self._events = FileWriter(os.path.join(workdir, "tensorboard"), flush_secs=_FLUSH_SECS,
                                  filename_suffix=f".{os.getpid()}.{next(_serial)}")

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        from tensorboardX.proto.summary_pb2 import Summary

        clean = {k: float(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        self._jsonl.flush()
        summary = Summary(value=[Summary.Value(tag=k, simple_value=v) for k, v in clean.items()])
        self._events.add_summary(summary, global_step=int(step))

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._events.close()  # drains tensorboardX's queue, then flushes and closes the file
            self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
