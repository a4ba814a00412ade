"""Training metrics to `metrics.jsonl` and TensorBoard event files (tensorboardX, no TensorFlow).

metrics.jsonl is the record the rest of the project reads (one JSON object per logged step); the
event files under tensorboard/ carry the same scalars, one `Event` per logged step.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import sys
import time

# Two writers opened by one process within the same second would otherwise get the same file name.
_serial = itertools.count()


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
    """Appends one JSON line per logged step and one TensorBoard `Event` holding its scalars.

    Both are written and flushed in the caller's thread (tensorboardX's record writer, not its
    queue-and-thread FileWriter): a full disk is an OSError of the step that logs, never a
    traceback from a background thread.  Only process 0 should write (`enabled=False`
    elsewhere)."""

    def __init__(self, workdir, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        with _torch_hidden():
            from tensorboardX.proto import event_pb2, summary_pb2
            from tensorboardX.record_writer import RecordWriter
        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        events_dir = os.path.join(workdir, "tensorboard")
        os.makedirs(events_dir, exist_ok=True)
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self._jsonl = open(self.jsonl_path, "a")
        name = (f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}."
                f"{os.getpid()}.{next(_serial)}")
        self._events = RecordWriter(os.path.join(events_dir, name))
        self._write_event(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write_event(self, event) -> None:
        self._events.write(event.SerializeToString())
        self._events.flush()

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items()}
        self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
        self._jsonl.flush()
        summary = self._summary(value=[self._summary.Value(tag=k, simple_value=v)
                                       for k, v in clean.items()])
        self._write_event(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._events.close()
            self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
