"""The training loop on a tiny random model and synthetic batches (2 simulated devices)."""
import json
import pathlib
import struct

import jax
import numpy as np
import pytest

from configs import tiny
from hybrid_jax import config as schema
from hybrid_jax.train import checkpoints, loop, metrics_writer
from hybrid_jax.data import splits
from hybrid_jax.models import run_checkpoint
from hybrid_jax.errors import InputError


CACHE = "/tmp/hybrid_jax_test_xla_cache"  # persistent compile cache: repeated runs skip compiles


def _config(**overrides):
    c = tiny.get_config()
    c.train.compilation_cache_dir = CACHE
    c.num_devices = 2
    c.train.num_steps = 8
    c.train.log_every = 2
    c.train.checkpoint_every = 4
    c.update_from_flattened_dict(overrides)
    return c


# -- tfevents read back: the TFRecord framing checked here, payloads parsed with the protobuf classes
# tensorboardX ships (the writer's own record code is not used) --

def _masked_crc(data: bytes) -> int:
    from tensorboardX.crc32c import crc32c
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _read_events(path):
    """Every Event of a tfevents file: u64 length, masked crc32c of it, payload, masked crc32c."""
    from tensorboardX.proto.event_pb2 import Event
    data = pathlib.Path(path).read_bytes()
    events, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        payload = data[pos + 12:pos + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if length_crc != _masked_crc(header) or payload_crc != _masked_crc(payload):
            raise ValueError(f"{path}: bad crc at offset {pos}")
        events.append(Event.FromString(payload))
        pos += 16 + length
    return events


def test_reader_crc_is_crc32c():
    from tensorboardX.crc32c import crc32c
    assert crc32c(b"123456789") == 0xE3069283  # the Castagnoli check value


def test_tfevents_parse_back(tmp_path):
    with metrics_writer.MetricsWriter(tmp_path) as w:
        w.write(3, {"loss": 1.5, "accuracy": 0.25})
        w.write(7, {"loss": np.float32(0.5)})
    (path,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    events = _read_events(path)
    assert events[0].file_version == "brain.Event:2"
    assert [e.step for e in events[1:]] == [3, 7]
    assert {v.tag: v.simple_value for v in events[1].summary.value} == {"loss": 1.5, "accuracy": 0.25}
    assert {v.tag: v.simple_value for v in events[2].summary.value} == {"loss": 0.5}
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 3, "loss": 1.5, "accuracy": 0.25}, {"step": 7, "loss": 0.5}]
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="crc"):
        _read_events(path)


def test_writers_in_one_process_get_separate_files(tmp_path):
    for step in (1, 2):
        with metrics_writer.MetricsWriter(tmp_path) as w:
            w.write(step, {"loss": float(step)})
    files = sorted((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2
    assert sorted(e.step for f in files for e in _read_events(f)[1:]) == [1, 2]
    assert [json.loads(line)["step"] for line in
            (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_disabled_writer_writes_nothing(tmp_path):
    with metrics_writer.MetricsWriter(tmp_path / "w", enabled=False) as w:
        w.write(1, {"loss": 1.0})
    assert not (tmp_path / "w").exists()


def test_short_run_outputs_and_loss_decreases(tmp_path, capsys):
    config = _config(**{"train.num_steps": 16, "train.log_every": 4, "train.checkpoint_every": 0,
                        "parallelism": "shard_map"})
    metrics = loop.train_and_evaluate(config, tmp_path)
    out = capsys.readouterr().out
    assert "steps/s" in out and "ex/s" in out and "ETA" in out
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 12, 16]
    for key in ("loss", "accuracy", "lr", "grad_norm", "param_norm", "examples_per_sec"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert metrics["loss"] == rows[-1]["loss"]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train"]["num_steps"] == 16 and saved["data"]["synthetic"] is True
    (events,) = (tmp_path / "tensorboard").iterdir()
    steps = [e.step for e in _read_events(events)][1:]
    assert steps == [4, 8, 12, 16]
    # restore_params (for 'ckpt:' specs): trained layers + the frozen table saved once
    params, cfg = run_checkpoint.restore_params(tmp_path)
    assert cfg["model"]["spec"] == "random:tiny"
    from hybrid_jax.models.pretrained import load_pretrained
    pre = load_pretrained("random:tiny").encoder_params
    np.testing.assert_array_equal(params["encoder"]["word_embeddings"]["embedding"],
                                  pre["word_embeddings"]["embedding"])
    assert not np.array_equal(params["encoder"]["layer_0"]["output"]["kernel"],
                              pre["layer_0"]["output"]["kernel"])
    with pytest.raises(InputError, match="no step 3"):
        run_checkpoint.restore_params(tmp_path, 3)
    # 'ckpt:' specs: the trained params on the starting model's architecture and tokenizer,
    # exportable to Hugging Face format and loadable back bit-exactly.
    trained = load_pretrained(f"ckpt:{tmp_path}@16")
    assert trained.config == load_pretrained("random:tiny").config
    jax.tree.map(np.testing.assert_array_equal, trained.encoder_params, params["encoder"])
    from hybrid_jax import export
    (out,) = export.run(f"ckpt:{tmp_path}", str(tmp_path / "hf"))
    back = load_pretrained(f"hf:{out}").encoder_params
    jax.tree.map(np.testing.assert_array_equal, back, params["encoder"])
    with pytest.raises(InputError, match="no step 3"):
        load_pretrained(f"ckpt:{tmp_path}@3")
    with pytest.raises(InputError, match="not a run directory"):
        load_pretrained(f"ckpt:{tmp_path}/missing")


def test_resume_equals_uninterrupted(tmp_path, capsys):
    config = _config(**{"optim.freeze_word_embeddings": False})
    loop.train_and_evaluate(config, tmp_path / "straight")
    loop.train_and_evaluate(config, tmp_path / "resumed", stop_at=4)
    ckpt = checkpoints.Checkpointer(tmp_path / "resumed", read_only=True)
    assert ckpt.all_steps() == [4]
    ckpt.close()
    capsys.readouterr()
    loop.train_and_evaluate(config, tmp_path / "resumed")
    assert "resuming from" in capsys.readouterr().out
    a, _ = run_checkpoint.restore_params(tmp_path / "straight")
    b, _ = run_checkpoint.restore_params(tmp_path / "resumed")
    jax.tree.map(np.testing.assert_array_equal, a, b)
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]


@pytest.mark.parametrize("key,value,message", [
    ("data.global_batch_size", 9, "not divisible by 2 devices"),
    ("optim.grad_accum_steps", 8, "accumulation"),
    ("data.alpha", 1.5, "data.alpha"),
    ("parallelism", "xmap", "parallelism"),
    ("num_devices", 99, "num_devices"),
    ("optim.schedule", "step", "optim.schedule"),
    ("loss.temperature", 0.0, "loss.temperature"),
])
def test_config_validation(key, value, message):
    with pytest.raises(InputError, match=message):
        schema.validate_config(_config(**{key: value}))


def test_unusable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="workdir"):
        schema.check_workdir(blocker / "run")
    with pytest.raises(InputError, match="not a directory"):
        schema.check_workdir(blocker)


def test_evaluation_hook_cadence(tmp_path, monkeypatch):
    from hybrid_jax.evaluation import run as eval_run
    calls = []

    def fake_evaluate(bundle, datasets, workdir, eval_config, write=True, folds=None,
                      cache_dir=None):
        assert write  # one process: it writes the reports
        assert folds == splits.FoldRule.from_config(config.data)  # the run's own article folds
        assert cache_dir in (None, str(tmp_path))  # one embedding cache for the whole run
        calls.append((bundle.name, [d["name"] for d in datasets], str(workdir)))
        assert set(bundle.params) == {"encoder"}
        return {"datasets": {}, "scalars": {"toy/map@20": 0.25 * len(calls)}}

    monkeypatch.setattr(eval_run, "evaluate", fake_evaluate)
    config = _config(**{"eval.every_steps": 4, "train.checkpoint_every": 0})
    config.eval.datasets = [dict(name="toy", type="xquad-r", path="nowhere")]
    out = loop.train_and_evaluate(config, tmp_path)
    # The curve at 4 and at the end of the schedule (8), then the final evaluation.
    assert [c[0] for c in calls] == [f"{tmp_path}@4", f"{tmp_path}@8", f"{tmp_path}@8"]
    assert calls[0][2].endswith("eval_steps/step_4") and calls[1][2].endswith("eval_steps/step_8")
    assert calls[2][2] == str(tmp_path)
    assert out["eval"]["scalars"] == {"toy/map@20": 0.75}
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["eval/toy/map@20"] for r in rows if "eval/toy/map@20" in r] == [0.25, 0.5, 0.75]
    calls.clear()
    loop.train_and_evaluate(config, tmp_path, evaluate=False)  # --mode train: no evaluation
    assert calls == []


def test_cadence_evaluates_the_named_datasets(tmp_path, monkeypatch):
    """eval.every_datasets: the curve scores one benchmark, the final evaluation both."""
    from hybrid_jax.evaluation import run as eval_run
    calls = []

    def fake_evaluate(bundle, datasets, workdir, eval_config, write=True, folds=None,
                      cache_dir=None):
        calls.append(([d["name"] for d in datasets], pathlib.Path(workdir).name))
        return {"datasets": {}, "scalars": {}}

    monkeypatch.setattr(eval_run, "evaluate", fake_evaluate)
    config = _config(**{"eval.every_steps": 4, "train.checkpoint_every": 0})
    config.eval.datasets = [dict(name="a", type="xquad-r", path="nowhere"),
                            dict(name="b", type="mlqa-r", path="nowhere")]
    config.eval.every_datasets = ("a",)
    loop.train_and_evaluate(config, tmp_path)
    assert calls == [(["a"], "step_4"), (["a"], "step_8"), (["a", "b"], tmp_path.name)]
    config.eval.every_datasets = ("c",)
    with pytest.raises(InputError, match="eval.every_datasets"):
        schema.validate_config(config)


def test_final_evaluation_runs_after_the_training_state_is_released(tmp_path, monkeypatch):
    """The final evaluation holds the bundle only: the training state, frozen copies and the
    iterator are gone (their memory is free) before it encodes."""
    from hybrid_jax.evaluation import run as eval_run
    seen = {}
    release = loop._release_training

    def spy(run):
        release(run)
        seen["run"] = run

    def fake_evaluate(bundle, datasets, workdir, eval_config, write=True, folds=None,
                      cache_dir=None):
        run = seen.get("run")
        seen["at_final"] = None if run is None else (run.state, run.frozen, run.iterator)
        seen["name"] = bundle.name
        return {"datasets": {}, "scalars": {}}

    monkeypatch.setattr(loop, "_release_training", spy)
    monkeypatch.setattr(eval_run, "evaluate", fake_evaluate)
    config = _config(**{"train.checkpoint_every": 0})
    config.eval.datasets = [dict(name="toy", type="xquad-r", path="nowhere")]
    loop.train_and_evaluate(config, tmp_path)
    assert seen["at_final"] == (None, None, None)
    assert seen["name"] == f"{tmp_path}@{config.train.num_steps}"
