"""The shared command-line harness (hybrid_jax/cli.py): every config field overridable through
hybrid_jax.main's real flag parsing, one readable line for a typo, the exception -> exit status
mapping."""
import json
import os
import subprocess
import sys

import ml_collections
import pytest
from absl import flags

from conftest import REPO
from configs import default
from hybrid_jax import cli
from hybrid_jax import main as main_lib
from hybrid_jax.errors import InputError

SPEC = {"name": "xquad-r-test-en", "type": "xquad-r", "path": "../shared/data/xquad-r",
        "fold": "test", "languages": ["en"]}


def _reset():
    flags.FLAGS.unparse_flags()
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)  # override flags are defined again on every parse


@pytest.fixture
def parse(capsys, monkeypatch):
    """hybrid_jax.main's flag parsing in-process: -> the parsed config, or (status, stderr)."""
    def run(*args):
        _reset()
        capsys.readouterr()
        argv = ["hybrid_jax.main", *args]
        monkeypatch.setattr(sys, "argv", argv)  # as app.run has it
        try:
            main_lib.parse_flags(argv)
        except SystemExit as e:
            return e.code, capsys.readouterr().err
        return flags.FLAGS.config

    yield run
    _reset()


def _leaves(c, prefix=""):
    for k, v in c.items():
        if isinstance(v, ml_collections.ConfigDict):
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _other_value(key, value):
    """(command-line text, expected parsed value) for a value that differs from `value`."""
    if key == "eval.datasets":
        return json.dumps([SPEC]), (SPEC,)
    if isinstance(value, bool):
        return str(not value), not value
    if isinstance(value, int):
        return str(value + 3), value + 3
    if isinstance(value, float):
        return repr(value * 2 + 0.5), value * 2 + 0.5
    if isinstance(value, str):
        return value + "_x", value + "_x"
    if isinstance(value, (tuple, list)):   # a list field fails the parse: not overridable
        new = tuple(reversed(value))[:2] if len(value) > 1 else ("en", "de")
        if new == tuple(value):  # a pair of equal numbers, e.g. (0, 0)
            new = tuple(x + 1 for x in new)
        return ",".join(str(x) for x in new), new
    raise AssertionError(f"{key}: no override rule for a {type(value).__name__}")


def test_every_field_of_the_default_config_is_overridable(parse):
    leaves = dict(_leaves(default.get_config()))
    assert {"data.languages", "eval.datasets", "data.split_sizes", "train.num_steps"} <= set(leaves)
    overrides = {k: _other_value(k, v) for k, v in leaves.items()}
    for key, (_, expected) in overrides.items():
        assert expected != leaves[key], key
    config = parse("--config=configs/default.py",
                   *[f"--config.{k}={text}" for k, (text, _) in overrides.items()])
    assert isinstance(config, ml_collections.ConfigDict), config
    parsed = dict(_leaves(config))
    for key, (_, expected) in overrides.items():
        got = parsed[key]
        if key == "eval.datasets":
            got = tuple(d.to_dict() if hasattr(d, "to_dict") else d for d in got)
        assert got == expected, (key, got, expected)
        assert type(got) is type(expected), key


@pytest.mark.parametrize("args,expected", [
    (["--config.data.languages=en,de"], ("en", "de")),
    (["--config.data.languages=en"], ("en",)),
    (["--config.data.languages=en", "--config.data.languages=de"], ("en", "de")),
    (['--config.data.languages=["en", "de"]'], ("en", "de")),
    (["--config.data.languages=('en', 'de')"], ("en", "de")),
    (["--config.data.languages="], ()),
])
def test_tuple_field_forms(parse, args, expected):
    config = parse("--config=configs/default.py", *args)
    assert config.data.languages == expected


def test_eval_datasets_json_forms(parse):
    config = parse("--config=configs/demo_cpu.py", f"--config.eval.datasets={json.dumps(SPEC)}")
    assert [dict(d) for d in config.eval.datasets] == [SPEC]   # one object: a list of one
    config = parse("--config=configs/demo_cpu.py", "--config.eval.datasets=[]")
    assert config.eval.datasets == ()
    status, err = parse("--config=configs/demo_cpu.py", "--config.eval.datasets=xquad-r-test")
    assert status == 2
    assert err.startswith("error: config: eval.datasets: 'xquad-r-test' is not a dataset spec")
    assert "--config.eval.datasets='[{" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("arg,message", [
    ("--config.trian.num_steps=3", "config: no such key trian.num_steps (did you mean "
                                   "train.num_steps?)"),
    ("--config.train.zzzzzz=3", "config: no such key train.zzzzzz (keys of train: "),
    ("--config.seed.x=3", "config: no such key seed.x (seed is a value, not a section)"),
    ("--config.train.num_steps=abc", "flag --config.train.num_steps=abc: invalid literal"),
])
def test_bad_override_is_one_line(parse, arg, message):
    status, err = parse("--config=configs/default.py", arg)
    assert status == 2 and err.startswith(f"error: {message}"), err
    assert len(err.strip().splitlines()) == 1, err


def test_typo_prints_exactly_one_line_and_exits_2(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "hybrid_jax.main", "--config=configs/default.py",
                        f"--workdir={tmp_path / 'run'}", "--config.train.num_stpes=3"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr == ("error: config: no such key train.num_stpes "
                        "(did you mean train.num_steps?)\n")
    assert r.stdout == "" and not (tmp_path / "run").exists()


def test_exception_to_exit_status(capsys):
    from hybrid_jax.train import checkpoints, guards

    def raising(exc):
        def fn():
            raise exc
        return fn

    for exc, status, line in [
            (InputError("data.alpha: must lie in [0, 1]"), 2, "data.alpha: must lie in [0, 1]"),
            (guards.TrainingDiverged("training diverged at step 7"), 1,
             "training diverged at step 7"),
            (checkpoints.CheckpointWriteError("checkpoints/8: write failed"), 1,
             "checkpoints/8: write failed"),
            (OSError(28, "No space left on device", "/w/metrics.jsonl"), 1,
             "/w/metrics.jsonl: No space left on device")]:
        with pytest.raises(SystemExit) as e:
            cli.run_or_exit(raising(exc))
        assert e.value.code == status
        assert capsys.readouterr().err == f"error: {line}\n"
    with pytest.raises(ZeroDivisionError):   # a bug keeps its traceback
        cli.run_or_exit(raising(ZeroDivisionError("x")))
    assert cli.run_or_exit(lambda a, b=0: a + b, 1, b=2) == 3


def test_program_refuses_stray_arguments(capsys):
    calls = []
    main = cli.program(calls.append)
    with pytest.raises(SystemExit) as e:
        main(["prog", "stray"])
    assert e.value.code == 2 and calls == []
    assert capsys.readouterr().err == "error: unexpected arguments: stray\n"
    main(["prog"])
    assert calls == [["prog"]]


@pytest.fixture
def async_dispatch_restored():
    import jax

    before = jax.config.read("jax_cpu_enable_async_dispatch")
    yield
    jax.config.update("jax_cpu_enable_async_dispatch", before)


def test_program_asks_for_synchronous_dispatch(monkeypatch, async_dispatch_restored):
    import jax

    monkeypatch.delenv("HYBRID_JAX_CPU_TUNING", raising=False)
    jax.config.update("jax_cpu_enable_async_dispatch", True)
    seen = []
    cli.program(lambda argv: seen.append(jax.config.read("jax_cpu_enable_async_dispatch")))(
        ["prog"])
    assert seen == [False]


def test_experiment_driver_shares_the_harness(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-m", "hybrid_jax.study",
                        "--config=configs/tradeoff.py:tiny", f"--workdir={tmp_path / 'w'}",
                        "--config.experiment.seedz=3"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr == ("error: config: no such key experiment.seedz "
                        "(did you mean experiment.seeds?)\n")
