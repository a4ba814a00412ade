"""Driving the PyTorch peer (benchmarks/torch_peer.py) from the benchmarks: its worker processes,
the model it loads (our Hugging Face export) and the pre-tokenised texts it encodes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from hybrid_jax.platform import cpu


class _PeerProcess:
    """A bench/torch_peer.py worker process: one JSON reply per command line."""

    def __init__(self, args: list):
        cmd = [sys.executable, "-m", "benchmarks.torch_peer", *args]
        # The glibc set-up our step loop trains under (hybrid_jax.platform.cpu), so the comparison
        # is of the frameworks, not of allocator settings (measured: the peer gains ~4% from it).
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=cpu.child_environment())
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the PyTorch peer exited (see its stderr above)")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the PyTorch peer: {reply['error']}")
        return reply

    def _command(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> dict:
        out = self._command("quit")
        self.proc.wait(timeout=60)
        return out


class TorchPeer(_PeerProcess):
    """The PyTorch train worker (bench/torch_peer.py), driven one step at a time: same loss (hard
    negatives included when the batches file has them), GradCache over `micro_batches`, bfloat16
    autocast of the forward passes with `autocast`."""

    def __init__(self, model_dir: str, batches_file: str, threads: int, config, dropout: float,
                 autocast: bool = False, micro_batches: int = 1):
        super().__init__([
            "--model_dir", model_dir, "--batches", batches_file, "--threads", str(threads),
            "--learning_rate", str(config.optim.learning_rate),
            "--weight_decay", str(config.optim.weight_decay),
            "--temperature", str(config.loss.temperature),
            "--max_grad_norm", str(config.optim.max_grad_norm),
            "--dropout", str(dropout), "--micro_batches", str(micro_batches)]
            + (["--autocast"] if autocast else []))

    def step(self) -> dict:
        return self._command("step")


class TorchEncodePeer(_PeerProcess):
    """The PyTorch encode worker (torch_peer.py --encode_texts): sentence-transformers-style
    encoding of pre-tokenised texts (write them with `write_ragged_ids`)."""

    def __init__(self, model_dir: str, texts_file: str, threads: int, batch_size: int = 32,
                 autocast: bool = False):
        super().__init__(["--model_dir", model_dir, "--encode_texts", texts_file,
                          "--threads", str(threads), "--encode_batch", str(batch_size)]
                         + (["--autocast"] if autocast else []))

    def encode(self) -> dict:
        """One full pass over the texts -> {'seconds': s}."""
        return self._command("encode")

    def save(self, path: str) -> dict:
        """The last pass's embeddings (float32 [n, D], input order) as .npy at `path`."""
        return self._command(f"save {path}")


def write_ragged_ids(path: str, id_lists, pad_id: int) -> None:
    """Token id lists (special tokens included, truncated already) as the encode peer's .npz:
    flat_ids int32, offsets int64 [n + 1], pad_id."""
    lengths = [len(ids) for ids in id_lists]
    flat = np.concatenate([np.asarray(ids, np.int32).reshape(-1) for ids in id_lists]
                          + [np.zeros(0, np.int32)])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    np.savez(path, flat_ids=flat, offsets=offsets, pad_id=np.int64(pad_id))


def export_peer_model(config, tmp: str) -> str:
    """The pretrained weights in Hugging Face format for the peer, written by `python -m
    hybrid_jax.export` in a child process: the export imports transformers and with it PyTorch
    (~200 MB resident), which a training process never holds, so our process's peak stays a
    training run's."""
    model_dir = os.path.join(tmp, "hf")
    if not os.path.isdir(model_dir):
        done = subprocess.run([sys.executable, "-m", "hybrid_jax.export", "--model",
                               str(config.model.spec), "--out", model_dir],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"exporting the peer's model failed: {done.stderr.strip()}")
    return model_dir


def torch_available() -> bool:
    """PyTorch and transformers are installed (looked up, not imported: see export_peer_model)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
